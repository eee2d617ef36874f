"""Proves the ONNX graphs compute what the PyTorch models compute, on real MNIST digits.

Parity is checked for every model at batch sizes 1, 7 and 256 (so dynamic batching changes
nothing), and the ensemble graph's vote is checked against training/vote.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.spec import SPEC
from training.model import LeNet5
from training.vote import vote

TOLERANCE = SPEC.parity_atol
BATCH_SIZES = (1, 7, 256)


class VerificationError(Exception):
    """The ONNX graphs do not match PyTorch. The message says by how much."""


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_batched(sess: ort.InferenceSession, x: np.ndarray, batch: int) -> list[np.ndarray]:
    """All outputs of `sess` over x in chunks of `batch`, concatenated along the batch axis."""
    parts = [sess.run(None, {SPEC.input_name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate(out) for out in zip(*parts, strict=True)]


@torch.no_grad()
def torch_probs(models: list[LeNet5], x: np.ndarray) -> np.ndarray:
    """[M, N, 10] float32 probabilities from the PyTorch models on normalised images x."""
    t = torch.from_numpy(x)
    return np.stack([torch.cat([m(c).softmax(1) for c in t.split(1000)]).numpy() for m in models])


def verify(
    models: list[LeNet5],
    model_files: list[Path],
    ensemble_file: Path,
    x: np.ndarray,
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """Compares ONNX with PyTorch on normalised images x [N, 1, 28, 28]; returns the figures.

    Raises VerificationError when a model differs by more than TOLERANCE or the ensemble graph's
    vote differs from training/vote.py applied to its own probabilities.
    """
    reference = torch_probs(models, x)
    report: dict = {"images": len(x), "tolerance": TOLERANCE, "models": {}}
    for path, ref in zip(model_files, reference, strict=True):
        sess = session(path)
        by_batch = {}
        for b in BATCH_SIZES:
            progress(f"parity {path.name} batch {b}")
            by_batch[b] = run_batched(sess, x, b)[0]
        diffs = {b: float(np.abs(p - ref).max()) for b, p in by_batch.items()}
        mismatched = sorted(
            {
                int(i)
                for p in by_batch.values()
                for i in np.flatnonzero(p.argmax(1) != ref.argmax(1))
            }
        )
        spread = max(float(np.abs(p - by_batch[1]).max()) for p in by_batch.values())
        report["models"][path.stem] = {
            "max_abs_diff": max(diffs.values()),
            "max_abs_diff_by_batch": diffs,
            "argmax_mismatches": mismatched,
            "max_diff_between_batch_sizes": spread,
        }
        worst = float(np.max(list(diffs.values())))  # NaN when the outputs are not finite
        if not np.isfinite(by_batch[1]).all() or not np.isfinite(ref).all():
            raise VerificationError(
                f"{path.name}: the model answers NaN or infinite probabilities (damaged weights?)"
            )
        if not worst <= TOLERANCE:
            raise VerificationError(
                f"{path.name}: probabilities differ from PyTorch by {worst:.2e} (> {TOLERANCE:g})"
            )

    progress(f"parity {ensemble_file.name}")
    outputs = {b: run_batched(session(ensemble_file), x, b) for b in BATCH_SIZES}
    label, votes, tie_broken, probs = outputs[256]
    own_label, own_votes, own_tie = (
        t.numpy() for t in vote(torch.from_numpy(probs).transpose(0, 1))
    )
    ref_label, _, _ = vote(torch.from_numpy(reference))
    report["ensemble"] = {
        "max_abs_diff": float(np.abs(probs.transpose(1, 0, 2) - reference).max()),
        "label_mismatches_vs_python_vote": int((label != own_label).sum()),
        "votes_mismatches": int((votes != own_votes).any(1).sum()),
        "tie_broken_mismatches": int((tie_broken != own_tie).sum()),
        "label_mismatches_vs_pytorch": int((label != ref_label.numpy()).sum()),
        "label_mismatches_between_batch_sizes": int(
            sum((outputs[b][0] != label).sum() for b in BATCH_SIZES)
        ),
        "ties_broken": int(tie_broken.sum()),
    }
    e = report["ensemble"]
    if e["label_mismatches_vs_python_vote"] or e["votes_mismatches"] or e["tie_broken_mismatches"]:
        raise VerificationError(f"{ensemble_file.name}: vote differs from training/vote.py: {e}")
    if not e["max_abs_diff"] <= TOLERANCE:  # NaN included
        raise VerificationError(
            f"{ensemble_file.name}: probabilities differ from PyTorch by {e['max_abs_diff']:.2e}"
        )
    return report
