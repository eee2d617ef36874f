"""The uncertainty rule, chosen from data: scores, thresholds and the figures behind them.

Two scores, both from the ensemble's probabilities [N, models, 10]:

  typicality  the mean over the models of each one's highest probability. Outlier exposure
              trained the models to spread their probability on non-digits, so a low value
              says "not a digit".
  confidence  the mean over the models of the probability of the voted digit (what the
              server's answer calls confidence). Low while typicality is high: the models
              see a digit but are unsure which.

Together with the models' disagreement they give the reasons an answer is flagged:
`not_a_digit` (typicality below its threshold), `models_disagree` and `low_confidence`.
The thresholds are chosen for a stated aim: at most `aim` of genuine digits flagged for any
reason, on validation digits as they are and on the same digits with the training
augmentation's distortions (so blurred, thick, low-resolution or stray-marked uploads are
counted too); among the thresholds that meet it, those that flag the most held-out generated
non-digits (fonts and Fashion-MNIST images the models were not trained on) win.
"""

from __future__ import annotations

import numpy as np

REASONS = ("not_a_digit", "models_disagree", "low_confidence")


def scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """probs [N, M, 10] -> typicality, confidence [N] and agreement [N] (models for the vote).

    The vote's label is taken as the digit with most votes, ties by summed probability, as in
    training/vote.py; only `confidence` and `agreement` depend on it."""
    m = probs.shape[1]
    labels = probs.argmax(2)  # [N, M]
    votes = (labels[:, :, None] == np.arange(probs.shape[2])).sum(1)  # [N, 10]
    label = (votes * (m + 1) + probs.sum(1)).argmax(1)
    rows = np.arange(len(probs))
    return {
        "typicality": probs.max(2).mean(1),
        "confidence": probs[rows, :, label].mean(1),
        "agreement": votes[rows, label],
        "label": label,
    }


def flags(rule: dict, probs: np.ndarray) -> dict[str, np.ndarray]:
    """Each reason's flags [N] bool under `rule` (the manifest's `uncertainty` section)."""
    s = scores(probs)
    not_a_digit = s["typicality"] < rule["not_a_digit_below"]
    return {
        "not_a_digit": not_a_digit,
        "models_disagree": s["agreement"] < probs.shape[1],
        # As the server says it: not_a_digit implies a low confidence, and is said alone.
        "low_confidence": ~not_a_digit & (s["confidence"] < rule["low_confidence_below"]),
    }


def flagged(rule: dict, probs: np.ndarray) -> np.ndarray:
    f = flags(rule, probs)
    return f["not_a_digit"] | f["models_disagree"] | f["low_confidence"]


def choose(digit_sets: dict[str, np.ndarray], outliers: np.ndarray, aim: float) -> dict:
    """Thresholds meeting `aim` on every digit set (probs [N, M, 10] each) that flag the most
    of `outliers` (probs [K, M, 10]); ties go to the higher not-a-digit threshold."""
    m = outliers.shape[1]
    d = {k: scores(p) for k, p in digit_sets.items()}
    o = scores(outliers)
    o_disagree = o["agreement"] < m
    # Candidate not-a-digit thresholds: just above each digit's typicality in the lowest
    # `aim` of every set (a higher one could only flag more digits than the aim allows).
    cands = np.unique(
        np.concatenate(
            [
                np.sort(s["typicality"])[: int(np.ceil(aim * len(s["typicality"]))) + 1]
                for s in d.values()
            ]
        )
    )
    cands = np.concatenate([[0.0], np.nextafter(cands, 1.0)])
    best = ((-1, 0.0), 0.0, 0.0)
    for t_nd in cands:
        # The highest low-confidence threshold that keeps every set within the aim.
        t_low = 1.0
        ok = True
        for s in d.values():
            disagree = s["agreement"] < m
            base = (s["typicality"] < t_nd) | disagree
            # Where disagreement alone flags more than the aim, the scores may add half the
            # aim on top of it (the aim is then missed, and export says so).
            allowed = max(aim * len(base), disagree.sum() + aim / 2 * len(base))
            budget = int(np.floor(allowed)) - int(base.sum())
            if budget < 0:
                ok = False
                break
            rest = np.sort(s["confidence"][~base])
            # Flag the `budget` lowest confidences at most: the threshold sits at the next one.
            t_low = min(t_low, float(rest[budget]) if budget < len(rest) else 1.0)
        if not ok:
            continue
        caught = (o["typicality"] < t_nd) | o_disagree | (o["confidence"] < t_low)
        key = (int(caught.sum()), float(t_nd))
        if key > best[0]:
            best = (key, float(t_nd), t_low)
    return {"not_a_digit_below": best[1], "low_confidence_below": best[2]}


def rates(rule: dict, probs: np.ndarray) -> dict:
    """Share of images flagged for any reason, and for each reason."""
    f = flags(rule, probs)
    return {
        "images": len(probs),
        "flagged": float((f["not_a_digit"] | f["models_disagree"] | f["low_confidence"]).mean())
        if len(probs)
        else 0.0,
        **{k: float(v.mean()) if len(probs) else 0.0 for k, v in f.items()},
    }


def risk_coverage(rule: dict, probs: np.ndarray, truth: np.ndarray) -> dict:
    """Accuracy of the answers not flagged against the share answered, as typicality's and
    confidence's thresholds sweep (the shipped rule's point is marked by the caller)."""
    s = scores(probs)
    right = s["label"] == truth
    m = probs.shape[1]
    # Rank by the score the rule uses last: confidence, with disagreement always flagged first.
    key = np.where(s["agreement"] < m, -1.0, np.minimum(s["confidence"], s["typicality"]))
    order = np.argsort(-key, kind="stable")
    answered = np.arange(1, len(order) + 1)
    acc = np.cumsum(right[order]) / answered
    keep = ~flagged(rule, probs)
    points = np.unique(np.r_[0 : len(order) : 10, len(order) - 1])  # every 10th, and the last
    return {
        "coverage": (answered / len(order))[points].tolist(),
        "accuracy": acc[points].tolist(),
        "rule_coverage": float(keep.mean()),
        "rule_accuracy": float(right[keep].mean()) if keep.any() else 1.0,
    }
