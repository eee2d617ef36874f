"""Test-set evaluation of each model and of their vote: metrics.json and the plots.

`python -m training.evaluate --run runs/latest` evaluates an existing run again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from training import checkpoint, plots
from training.data import NUM_CLASSES, MnistDataError, load_split, resolve_data_dir
from training.model import parameter_count, summary
from training.train import pick_device, predict_probs
from training.vote import RULE, vote


def confusion(labels: torch.Tensor, preds: torch.Tensor) -> torch.Tensor:
    """[10, 10] counts; rows are true digits, columns predictions."""
    idx = labels * NUM_CLASSES + preds
    return torch.bincount(idx, minlength=NUM_CLASSES**2).view(NUM_CLASSES, NUM_CLASSES).cpu()


def scores(labels: torch.Tensor, preds: torch.Tensor) -> dict:
    cm = confusion(labels, preds)
    per_class = (cm.diag() / cm.sum(1).clamp_min(1)).tolist()
    return {
        "test_acc": (preds == labels).float().mean().item(),
        "errors": int((preds != labels).sum()),
        "per_class_acc": [round(a, 5) for a in per_class],
        "confusion": cm.tolist(),
    }


def error_overlap(names: list[str], wrong: torch.Tensor) -> dict:
    """How often the models' mistakes coincide; `wrong` is [M, N] bool."""
    count = wrong.sum(0)
    return {
        "per_model": {n: int(w.sum()) for n, w in zip(names, wrong, strict=True)},
        "pairs": {
            f"{names[i]} & {names[j]}": int((wrong[i] & wrong[j]).sum())
            for i, j in itertools.combinations(range(len(names)), 2)
        },
        "any_wrong": int((count > 0).sum()),
        "exactly_one_wrong": int((count == 1).sum()),
        "majority_wrong": int((count * 2 > len(names)).sum()),
        "all_wrong": int((count == len(names)).sum()),
    }


def evaluate_run(
    run_dir: Path, names: list[str], test_x: torch.Tensor, labels: torch.Tensor
) -> dict:
    """Scores the best checkpoint of each model and their vote on the test set.

    test_x is uint8 [N, 1, 28, 28] on the device to evaluate on; each model is normalised with
    the constants its checkpoint recorded.
    """
    device = test_x.device
    models, ckpts = [], []
    for name in names:
        model, ckpt = checkpoint.load(run_dir / name / "best.pt", map_location=device)
        models.append(model.to(device))
        ckpts.append(ckpt)
    probs = torch.stack(
        [
            predict_probs(m, test_x, c["normalisation"]["mean"], c["normalisation"]["std"])
            for m, c in zip(models, ckpts, strict=True)
        ]
    )
    preds = probs.argmax(2)
    label, votes, tie_broken = vote(probs)

    metrics: dict = {"test_size": len(labels), "models": {}, "vote_rule": RULE}
    for name, model, ckpt, p in zip(names, models, ckpts, preds, strict=True):
        metrics["models"][name] = {
            "params": parameter_count(model),
            "architecture": summary(model.args),
            "best_epoch": ckpt["epoch"],
            "val_acc": ckpt["val_acc"],
            **scores(labels, p),
        }
    agreement = votes.max(1).values
    metrics["vote"] = {
        **scores(labels, label),
        "tie_broken": int(tie_broken.sum()),
        "unanimous": int((agreement == len(names)).sum()),
        "accuracy_when_unanimous": (label == labels)[agreement == len(names)].float().mean().item(),
    }
    metrics["error_overlap"] = error_overlap(names, preds != labels)

    plots.confusion_matrix(metrics["vote"]["confusion"], run_dir / "confusion.png", "vote")
    wrong = (label != labels).nonzero().flatten().cpu()
    plots.misclassified(
        test_x[wrong].cpu(),
        labels[wrong].cpu(),
        label[wrong].cpu(),
        preds[:, wrong].T.cpu(),
        run_dir / "errors.png",
    )
    return metrics


def print_summary(metrics: dict) -> None:
    for name, m in metrics["models"].items():
        errors = f"{m['errors']} errors, {m['params']:,} params"
        print(f"{name:<20} test {100 * m['test_acc']:.2f}%  ({errors})")
    v, o = metrics["vote"], metrics["error_overlap"]
    print(
        f"{'vote':<20} test {100 * v['test_acc']:.2f}%  ({v['errors']} errors, "
        f"{v['tie_broken']} ties broken)"
    )
    print(
        f"errors: {o['any_wrong']} images wrong for some model, {o['majority_wrong']} for a "
        f"majority, {o['all_wrong']} for all; pairs: {o['pairs']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__)
    p.add_argument("--run", required=True, type=Path, help="a training run directory")
    p.add_argument(
        "--data-dir",
        help="the four MNIST IDX files, .gz or raw (default: $MNIST_DIR, then data/mnist)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    run_file = args.run / "run.json"
    if not run_file.is_file():
        print(f"error: {run_file} not found: is {args.run} a training run?", file=sys.stderr)
        return 2
    run = json.loads(run_file.read_text())
    device = pick_device(args.device)
    try:
        test = load_split(resolve_data_dir(args.data_dir), "test")
        test_x = torch.from_numpy(test.images).unsqueeze(1).to(device)
        metrics = evaluate_run(
            args.run, run["variants"], test_x, torch.from_numpy(test.labels).to(device)
        )
    except (MnistDataError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (args.run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_summary(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
