"""The shipped bundle: manifest.json (the one source of truth the server reads), golden.npz
(raw digits with expected outputs for the server's start-up self-test) and MODEL_CARD.md."""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from export.spec import SPEC
from export.to_onnx import ENSEMBLE_OUTPUTS, INPUT, MODEL_OUTPUTS, OPSET
from training.model import LeNet5, parameter_count, summary
from training.provenance import git_commit
from training.vote import RULE

SCHEMA_VERSION = 1
CLASSES = list(SPEC.classes)

# The fitted image's shape, measured by the server's preprocessing on MNIST digits saved as
# PNGs: 0.25 % have an edge ratio (share of inked pixels on the ink's edge) below 0.33, 0.08 %
# more ink than 0.30. Lower or higher is a filled shape or a blot, not a pen's stroke.
SHAPE_LIMITS = {"min_edge_ratio": 0.33, "max_ink": 0.30}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_spec(mean: float, std: float) -> dict:
    return {
        "name": INPUT,
        "dtype": "float32",
        "layout": "NCHW",
        "shape": SPEC.input_shape,
        "height": SPEC.height,
        "width": SPEC.width,
        "normalise": "x = (pixel / 255 - mean) / std",
        "mean": mean,
        "std": std,
        "ink": "high",  # ink is 255 before normalisation: a white digit on a black background
        "background": 0,
        "digit_box": SPEC.digit_box,
        "fit": "scale so the longer side of the ink's bounding box is digit_box pixels, "
        "keeping the aspect ratio, with anti-aliasing",
        "centre_of_mass": list(SPEC.centre_of_mass),
        "centring": "translate so the intensity-weighted centre of mass of the fitted digit lands "
        "on centre_of_mass (row, column, 0-based pixel indices)",
    }


def model_entry(path: Path, model: LeNet5, ckpt: dict, scores: dict) -> dict:
    return {
        "name": path.stem,
        "file": path.name,
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
        "opset": OPSET,
        "inputs": {INPUT: SPEC.input_shape},
        "outputs": {name: [None, len(CLASSES)] for name in MODEL_OUTPUTS},
        "parameters": parameter_count(model),
        "architecture": summary(model.args),
        "recipe": ckpt["variant"]["why"],
        "seed": ckpt["variant"]["seed"],
        "best_epoch": ckpt["epoch"],
        "val_acc": scores["val_acc"],
        "test_acc": scores["test_acc"],
    }


def manifest(
    *,
    normalisation: dict,
    models: list[dict],
    ensemble_path: Path,
    vote_path: Path,
    ensemble_scores: dict,
    golden_path: Path,
    uncertainty: dict,
    whole_digit: dict | None,
    run: dict,
    export_command: str,
) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": "mnist-lenet5-ensemble",
        "input": input_spec(normalisation["mean"], normalisation["std"]),
        "classes": CLASSES,
        "models": models,
        "ensemble": {
            "file": ensemble_path.name,
            "sha256": sha256(ensemble_path),
            "bytes": ensemble_path.stat().st_size,
            "opset": OPSET,
            "members": [m["name"] for m in models],
            "inputs": {INPUT: SPEC.input_shape},
            "outputs": {
                "label": [None],
                "votes": [None, len(CLASSES)],
                "tie_broken": [None],
                "probabilities": [None, len(models), len(CLASSES)],
            },
            "output_order": list(ENSEMBLE_OUTPUTS),
            "vote_rule": RULE,
            **ensemble_scores,
        },
        "vote": {
            "file": vote_path.name,
            "sha256": sha256(vote_path),
            "bytes": vote_path.stat().st_size,
            "inputs": {f"p{i}": [None, len(CLASSES)] for i in range(len(models))},
            "outputs": {"label": [None], "votes": [None, len(CLASSES)], "tie_broken": [None]},
        },
        "golden": {
            "file": golden_path.name,
            "sha256": sha256(golden_path),
            "atol": SPEC.parity_atol,
        },
        "uncertainty": uncertainty,
        **({"whole_digit": whole_digit} if whole_digit else {}),
        "metrics": "metrics.json",
        "provenance": {
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git": git_commit(),
            "train_git": run.get("git"),
            "train_command": run.get("command"),
            "export_command": export_command,
            "seeds": {name: r["seed"] for name, r in run["recipes"].items()},
            "split": {"val_size": run["val_size"], "split_seed": run["split_seed"]},
            "data_sha256": run["data_sha256"],
            "trained_on": run.get("device"),
            "train_seconds": run.get("train_seconds"),
            "outliers": run.get("outliers", {}).get("counts", {}),
            "init": run.get("config", {}).get("init"),
            "versions": {
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "python": platform.python_version(),
            },
        },
    }


def uncertainty_spec(rule: dict, report: dict) -> dict:
    """The manifest's `uncertainty` section: what the server flags, and the thresholds."""
    digits = report["digits"]
    held = report["non_digits"]["all held out"]
    return {
        "not_a_digit_below": rule["not_a_digit_below"],
        "low_confidence_below": rule["low_confidence_below"],
        "split_vote_below": rule["split_vote_below"],
        **SHAPE_LIMITS,
        "rule": "not_a_digit when the mean over the models of each one's highest probability is "
        "below not_a_digit_below's threshold for the voted digit; models_disagree when they do "
        "not all vote for the same digit and their mean probability for the voted digit is "
        "below split_vote_below; low_confidence when it is below low_confidence_below; "
        "filled_shape when the fitted image's edge ratio is below min_edge_ratio; "
        "too_much_ink when its mean ink is above max_ink",
        "chosen_for": f"at most {report['aim']:.0%} of genuine digits flagged, as many "
        "held-out generated non-digits as possible (give or take half a point), then as many "
        "wrong answers on validation as possible",
        "aim_met": report["aim_met"],
        "measured": {
            **{f"{k} flagged": v["flagged"] for k, v in digits.items()},
            "held-out non-digits flagged": held["flagged"],
        },
    }


def risk_coverage_plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rc = report["risk_coverage"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(100 * np.array(rc["coverage"]), 100 * np.array(rc["accuracy"]), label="vote")
    ax.plot(
        [100 * rc["rule_coverage"]],
        [100 * rc["rule_accuracy"]],
        "o",
        label=f"shipped rule: {100 * rc['rule_coverage']:.1f} % answered, "
        f"{100 * rc['rule_accuracy']:.2f} % right",
    )
    ax.set(
        xlabel="answered (not flagged), % of validation digits",
        ylabel="accuracy of the answered, %",
        title="risk-coverage on validation digits",
    )
    # Nearly every answer is right: the story is in the last 20 % of the digits answered.
    ax.set_xlim(80, 100.5)
    ax.set_ylim(bottom=max(98.0, min(100 * np.array(rc["accuracy"])) - 0.1), top=100.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_golden(
    path: Path, pixels: np.ndarray, truth: np.ndarray, outputs: list[np.ndarray]
) -> None:
    """pixels uint8 [K,28,28], ink high (MNIST as stored), their true digits, and the ensemble's
    outputs on them, in ENSEMBLE_OUTPUTS order. No normalised tensors: the server normalises
    the pixels with the manifest's mean and std, so its self-test checks those too."""
    label, votes, tie_broken, probabilities = outputs
    np.savez_compressed(
        path,
        pixels=pixels,
        truth=truth,
        label=label,
        votes=votes,
        tie_broken=tie_broken,
        probabilities=probabilities,
    )


AIM_MET = "The aim was met on every digit set."
AIM_MISSED = "The aim was not met on every digit set."


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def model_card(m: dict, metrics: dict, parity: dict) -> str:
    """MODEL_CARD.md from the manifest and the metrics measured on the ONNX files."""
    names = [e["name"] for e in m["models"]]
    e, p, inp = m["ensemble"], m["provenance"], m["input"]
    rows = "\n".join(
        f"| `{x['name']}` | {x['architecture']} | {x['parameters']:,} | {x['recipe']} | "
        f"{_pct(x['val_acc'])} | **{_pct(x['test_acc'])}** |"
        for x in m["models"]
    )
    per_class = "\n".join(
        f"| {d} | "
        + " | ".join(_pct(metrics["models"][n]["per_class_acc"][d]) for n in names)
        + f" | {_pct(metrics['vote']['per_class_acc'][d])} |"
        for d in range(10)
    )
    overlap = metrics["error_overlap"]
    pairs = "; ".join(f"{k}: {v}" for k, v in overlap["pairs"].items())
    parity_rows = "\n".join(
        f"| `{n}` | {r['max_abs_diff']:.1e} | {len(r['argmax_mismatches'])} | "
        f"{r['max_diff_between_batch_sizes']:.1e} |"
        for n, r in parity["models"].items()
    )

    u, uq = m["uncertainty"], metrics["uncertainty"]
    flag_rows = "\n".join(
        f"| {k} | {r['images']:,} | {_pct(r['flagged'])} | {_pct(r['not_a_digit'])} | "
        f"{_pct(r['models_disagree'])} | {_pct(r['low_confidence'])} |"
        for k, r in {**uq["digits"], **uq["non_digits"]}.items()
    )
    missing = "".join(f"\n- Not available at export: {x}." for x in uq["non_digits_missing"])
    exposed = p.get("outliers") or {}
    if exposed:
        training = (
            "The models were trained with outlier exposure: "
            f"{sum(exposed.values()):,} generated non-digits ("
            + ", ".join(f"{k} {v:,}" for k, v in exposed.items() if v)
            + ") in every batch beside the digits, through the same augmentation, trained "
            "towards equal probability for every digit"
            + (f", fine-tuning the models of `{p['init']}`" if p.get("init") else "")
            + "."
        )
    else:
        training = (
            "These models were trained on digits only (no outlier exposure): their "
            "probabilities say little about images that are not digits."
        )

    check = m.get("whole_digit")
    if check:
        w = metrics["whole_digit"]
        right = ", ".join(f"{k} {_pct(v)}" for k, v in w["right_by_kind"].items())
        flagged = ", ".join(f"{k} {_pct(v)}" for k, v in w["flagged_by_kind"].items())
        check_text = f"""
## Reading a number: the whole-digit check
`{check["file"]}` ({check["bytes"] / 1024:.0f} KiB) scores how likely a fitted image is one
whole digit rather than two touching digits (pair), a part of one (part) or a digit with a
slice of its neighbour (sliver), examples made from training digits. On
{w["images"]:,} such examples made from validation digits, right at 0.5: {right}. The number
mode flags a digit scored under {check["below"]:.3f} (where {_pct(check["aim"])} of whole
validation digits fall) `not_one_digit`; under that threshold: {flagged}. The single-digit
answer does not use it.
"""
        check_cmd = "\n" + check["train_command"]
    else:
        check_text = check_cmd = ""

    def commit(g: dict | None) -> str:
        if not g or not g.get("commit"):
            return "not recorded"
        return g["commit"][:12] + (" + local changes" if g["dirty"] else "")

    return f"""# Model card: {m["name"]}

Three LeNet-5 convolutional networks trained on MNIST and a vote between them, shipped as ONNX
(opset {e["opset"]}). Made by `{p["export_command"]}` from a run of `{p["train_command"]}`
on {p["trained_on"]} in {p["train_seconds"]:.0f} s (code at git {commit(p.get("train_git"))});
exported {p["created"]} (git {commit(p["git"])}).

## Intended use
Recognising one handwritten digit (0-9) per image: a digit drawn on a screen, or written on
paper and photographed or scanned, after the server's preprocessing has made it look like an
MNIST digit. A teaching-size model: fast and small, not a general OCR system.

**Not for**: text with several characters, letters or other scripts, digits in other numeral
systems, decisions about people (cheques, forms, exams) without a human check.

## Data
MNIST (LeCun, Cortes, Burges): 60,000 training and 10,000 test images, 28x28 grey levels.
{p["split"]["val_size"]:,} training images (stratified, seed {p["split"]["split_seed"]}) are held
out for validation; the 10,000 test images were used for nothing but the numbers below.
Input: `{inp["normalise"]}` with mean {inp["mean"]:.4f} and std {inp["std"]:.4f} (measured on
the training part), ink high (white on black), the digit's longer side fitted to
{inp["digit_box"]} px and its centre of mass at pixel {tuple(inp["centre_of_mass"])}.

## Models
| name | architecture | parameters | what makes it differ | validation | test |
|---|---|---:|---|---:|---:|
{rows}
| **vote** | {e["vote_rule"]} | | | {_pct(e["val_acc"])} | **{_pct(e["test_acc"])}** |

All accuracies were measured with onnxruntime on the shipped ONNX files.
The tie-break (all three models disagree) decided {e["ties_broken_test"]} of the test images.

**How often the mistakes coincide** (test images wrong for): each model
{", ".join(f"{k} {v}" for k, v in overlap["per_model"].items())}; both of a pair: {pairs};
a majority (so the vote is wrong, unless a tie-break saves it): {overlap["majority_wrong"]};
all three: {overlap["all_wrong"]}; at least one: {overlap["any_wrong"]}.

### Per-class test accuracy
| digit | {" | ".join(names)} | vote |
|---|{"---:|" * (len(names) + 1)}
{per_class}

### Plots
- Learning curves: ![learning curves](curves.png)
- Confusion of the vote on the test set: ![confusion](confusion.png)
- Test digits the vote gets wrong: ![errors](errors.png)
- Training augmentation, one draw per recipe: ![augmentation](augment.png)

## Uncertainty: digits and non-digits
{training} An answer is flagged `uncertain` with reasons:
{u["rule"]}. Thresholds (in `manifest.json`, chosen by export for {u["chosen_for"]}):
not_a_digit below {" / ".join(f"{t:.3f}" for t in u["not_a_digit_below"])} (for the voted
digit, 0 to 9), low_confidence below
{u["low_confidence_below"]:.4f}, split votes below {u["split_vote_below"]:.4f}. Flag rates
(the held-out non-digits use fonts and Fashion-MNIST test images that training never saw;
"distorted" digits are validation digits with tilt, pen width, blur, low resolution and
stray strokes):

| images | count | flagged | not a digit | models disagree | low confidence |
|---|---:|---:|---:|---:|---:|
{flag_rows}

{AIM_MET if u["aim_met"] else AIM_MISSED}
{missing}
Risk-coverage on validation digits (accuracy of the answers not flagged against the share
answered, as the threshold moves): ![risk-coverage](risk_coverage.png)
{check_text}
## ONNX parity with PyTorch
On all {parity["images"]:,} test images, at batch sizes 1, 7 and 256:

| model | max abs. prob. difference | argmax differences | max diff. between batch sizes |
|---|---:|---:|---:|
{parity_rows}

The ensemble graph's labels equal the Python vote (`training/vote.py`) on all images
({parity["ensemble"]["label_mismatches_vs_python_vote"]} differences; max probability difference
to PyTorch {parity["ensemble"]["max_abs_diff"]:.1e}).

## Known limitations
- Anything that is not a single digit still gets a digit, flagged `uncertain` with the reason
  `not_a_digit` when the models spread their probability; non-digits unlike any kind above
  may still be answered as a digit.
- Other scripts and numeral systems (Arabic-Indic, Devanagari, Chinese) are out of scope.
- Very thin or very thick strokes, digits touching the image border, several digits in one
  image and heavy clutter degrade accuracy; MNIST writers were US Census employees and high
  school students, so other handwriting styles (e.g. a crossed 7, a 1 with a long flag) are
  less well covered.
- Printed (typeset) digits are not MNIST's domain; they mostly work after preprocessing but
  are not what the test figures describe.

## Reproduce
```
pip install -r requirements-train.txt
export MNIST_DIR=path/to/mnist   # the four IDX files
{p["train_command"]}{check_cmd}
{p["export_command"]}
```
Data sha256: {", ".join(f"`{k}` {v[:12]}…" for k, v in p["data_sha256"].items())}.
Versions: {", ".join(f"{k} {v}" for k, v in p["versions"].items())}.
"""


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
