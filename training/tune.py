"""python -m training.tune: a small search over learning rate, weight decay and augmentation
strength for one recipe, scored on the validation split (the test set is never looked at).

Uses Optuna's TPE sampler. Writes tune.json and tune.md (a table sorted by validation
accuracy, with the best trial as ready-to-paste --set flags) into --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import optuna

from training.config import VARIANTS, RunConfig, apply_override, resolve_variants
from training.data import MnistDataError, load_mnist, resolve_data_dir
from training.train import TrainingError, configure_torch, pick_device, train_variant

SEARCH = {
    # field: (low, high) searched on a log scale around the recipe's own value, or linearly.
    "optim.lr": ("log-around", 1 / 3, 3.0),
    "optim.weight_decay": ("log", 1e-5, 2e-3),
    "augment.strength": ("linear", 0.0, 1.6),
}


def _suggest(trial: optuna.Trial, field: str, base: float) -> float:
    kind, low, high = SEARCH[field]
    if kind == "log-around":
        return trial.suggest_float(field, base * low, base * high, log=True)
    return trial.suggest_float(field, low, high, log=kind == "log")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.tune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--variant", default=next(iter(VARIANTS)), choices=list(VARIANTS))
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial (default: %(default)s)")
    p.add_argument(
        "--subset",
        type=int,
        default=20_000,
        help="training images per trial, stratified; 0 = all (default: %(default)s)",
    )
    p.add_argument("--out", default="runs/tune")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    args = p.parse_args(argv)

    cfg = RunConfig(
        data_dir=args.data_dir,
        device=args.device,
        variants=[args.variant],
        subset=args.subset,
        epochs=args.epochs,
        out=args.out,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        device = pick_device(cfg.device)
        configure_torch(cfg, device)
        data = load_mnist(
            resolve_data_dir(cfg.data_dir), device, cfg.val_size, cfg.subset, cfg.split_seed
        )
    except (MnistDataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = resolve_variants(cfg)[0]
    rows = []

    def objective(trial: optuna.Trial) -> float:
        # Through --set's own path, so a suggested value is checked as a user's would be.
        variants = {base.name: copy.deepcopy(base)}
        params = {}
        for field in SEARCH:
            section, name = field.split(".")
            value = _suggest(trial, field, getattr(getattr(base, section), name))
            apply_override(variants, f"{base.name}.{field}={value!r}")
            params[field] = value
        v = variants[base.name]
        t0 = time.perf_counter()
        record = train_variant(v, data, cfg, device, out / f"trial-{trial.number:03d}")
        best = record["best"]
        rows.append(
            {
                "trial": trial.number,
                **params,
                "val_acc": best["val_acc"],
                "val_loss": best["val_loss"],
                "seconds": time.perf_counter() - t0,
            }
        )
        return best["val_acc"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed)
    )
    study.optimize(objective, n_trials=args.trials)

    rows.sort(key=lambda r: (-r["val_acc"], r["val_loss"]))
    best_flags = " ".join(f"--set {args.variant}.{k}={v:.4g}" for k, v in study.best_params.items())
    header = (
        f"Tuning {args.variant}: {args.trials} trials of {args.epochs} epochs on "
        f"{args.subset or 'all'} training images, scored on {cfg.val_size} validation "
        f"images.\n\nBest: `{best_flags}`\n\n"
    )
    table = [
        "| trial | lr | weight decay | aug. strength | val acc | val loss | s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table += [
        f"| {r['trial']} | {r['optim.lr']:.2e} | {r['optim.weight_decay']:.1e} | "
        f"{r['augment.strength']:.2f} | {100 * r['val_acc']:.2f}% | {r['val_loss']:.4f} | "
        f"{r['seconds']:.0f} |"
        for r in rows
    ]
    (out / "tune.md").write_text(header + "\n".join(table) + "\n")
    (out / "tune.json").write_text(
        json.dumps({"variant": args.variant, "trials": rows, "best_flags": best_flags}, indent=2)
    )
    print(header + "\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
