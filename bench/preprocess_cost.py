"""CPU per preprocess() call, this tree's against another commit's, in one process.

    python -m bench.preprocess_cost [--base main] [--digits 20] [--rounds 15] [--out bench/results]

The other commit's server/preprocess.py is loaded from git beside this tree's (both use this
tree's components, errors and manifest modules, which it must be compatible with). Payloads:
what bench/__main__.py sends, made from several test digits: a 28x28 PNG, a 280x280 canvas PNG
and a 1000x1000 photo JPEG. Rounds alternate between the two versions; each round times every
payload once per version (process CPU time, not wall time), and the figure per payload is the
median over rounds. Writes preprocess_cost.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import synth
from server import preprocess as ours
from server.manifest import InputSpec
from training.data import load_split, resolve_data_dir

ROOT = Path(__file__).resolve().parent.parent
SPEC = InputSpec("image", 28, 28, 0.1307, 0.3081, True, 20, (14.0, 14.0))
CAP = 40_000_000


def load_base(ref: str):
    """server/preprocess.py as it is at `ref`, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{ref}:server/preprocess.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    folder = Path(tempfile.mkdtemp())
    path = folder / "preprocess_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("preprocess_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["preprocess_base"] = module
    spec.loader.exec_module(module)
    return module


def payloads(digits: np.ndarray) -> dict[str, list[bytes]]:
    """bench/__main__.py's three payloads, for each digit."""
    made = [synth.bench_payloads(digit, np.random.default_rng(0)) for digit in digits]
    return {name: [m[name] for m in made] for name in made[0]}


def cpu_ms(module, images: list[bytes]) -> float:
    """Process CPU time per image, in milliseconds."""
    t0 = time.process_time()
    for data in images:
        module.preprocess(data, SPEC, CAP)
    return 1000 * (time.process_time() - t0) / len(images)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base", default="main", help="the commit to compare against")
    p.add_argument("--data-dir", help="MNIST (default: $MNIST_DIR)")
    p.add_argument("--digits", type=int, default=20, help="test digits per payload kind")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)

    base = load_base(args.base)
    test = load_split(resolve_data_dir(args.data_dir), "test")
    kinds = payloads(test.images[: args.digits])
    versions = {"base": base, "ours": ours}
    for module in versions.values():  # warm up: imports, caches, first-call costs
        for images in kinds.values():
            cpu_ms(module, images)
    times: dict[str, dict[str, list[float]]] = {k: {v: [] for v in versions} for k in kinds}
    for r in range(args.rounds):
        order = list(versions) if r % 2 == 0 else list(reversed(versions))
        for kind, images in kinds.items():
            for name in order:
                times[kind][name].append(cpu_ms(versions[name], images))
    rows = {
        kind: {
            "base_ms": statistics.median(t["base"]),
            "ours_ms": statistics.median(t["ours"]),
            "ratio": statistics.median(t["ours"]) / statistics.median(t["base"]),
            "base_range_ms": [min(t["base"]), max(t["base"])],
            "ours_range_ms": [min(t["ours"]), max(t["ours"])],
        }
        for kind, t in times.items()
    }
    command = "python -m bench.preprocess_cost " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"base": args.base, "rows": rows, "command": command, "cpu_count": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "preprocess_cost.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"CPU per preprocess() call, median of {args.rounds} alternating rounds over "
        f"{args.digits} digits per payload; base: {args.base}. Command: `{command.strip()}`",
        "",
        "| payload | base (ms) | this tree (ms) | ratio | base min-max | this tree min-max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k} | {r['base_ms']:.3f} | {r['ours_ms']:.3f} | {r['ratio']:.3f} | "
        f"{r['base_range_ms'][0]:.3f}-{r['base_range_ms'][1]:.3f} | "
        f"{r['ours_range_ms'][0]:.3f}-{r['ours_range_ms'][1]:.3f} |"
        for k, r in rows.items()
    ]
    (args.out / "preprocess_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
