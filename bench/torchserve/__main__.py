"""python -m bench.torchserve: our server against TorchServe 0.12 tuned (issue #20), interleaved.

    python -m bench.torchserve [--venv DIR] [--rounds 5] [--duration 3] [--artifacts artifacts]

TorchServe runs from its own virtualenv (--venv, else $TORCHSERVE_VENV, else
~/.cache/digits-venvs/torchserve; bench/torchserve/__init__.py says how to make it) with 2
workers x 1 thread and batches of up to 8 requests waiting at most 5 ms, on the bundle's three
models and vote as TorchScript. Ours is `python -m server --artifacts artifacts` as shipped.
Both run side by side; `wrk` loads one at a time with `python -m bench`'s 28x28 PNG at c=1, 8
and 32. The machine is shared and its load drifts, so the two take turns at each concurrency
in every round, and which goes first alternates from round to round: the drift falls on both
alike. Prints and writes bench/results/torchserve.md: median req/s of each, the ratio
ours / TorchServe, and issue #20's target at c=8.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import __main__ as bench
from bench.torchserve import server as torchserve

TARGET = 1.2  # issue #20: ours >= 1.2x TorchServe at c=8 on the 28x28 PNG
PAYLOAD = "digit_28_png"


def versions(venv: Path) -> str:
    """TorchServe's and its torch's versions, as its virtualenv has them."""
    code = "import importlib.metadata as m; print(m.version('torchserve'), m.version('torch'))"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return f"TorchServe {out[0]} (torch {out[1]})"


def rounds(servers: list, payload: tuple[Path, str], args, scratch: Path) -> dict:
    """{(name, concurrency): [one wrk result per round]}, the servers taking turns."""
    runs: dict[tuple[str, int], list[dict]] = {}
    # Steady state, not start-up: a discarded run of each at each concurrency, which lets Java
    # compile its hot paths and TorchScript's executor see every batch size it will get.
    for conc in bench.CONCURRENCY:
        for s in servers:
            bench.wrk(s, *payload, conc, bench.WARM_UP_SECONDS, scratch)
    for r in range(args.rounds):
        order = servers if r % 2 == 0 else servers[::-1]
        for conc in bench.CONCURRENCY:
            for s in order:
                out = bench.wrk(s, *payload, conc, args.duration, scratch)
                runs.setdefault((s.name, conc), []).append(out)
                print(f"round {r}  {s.name:<10} c={conc:<3} {out['rps']:8.0f} req/s", flush=True)
    return runs


def report(runs: dict, args, command: str, stack: str) -> str:
    """The markdown page: the table, and issue #20's target at c=8."""
    from training.provenance import git_commit

    code = git_commit()
    commit = (code["commit"] or "unknown")[:7] + (
        " with uncommitted changes" if code["dirty"] else ""
    )
    tuning = torchserve.Tuning()
    lines = [
        "# Ours against TorchServe 0.12 tuned (issue #20)\n",
        f"`{command}` on commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs.\n",
        f"{stack}: {tuning.workers} workers x {tuning.threads_per_worker} thread, batches of up "
        f"to {tuning.batch_size} waiting at most {tuning.max_batch_delay_ms} ms, the bundle's "
        "three models and vote as one TorchScript file (bench/torchserve/). Ours: "
        f"`python -m server --artifacts {args.artifacts}` as shipped. Both side by side, `wrk` "
        f"loading one at a time with the 28x28 PNG of `python -m bench`, {args.duration:g} s a "
        f"run, {args.rounds} rounds in which they take turns at each concurrency (who goes first "
        "alternates), after a discarded warm-up run of each at each concurrency. req/s: median "
        "over the rounds, min-max in brackets; ratio: of the medians, and the range of the "
        "rounds' own ratios.\n",
        "| conc. | ours req/s | TorchServe req/s | ours / TorchServe | rounds' ratios "
        "| p99 ms ours / TS | CPU ms/req ours / TS | non-2xx ours / TS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratio_at_8 = 0.0
    for conc in bench.CONCURRENCY:
        ours, theirs = runs[("ours", conc)], runs[("torchserve", conc)]
        a, b = bench.summarise(ours), bench.summarise(theirs)
        ratio = a["rps"]["median"] / b["rps"]["median"]
        paired = [x["rps"] / y["rps"] for x, y in zip(ours, theirs, strict=True)]
        if conc == 8:
            ratio_at_8 = ratio
        lines.append(
            f"| {conc} | {a['rps']['median']:,.0f} ({a['rps']['min']:,.0f}-{a['rps']['max']:,.0f})"
            f" | {b['rps']['median']:,.0f} ({b['rps']['min']:,.0f}-{b['rps']['max']:,.0f})"
            f" | {ratio:.2f}x | {min(paired):.2f}-{max(paired):.2f}"
            f" | {a['p99_ms']['median']:.1f} / {b['p99_ms']['median']:.1f}"
            f" | {a['cpu_ms_per_request']['median']:.2f} / {b['cpu_ms_per_request']['median']:.2f}"
            f" | {a['non_2xx']} / {b['non_2xx']} |"
        )
    holds = "holds" if ratio_at_8 >= TARGET else "**does not hold**"
    lines += [
        "",
        f"28x28 PNG at c=8: ours / TorchServe 0.12 tuned = **{ratio_at_8:.2f}x**; the target "
        f">= {TARGET}x {holds}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--venv", type=Path, help=f"TorchServe's (${torchserve.VENV_VARIABLE})")
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    venv = torchserve.venv_path(args.venv)
    if not torchserve.installed(venv):
        print(f"error: no TorchServe virtualenv at {venv}; make it with:\n  {torchserve.SETUP}")
        return 2
    if not shutil.which("wrk"):
        print("error: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    # A plain `kill` ends this run through its finally blocks too, which stop both servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    from training.data import load_split, resolve_data_dir

    scratch = Path(tempfile.mkdtemp(prefix="bench-torchserve-"))
    # Every server started is stopped on the way out, whatever ends the run (an error,
    # Ctrl-C, SIGTERM), and each even if stopping another fails.
    with contextlib.ExitStack() as started:
        started.callback(shutil.rmtree, scratch, ignore_errors=True)
        digit = load_split(resolve_data_dir(None), "test").images[0]
        payload = bench.make_payloads(scratch, digit)[PAYLOAD]
        ours = bench.Server("ours", ["server", "--artifacts", str(args.artifacts)])
        started.callback(ours.stop)
        theirs = torchserve.TorchServe(args.artifacts, venv)
        started.callback(theirs.stop)
        runs = rounds([ours, theirs], payload, args, scratch)
    command = "python -m bench.torchserve " + " ".join(argv if argv is not None else sys.argv[1:])
    page = report(runs, args, command.strip(), versions(venv))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "torchserve.md").write_text(page)
    print("\n" + page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
