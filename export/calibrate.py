"""python -m export.calibrate --out artifacts: chooses the uncertainty rule of an existing
bundle again, from its ONNX ensemble, and rewrites manifest.json's `uncertainty` section,
metrics.json, risk_coverage.png and MODEL_CARD.md. The model files are not touched, so their
checksums and the golden self-test stay valid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from export import bundle
from export.__main__ import RISK_PLOT, calibrate
from export.verify import run_batched, session
from training.data import MnistDataError, load_mnist, resolve_data_dir
from training.train import normalise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.calibrate", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("artifacts"), help="bundle folder")
    p.add_argument("--data-dir", help="MNIST IDX files (default: $MNIST_DIR, then data/mnist)")
    args = p.parse_args(argv)
    try:
        manifest = json.loads((args.out / "manifest.json").read_text())
        metrics = json.loads((args.out / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        print(f"error: {args.out} holds no readable bundle ({e})", file=sys.stderr)
        return 2
    split = manifest["provenance"]["split"]
    norm = {"mean": manifest["input"]["mean"], "std": manifest["input"]["std"]}
    try:
        data = load_mnist(
            resolve_data_dir(args.data_dir),
            torch.device("cpu"),
            split["val_size"],
            0,
            split["split_seed"],
        )
    except MnistDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ens = session(args.out / manifest["ensemble"]["file"])
    val_probs = run_batched(ens, normalise(data.val_x, **norm).numpy(), 512)[3]
    val_y = data.val_y.numpy()
    rule, metrics["uncertainty"] = calibrate(ens, data.val_x.numpy(), val_y, val_probs, norm)
    manifest["uncertainty"] = bundle.uncertainty_spec(rule, metrics["uncertainty"])
    bundle.risk_coverage_plot(metrics["uncertainty"], args.out / RISK_PLOT)
    bundle.write_json(args.out / "manifest.json", manifest)
    bundle.write_json(args.out / "metrics.json", metrics)
    (args.out / "MODEL_CARD.md").write_text(bundle.model_card(manifest, metrics, metrics["parity"]))
    print(json.dumps(manifest["uncertainty"]["measured"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
