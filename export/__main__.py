"""python -m export --run runs/latest --out artifacts: the shipped bundle from a training run.

Exports each model and the ensemble (models + vote in one graph) to ONNX, proves parity with
PyTorch on the 10,000 MNIST test images, measures every accuracy again on the ensemble graph and
writes manifest.json, metrics.json, golden.npz and MODEL_CARD.md. The bundle is assembled in a
staging folder and moved into --out only when every check has passed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from export import bundle, uncertainty, whole_digit
from export.to_onnx import export_ensemble, export_model, export_vote
from export.verify import VerificationError, run_batched, session, verify
from training import checkpoint
from training.augment import AugmentConfig, augment
from training.data import MnistDataError, load_mnist, resolve_data_dir
from training.evaluate import error_overlap, scores
from training.nondigits import generate
from training.train import normalise, predict_probs
from training.vote import vote

PLOTS = ("curves.png", "confusion.png", "errors.png", "augment.png")
RISK_PLOT = "risk_coverage.png"
GOLDEN_SIZE = 16
# The uncertainty rule's aim: at most this share of genuine digits flagged, on validation
# digits as they are and as distorted below.
AIM = 0.01
HELD_NON_DIGITS = 3000
# Validation digits as uploads leave them after preprocessing: a milder draw of what training
# uses (tilt, pen width, blur, low resolution, stray strokes at the edges), fixed seed.
DISTORTED = AugmentConfig(
    rotate=8, scale=0.08, shear=5, translate=1, stroke=0.2, blur=0.3, lowres=0.1, fragments=0.1
)


class ExportError(Exception):
    """A run that cannot be exported. The message is one line for the user."""


def load_run(run_dir: Path) -> tuple[dict, list, list[dict]]:
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise ExportError(f"{run_file} not found: is {run_dir} a training run directory?")
    run = json.loads(run_file.read_text())
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise ExportError(f"{run_dir} has no metrics.json: the run did not finish")
    models, ckpts = [], []
    for name in run["variants"]:
        model, ckpt = checkpoint.load(run_dir / name / "best.pt")
        if model.args.width != 1:
            raise ExportError(
                f"{name} is a teacher (LeNet-5 x{model.args.width}), never shipped: export the "
                "run of the recipes it taught"
            )
        models.append(model)
        ckpts.append(ckpt)
    if len({json.dumps(c["normalisation"], sort_keys=True) for c in ckpts}) != 1:
        raise ExportError("the checkpoints disagree on the input normalisation")
    run["train_seconds"] = json.loads(metrics_file.read_text()).get("train_seconds")
    return run, models, ckpts


def _bundle_files(out: Path) -> set[str]:
    """The files the manifest already in `out` lists (nothing else there is ever removed)."""
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return set()
    listed = [e.get("file") for e in m.get("models", [])]
    listed += [
        m.get("ensemble", {}).get("file"),
        m.get("vote", {}).get("file"),
        m.get("golden", {}).get("file"),
        m.get("whole_digit", {}).get("file"),
        *PLOTS,
        RISK_PLOT,
        "manifest.json",
        "metrics.json",
        "MODEL_CARD.md",
    ]
    return {Path(f).name for f in listed if isinstance(f, str)}


def guard(out: Path, val_acc: float, force: bool, with_check: bool) -> None:
    """Refuses to replace the bundle in `out` with one whose validation vote is lower, or with
    one without the whole-digit check it ships (`with_check`), unless `force`: a smoke run's
    export must not silently replace the shipped models, nor a new run's drop what number mode
    relies on."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        shipped = manifest["ensemble"]["val_acc"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # nothing there, or nothing comparable: any bundle is better
    if val_acc < shipped and not force:
        raise ExportError(
            f"the bundle in {out} votes {100 * shipped:.2f} % on validation, this run "
            f"{100 * val_acc:.2f} %: not replaced (pass --force to replace it anyway, or "
            "--out another folder)"
        )
    if "whole_digit" in manifest and not with_check and not force:
        raise ExportError(
            f"the bundle in {out} ships a whole-digit check, which the number mode weighs its "
            "cuts with: not replaced by one without it (pass --whole-digit DIR, a run of "
            "python -m training.whole_digit on this run's split, or --force to drop it)"
        )


def calibrate(ens, val_u8: np.ndarray, val_y: np.ndarray, val_probs: np.ndarray, norm: dict):
    """The uncertainty rule chosen on validation digits and held-out generated non-digits,
    with the figures behind it (see export/uncertainty.py)."""
    gen = torch.Generator().manual_seed(0)
    distorted = augment(torch.from_numpy(val_u8).float() / 255.0, DISTORTED, gen)
    distorted = ((distorted - norm["mean"]) / norm["std"]).numpy()
    digits = {
        "validation digits": val_probs,
        "validation digits, distorted": run_batched(ens, distorted, 512)[3],
    }
    held = generate(HELD_NON_DIGITS, seed=1, part="held")
    held_x = normalise(torch.from_numpy(held.images).unsqueeze(1), **norm).numpy()
    held_probs = run_batched(ens, held_x, 512)[3]
    rule = uncertainty.choose(digits, held_probs, AIM, ("validation digits", val_y))
    kinds = {
        name: uncertainty.rates(rule, held_probs[held.kinds == i])
        for i, name in enumerate(held.names)
        if (held.kinds == i).any()
    }
    report = {
        "aim": AIM,
        "aim_met": all(uncertainty.rates(rule, p)["flagged"] <= AIM for p in digits.values()),
        "rule": rule,
        "digits": {k: uncertainty.rates(rule, p) for k, p in digits.items()},
        "non_digits": {"all held out": uncertainty.rates(rule, held_probs), **kinds},
        "non_digits_missing": held.missing,
        "risk_coverage": uncertainty.risk_coverage(rule, val_probs, val_y),
    }
    return rule, report


def check_vote(path: Path, ensemble_out: list[np.ndarray]) -> None:
    """vote.onnx over the ensemble's own per-model probabilities must give the ensemble's
    label, votes and tie_broken on every image: the same vote, ties included."""
    probs = ensemble_out[3]
    feeds = {f"p{i}": np.ascontiguousarray(probs[:, i]) for i in range(probs.shape[1])}
    got = session(path).run(None, feeds)
    for name, a, b in zip(("label", "votes", "tie_broken"), got, ensemble_out[:3], strict=True):
        if not np.array_equal(a, b):
            raise ExportError(f"vote.onnx's {name} differs from the ensemble graph's")


def golden_indices(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Test images for the self-test: the first of each digit, plus the disagreements."""
    first = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    preds = probs.argmax(2)  # [N, M]
    split = np.flatnonzero((preds != preds[:, :1]).any(1))
    extra = [int(i) for i in split if i not in first][: GOLDEN_SIZE - len(first)]
    taken = set(first + extra)
    rest = [i for i in range(len(labels)) if i not in taken]
    return np.array(first + extra + rest[: GOLDEN_SIZE - len(first) - len(extra)])


def build(
    run_dir: Path,
    out: Path,
    data_dir: Path,
    command: str,
    force: bool = False,
    whole_digit_dir: Path | None = None,
) -> dict:
    steps = tqdm(total=7, desc="export", unit="step", disable=None)

    def step(text: str) -> None:
        steps.set_postfix_str(text)
        steps.update(1)

    run, models, ckpts = load_run(run_dir)
    check = None
    if whole_digit_dir is not None:
        split = {k: run[k] for k in ("val_size", "split_seed")}
        check = whole_digit.load(whole_digit_dir, split)
    norm = ckpts[0]["normalisation"]
    data = load_mnist(data_dir, torch.device("cpu"), run["val_size"], 0, run["split_seed"])
    test_x, test_y = normalise(data.test_x, **norm).numpy(), data.test_y.numpy()
    val_x, val_y = normalise(data.val_x, **norm).numpy(), data.val_y.numpy()
    step("data loaded")
    # Checked on the PyTorch models first, to refuse before minutes of export; checked again
    # below on what onnxruntime measures.
    ref = torch.stack([predict_probs(m, data.val_x, **norm) for m in models])
    guard(out, float((vote(ref)[0] == data.val_y).double().mean()), force, check is not None)

    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        files = [stage / f"{name}.onnx" for name in run["variants"]]
        for model, ckpt, path in zip(models, ckpts, files, strict=True):
            export_model(model, path, ckpt["variant"]["why"])
        ensemble_path = stage / "ensemble.onnx"
        export_ensemble(models, ensemble_path, "LeNet-5 ensemble and vote")
        vote_path = stage / "vote.onnx"
        export_vote(vote_path)
        step("ONNX written")

        parity = verify(models, files, ensemble_path, test_x, progress=steps.set_postfix_str)
        step("parity proven")

        ens = session(ensemble_path)
        test_out = run_batched(ens, test_x, 512)
        val_out = run_batched(ens, val_x, 512)
        step("accuracy measured")

        check_vote(vote_path, test_out)
        t_label, t_probs = torch.from_numpy(test_out[0]), torch.from_numpy(test_out[3])
        truth = torch.from_numpy(test_y)
        metrics = {
            "measured_with": "onnxruntime on the shipped files",
            "test_size": len(test_y),
            "val_size": len(val_y),
            "models": {},
            "vote": scores(truth, t_label),
            "parity": parity,
        }
        entries = []
        for i, (model, ckpt, path) in enumerate(zip(models, ckpts, files, strict=True)):
            s = scores(truth, t_probs[:, i].argmax(1))
            s["val_acc"] = float((val_out[3][:, i].argmax(1) == val_y).mean())
            metrics["models"][path.stem] = s
            entries.append(bundle.model_entry(path, model, ckpt, s))
        metrics["vote"]["val_acc"] = float((val_out[0] == val_y).mean())
        guard(out, metrics["vote"]["val_acc"], force, check is not None)
        rule, metrics["uncertainty"] = calibrate(ens, data.val_x.numpy(), val_y, val_out[3], norm)
        bundle.risk_coverage_plot(metrics["uncertainty"], stage / RISK_PLOT)
        check_entry = None
        if check is not None:
            check_entry, metrics["whole_digit"] = whole_digit.build(
                *check, stage, norm, data.val_x[:, 0].numpy()
            )
        metrics["vote"]["ties_broken"] = int(test_out[2].sum())
        metrics["error_overlap"] = error_overlap(
            [p.stem for p in files], (truth != t_probs.argmax(2).T)
        )

        idx = golden_indices(test_y, test_out[3])
        golden_path = stage / "golden.npz"
        bundle.write_golden(
            golden_path,
            data.test_x[idx, 0].numpy(),
            test_y[idx],
            [o[idx] for o in test_out],
        )
        step("golden written")

        for name in PLOTS:
            if (run_dir / name).is_file():
                shutil.copy(run_dir / name, stage / name)
        manifest = bundle.manifest(
            normalisation=norm,
            models=entries,
            ensemble_path=ensemble_path,
            vote_path=vote_path,
            ensemble_scores={
                "val_acc": metrics["vote"]["val_acc"],
                "test_acc": metrics["vote"]["test_acc"],
                "ties_broken_test": metrics["vote"]["ties_broken"],
            },
            golden_path=golden_path,
            uncertainty=bundle.uncertainty_spec(rule, metrics["uncertainty"]),
            whole_digit=check_entry,
            run=run,
            export_command=command,
        )
        bundle.write_json(stage / "manifest.json", manifest)
        bundle.write_json(stage / "metrics.json", metrics)
        (stage / "MODEL_CARD.md").write_text(bundle.model_card(manifest, metrics, parity))
        step("manifest and model card written")

        stale = _bundle_files(out) - {f.name for f in stage.iterdir()}
        for f in stage.iterdir():
            f.replace(out / f.name)
        for name in stale:  # files of the bundle this one replaces, e.g. a renamed model
            (out / name).unlink(missing_ok=True)
        step(f"bundle in {out}/")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        steps.close()
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--run",
        type=Path,
        default=Path("runs/latest"),
        help="training run directory (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("artifacts"),
        help="bundle directory (default: %(default)s)",
    )
    p.add_argument("--data-dir", help="MNIST IDX files (default: $MNIST_DIR, then data/mnist)")
    p.add_argument(
        "--whole-digit",
        type=Path,
        metavar="DIR",
        help="a run of python -m training.whole_digit to ship beside the models: the number "
        "mode weighs cuts with it and flags the digits it scores as not one whole digit "
        "(without it, numbers are read by the models alone)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the bundle in --out even when its validation vote is higher, or when it "
        "ships a whole-digit check and --whole-digit is not given",
    )
    args = p.parse_args(argv)
    command = shlex.join(["python", "-m", "export", *(argv if argv is not None else sys.argv[1:])])
    try:
        m = build(
            args.run,
            args.out,
            resolve_data_dir(args.data_dir),
            command,
            args.force,
            args.whole_digit,
        )
    except (ExportError, checkpoint.CheckpointError, MnistDataError, VerificationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for e in m["models"]:
        print(
            f"{e['file']:<28} test {100 * e['test_acc']:.2f}%  val {100 * e['val_acc']:.2f}%  "
            f"{e['bytes'] / 1024:.0f} KiB"
        )
    ens = m["ensemble"]
    print(
        f"{ens['file']:<28} test {100 * ens['test_acc']:.2f}%  val {100 * ens['val_acc']:.2f}%  "
        f"(vote)"
    )
    if "whole_digit" in m:
        c = m["whole_digit"]
        print(f"{c['file']:<28} not one whole digit below {c['below']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
