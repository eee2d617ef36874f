"""The uncertainty rule, chosen from data: scores, thresholds and the figures behind them.

Two scores, both from the ensemble's probabilities [N, models, 10]:

  typicality  the mean over the models of each one's highest probability. Outlier exposure
              trained the models to spread their probability on non-digits, so a low value
              says "not a digit". How low depends on the digit voted: the models read a
              genuine 0 or 4 surer than a 5 or 8, and a doodle read as 0 less surely than a
              real 0. So each voted digit has its own threshold, each just above the same
              share of the validation digits voted that digit.
  confidence  the mean over the models of the probability of the voted digit (what the
              server's answer calls confidence). Low while typicality is high: the models
              see a digit but are unsure which.

Together with the models' disagreement they give the reasons an answer is flagged:
`not_a_digit` (typicality below its threshold), `models_disagree` (a split vote whose
confidence is below its own threshold) and `low_confidence`. The thresholds are chosen for a
stated aim: at most `aim` of genuine digits flagged for any reason, on validation digits as
they are and on the same digits with the training augmentation's distortions (so blurred,
thick, low-resolution or stray-marked uploads are counted too). Among the rules that meet
it, those that flag the most held-out generated non-digits (fonts and Fashion-MNIST images
the models were not trained on), within `ND_SLACK` of the most, and of those the one that
flags the most of the vote's wrong answers on validation wins: the flag should catch both.
"""

from __future__ import annotations

import numpy as np

REASONS = ("not_a_digit", "models_disagree", "low_confidence")
# Share of the held-out non-digits the rule may give up for catching more wrong answers.
ND_SLACK = 0.005
# The shares of each voted digit's validation digits below its not_a_digit threshold tried,
# from none to the whole aim, in this many steps.
SHARE_STEPS = 40


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
    not_a_digit = s["typicality"] < np.asarray(rule["not_a_digit_below"])[s["label"]]
    return {
        "not_a_digit": not_a_digit,
        "models_disagree": (s["agreement"] < probs.shape[1])
        & (s["confidence"] < rule["split_vote_below"]),
        # As the server says it: not_a_digit implies a low confidence, and is said alone.
        "low_confidence": ~not_a_digit & (s["confidence"] < rule["low_confidence_below"]),
    }


def flagged(rule: dict, probs: np.ndarray) -> np.ndarray:
    f = flags(rule, probs)
    return f["not_a_digit"] | f["models_disagree"] | f["low_confidence"]


def _per_digit(sorted_by_digit: list[list[np.ndarray]], share: float) -> np.ndarray:
    """For each digit, a threshold just above the lowest `share` of the typicalities of the
    images voted that digit (`sorted_by_digit[set][digit]`, sorted), in the set where it is
    lowest; 0 where no image is voted it."""
    t = np.zeros(len(sorted_by_digit[0]))
    for c in range(len(t)):
        lows = []
        for by_digit in sorted_by_digit:
            v = by_digit[c]
            if len(v):
                n = int(np.floor(share * len(v)))
                lows.append(np.nextafter(v[n - 1], 2.0) if n else 0.0)
        if lows:
            t[c] = min(lows)
    return t


def _just_above(values: np.ndarray, share: float) -> np.ndarray:
    """0, and a threshold just above each of the lowest `share` of `values` (a higher one
    could only flag more than that share)."""
    low = np.sort(values)[: int(np.ceil(share * len(values))) + 1]
    return np.concatenate([[0.0], np.nextafter(low, 2.0)])


def choose(
    digit_sets: dict[str, np.ndarray],
    outliers: np.ndarray,
    aim: float,
    truth: tuple[str, np.ndarray],
) -> dict:
    """The rule meeting `aim` on every digit set (probs [N, M, 10] each) that flags the most
    wrong answers on the digit set `truth` names (with its true labels) among those within
    ND_SLACK of the most of `outliers` (probs [K, M, 10]) flagged; ties go to more
    outliers, then the larger share below not_a_digit, then the higher split threshold. All
    thresholds at 0 flag nothing, so a rule always exists. `not_a_digit_below` is a list,
    one threshold per voted digit."""
    m = outliers.shape[1]
    d = {k: scores(p) for k, p in digit_sets.items()}
    o = scores(outliers)
    named, labels = truth
    wrong = d[named]["label"] != labels
    split = {k: s["agreement"] < m for k, s in d.items()}
    sorted_by_digit = [
        [np.sort(s["typicality"][s["label"] == c]) for c in range(outliers.shape[2])]
        for s in d.values()
    ]
    shares = np.linspace(0.0, aim, SHARE_STEPS + 1)
    t_split_cands = np.unique(
        np.concatenate(
            [
                _just_above(s["confidence"][split[k]], aim * len(s["confidence"]) / split[k].sum())
                if split[k].any()
                else [0.0]
                for k, s in d.items()
            ]
        )
    )
    found = []
    for share in shares:
        t_nd = _per_digit(sorted_by_digit, share)
        for t_split in t_split_cands:
            # The highest low-confidence threshold that keeps every set within the aim.
            t_low = 1.0
            for k, s in d.items():
                base = (s["typicality"] < t_nd[s["label"]]) | (
                    split[k] & (s["confidence"] < t_split)
                )
                budget = int(np.floor(aim * len(base))) - int(base.sum())
                if budget < 0:
                    break
                rest = np.sort(s["confidence"][~base])
                # Flag the `budget` lowest confidences at most: the threshold sits at the next.
                t_low = min(t_low, float(rest[budget]) if budget < len(rest) else 1.0)
            else:
                caught = _flagged(o, m, t_nd, t_split, t_low).mean()
                v = _flagged(d[named], m, t_nd, t_split, t_low)
                errors = v[wrong].mean() if wrong.any() else 0.0
                found.append((float(caught), float(errors), share, t_split, t_nd, t_low))
    most = max(f[0] for f in found)
    _, _, _, t_split, t_nd, t_low = max(
        (f for f in found if f[0] >= most - ND_SLACK), key=lambda f: (f[1], f[0], f[2], f[3])
    )
    return {
        "not_a_digit_below": t_nd.tolist(),
        "low_confidence_below": float(t_low),
        "split_vote_below": float(min(t_split, 1.0)),
    }


def _flagged(s: dict, m: int, t_nd: np.ndarray, t_split: float, t_low: float) -> np.ndarray:
    return (
        (s["typicality"] < t_nd[s["label"]])
        | ((s["agreement"] < m) & (s["confidence"] < t_split))
        | (s["confidence"] < t_low)
    )


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
