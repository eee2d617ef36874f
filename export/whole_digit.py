"""The whole-digit check (training/whole_digit.py) into the bundle: its ONNX graph, proven
against PyTorch, and the threshold under which the number mode calls a digit "not one whole
digit", chosen on validation digits as the models' uncertainty rule is (export/uncertainty.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.bundle import sha256
from export.spec import SPEC
from export.to_onnx import OPSET, WHOLE_OUTPUT, export_whole_digit
from export.verify import VerificationError, run_batched, session
from training import whole_digit as wd
from training.checkpoint import CheckpointError

FILE = "whole-digit.onnx"
# At most this share of whole validation digits scored under the threshold.
AIM = 0.01
# Examples of each kind made from the validation digits (a fixed seed, so export is repeatable).
EXAMPLES = 5_000
SEED = 1
RULE = (
    "a digit of a number that the check scores under below is flagged not_one_digit (two "
    "touching digits read as one, a part of one, or a digit with a slice of its neighbour); "
    "`below` is the score under which `aim` of whole validation digits fall"
)


def load(run_dir: Path, split: dict) -> tuple[wd.WholeDigitNet, dict]:
    """The check trained in `run_dir`, refused unless trained on the models' split (their
    run's val_size and split_seed): its scores on validation digits would include digits it
    was trained on."""
    try:
        net, ckpt = wd.load(run_dir / wd.CHECKPOINT)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"whole-digit check: {e}") from None
    theirs = {k: ckpt["config"][k] for k in ("val_size", "split_seed")}
    if theirs != split:
        raise CheckpointError(
            f"whole-digit check: trained on the split {theirs}, the models on {split}: "
            "train it again with the models' --val-size and --split-seed"
        )
    return net, ckpt


def build(
    net: wd.WholeDigitNet, ckpt: dict, stage: Path, normalisation: dict, val_digits: np.ndarray
) -> tuple[dict, dict]:
    """Exports the check into `stage`; returns its manifest entry and metrics. val_digits:
    the models' validation digits, uint8 [N, 28, 28]."""
    trained = ckpt["normalisation"]
    out = stage / FILE
    doc = "whole-digit check: probability of one whole digit"
    export_whole_digit(net, trained, normalisation, out, doc)
    images, kinds = wd.examples(val_digits, EXAMPLES, SEED)
    x = wd.to_tensor(images, normalisation["mean"], normalisation["std"])
    got = run_batched(session(out), x.numpy(), 512)[0]
    want = wd.scores(net, wd.to_tensor(images, trained["mean"], trained["std"]))
    diff = float(np.abs(got - want).max())
    if diff > SPEC.parity_atol:
        raise VerificationError(f"whole-digit check: ONNX differs from PyTorch by {diff:.2e}")
    below = float(np.quantile(got[kinds == wd.WHOLE], AIM))
    report = wd.report(got, kinds)
    report["flagged_by_kind"] = {
        k: float((got[kinds == i] < below).mean()) for i, k in enumerate(wd.KINDS)
    }
    report["parity_max_abs_diff"] = diff
    entry = {
        "file": FILE,
        "sha256": sha256(out),
        "bytes": out.stat().st_size,
        "opset": OPSET,
        "inputs": {SPEC.input_name: SPEC.input_shape},
        "outputs": {WHOLE_OUTPUT: [None]},
        "below": below,
        "aim": AIM,
        "rule": RULE,
        "train_command": ckpt["command"],
    }
    return entry, report
