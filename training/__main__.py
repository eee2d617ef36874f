"""python -m training: train the three LeNet-5 recipes, evaluate each and their vote.

Writes into --out: <recipe>/best.pt and last.pt, run.json, metrics.json, augment.png,
curves.png, confusion.png and errors.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from training import plots
from training.augment import augment
from training.checkpoint import CheckpointError
from training.config import PROFILES, TEACHERS, VARIANTS, RunConfig, resolve_variants
from training.data import MnistDataError, download, load_mnist, resolve_data_dir
from training.evaluate import evaluate_run, print_summary
from training.provenance import git_commit
from training.train import (
    TrainingError,
    configure_torch,
    jobs_for,
    outliers_for,
    pick_device,
    printed_for,
    threads_per_job,
    train_recipes,
    with_printed,
)
from training.warmstart import WarmStartError


def parse_args(argv: list[str] | None) -> RunConfig:
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=d.out, help="run directory (default: %(default)s)")
    p.add_argument(
        "--data-dir",
        help="folder with the four MNIST IDX files, .gz or raw "
        "(default: $MNIST_DIR, then data/mnist)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch MNIST with torchvision when the files are absent (needs internet)",
    )
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="CPU threads of each training process (default: the cores this process may use, "
        "shared among the recipes trained at once)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=d.jobs,
        help="recipes trained at once, each in its own process (default: all of them)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=d.variants,
        choices=[*VARIANTS, *TEACHERS],
        metavar="NAME",
        help=f"recipes to train (default: all of {list(VARIANTS)}; a teacher for --teacher: "
        f"{', '.join(TEACHERS)})",
    )
    p.add_argument(
        "--val-size",
        type=int,
        default=d.val_size,
        help="training images held out for validation, stratified (default: %(default)s)",
    )
    p.add_argument(
        "--subset",
        type=int,
        default=d.subset,
        help="train on a stratified subset of N images (default: all)",
    )
    p.add_argument("--balanced", action="store_true", help="draw every class equally often")
    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=d.profile,
        help="default: each recipe's own epochs (about 12 minutes on a 2-core CPU); ship: "
        f"{PROFILES['ship']} epochs each, the schedule of the shipped bundle (about 30 minutes)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="override every recipe's epochs")
    p.add_argument("--split-seed", type=int, default=d.split_seed)
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels (slower on CUDA); seeds are always fixed",
    )
    p.add_argument("--resume", action="store_true", help="continue from each recipe's last.pt")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="one short epoch on 1,000 images: the whole pipeline in seconds",
    )
    p.add_argument(
        "--init",
        metavar="DIR",
        help="start each recipe from the ONNX model of the same name in this bundle folder "
        "(e.g. artifacts) and fine-tune it, instead of from random weights",
    )
    p.add_argument(
        "--teacher",
        metavar="CHECKPOINT",
        help="distil from this teacher (e.g. runs/teacher/teacher-wide/best.pt, trained with "
        "--variants teacher-wide on the same split): each recipe also learns the teacher's "
        "softened probabilities on its augmented digits",
    )
    p.add_argument(
        "--outliers",
        type=int,
        default=d.outliers,
        help="non-digits generated for outlier exposure, from installed fonts, drawn shapes "
        "and Fashion-MNIST where installed; 0 = train on digits only (default: %(default)s)",
    )
    p.add_argument(
        "--printed",
        type=int,
        default=d.printed,
        help="digits typeset in the installed fonts (a training part of them), added to the "
        "training digits with their labels; 0 = MNIST only (default: %(default)s)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME.SECTION.FIELD=VALUE",
        help="change one field of a recipe, e.g. lenet5-bn-gelu.optim.lr=0.002",
    )
    args = p.parse_args(argv)
    try:
        cfg = RunConfig(**vars(args))
        resolve_variants(cfg)  # reject a bad --set before any data is read
    except ValueError as e:
        p.error(str(e))
    return cfg


def run(cfg: RunConfig, command: str = "") -> dict:
    device = pick_device(cfg.device)
    configure_torch(cfg, device)
    variants = resolve_variants(cfg)
    data_dir = resolve_data_dir(cfg.data_dir)
    if cfg.download:
        download(data_dir)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = load_mnist(data_dir, device, cfg.val_size, cfg.subset, cfg.split_seed)
    typeset = printed_for(cfg)
    if cfg.printed and not len(typeset[1]):
        print("warning: no fonts found: no typeset digits", file=sys.stderr)
    data = with_printed(data, typeset)
    outliers, made = outliers_for(cfg, device)
    for line in made.missing:
        print(f"warning: {line}", file=sys.stderr)
    print(
        f"non-digits for outlier exposure: {len(made.images):,} "
        + (
            f"({', '.join(f'{k} {n:,}' for k, n in made.counts().items() if n)})"
            if len(made.images)
            else "(off)"
        )
    )
    jobs = jobs_for(cfg, device, len(variants))
    print(
        f"device {device} ({jobs} recipe(s) at a time, "
        f"{threads_per_job(cfg, device, jobs)} CPU thread(s) each), "
        f"train {len(data.train_y):,} ({len(typeset[1]):,} of them typeset), "
        f"val {len(data.val_y):,}, test {len(data.test_y):,}, mean {data.mean:.4f}, "
        f"std {data.std:.4f}"
    )
    run_info = {
        "command": command,
        "config": dataclasses.asdict(cfg),
        "variants": [v.name for v in variants],
        "recipes": {v.name: dataclasses.asdict(v) for v in variants},
        "val_size": cfg.val_size,
        "split_seed": cfg.split_seed,
        "normalisation": {"mean": data.mean, "std": data.std},
        "data_sha256": data.checksums,
        "outliers": {
            "counts": made.counts() if outliers is not None else {},
            "missing": made.missing,
        },
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "git": git_commit(),
        "device": str(device),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    (out / "run.json").write_text(json.dumps(run_info, indent=2))

    sample = data.train_x[:12]
    if outliers is not None:  # the same augmentation draws on non-digits too
        sample = torch.cat([sample[:8], outliers[:: max(1, len(outliers) // 4)][:4]])
    sample = sample.to(torch.float32) / 255.0
    gen = torch.Generator(device=device).manual_seed(0)
    plots.augmentation_grid(
        {v.name: augment(sample, v.augment, gen) for v in variants}, sample, out / "augment.png"
    )

    histories = train_recipes(variants, data, cfg, device, out, data_dir, typeset, outliers)
    plots.learning_curves(histories, out / "curves.png")

    metrics = evaluate_run(out, [v.name for v in variants], data.test_x, data.test_y)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_summary(metrics)
    print(f"done in {metrics['train_seconds']:.0f}s; results in {out}/")
    return metrics


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    command = shlex.join(["python", "-m", "training", *(sys.argv[1:] if argv is None else argv)])
    try:
        run(cfg, command)
    except (MnistDataError, CheckpointError, TrainingError, WarmStartError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
