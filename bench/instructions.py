"""Instructions per preprocess() call, this tree's against another commit's, counted by callgrind.

    python -m bench.instructions [--base REF] [--digits 20] [--out bench/results]

REF is checked out in a temporary git worktree. The payloads are made once, by this tree's
bench/synth.py as bench/__main__.py makes them (a 280x280 canvas PNG and a 1000x1000 photo JPEG,
from --digits test digits each), and each tree's own server/preprocess.py and bundle read them
under `valgrind --tool=callgrind`, twice: after one warm-up pass, and after the warm-up and two
more passes; the difference, over the calls it holds, is the figure. Instruction counts repeat
on a busy machine, where CPU time does not (two runs of the same code differ by 20 % here).
Needs valgrind; takes a few minutes. Writes instructions.md and instructions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import synth
from training.data import load_split, resolve_data_dir

ROOT = Path(__file__).resolve().parent.parent
PASSES = 2

# Run in each tree (its own modules first on sys.path): preprocess every payload of one kind,
# a warm-up pass and then `passes` more.
CHILD = """
import pickle, sys
from pathlib import Path
from server import preprocess
from server.manifest import load
spec = load(Path("artifacts")).input
items = pickle.load(open(sys.argv[1], "rb"))[sys.argv[2]]
for _ in range(1 + int(sys.argv[3])):
    for data in items:
        preprocess.preprocess(data, spec, 40_000_000)
"""


def payloads(digits: int) -> dict[str, list[bytes]]:
    test = load_split(resolve_data_dir(os.environ.get("MNIST_DIR")), "test")
    made = [synth.bench_payloads(test.images[i], np.random.default_rng(i)) for i in range(digits)]
    return {name: [m[name] for m in made] for name in ("canvas_280_png", "photo_1000_jpeg")}


def instructions(tree: Path, data: Path, payload: str, passes: int) -> int:
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            str(data),
            payload,
            str(passes),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(re.search(r"Collected : (\d+)", run.stderr).group(1))


def per_call(tree: Path, data: Path, payload: str, calls: int) -> float:
    base = instructions(tree, data, payload, 0)
    return (instructions(tree, data, payload, PASSES) - base) / (PASSES * calls)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("--base", default="main", help="the commit to compare with")
    p.add_argument("--digits", type=int, default=20, help="payloads of each kind")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    made = payloads(args.digits)
    base_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    this_rev = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "payloads.pkl"
        data.write_bytes(pickle.dumps(made))
        base_tree = Path(scratch) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base_tree), args.base],
            cwd=ROOT,
            check=True,
        )
        try:
            for payload, items in made.items():
                base = per_call(base_tree, data, payload, len(items))
                ours = per_call(ROOT, data, payload, len(items))
                rows[payload] = {"base": base, "this_tree": ours, "ratio": ours / base}
                print(f"{payload:<16} {base / 1e6:7.2f} M  {ours / 1e6:7.2f} M  {ours / base:.3f}")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False
            )
    command = f"python -m bench.instructions --base {args.base} --digits {args.digits}"
    report = {"command": command, "base": base_rev, "this_tree": this_rev, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "instructions.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Instructions per preprocess() call",
        "",
        f"`{command}`: this tree ({this_rev}) against {base_rev}, counted by callgrind over "
        f"{PASSES} passes of {args.digits} payloads after a warm-up pass.",
        "",
        f"| payload | {base_rev} (M instructions) | this tree | ratio |",
        "|---|---:|---:|---:|",
    ]
    for payload, r in rows.items():
        lines.append(
            f"| {payload} | {r['base'] / 1e6:.2f} | {r['this_tree'] / 1e6:.2f} | {r['ratio']:.3f} |"
        )
    (args.out / "instructions.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
