"""python -m bench.compare: interleaved A/B rounds of server versions (README's figures).

    python -m bench.compare [--rounds 3] [--mixed] NAME=[TREE][:FLAGS] ...

Each NAME=TREE[:FLAGS] is `python -m server` run from the source tree TREE (default: this one;
another version: `git worktree add /tmp/old <commit>`) with extra FLAGS, on the shipped
bundle. Every round starts each version afresh, warms it up for 2 s and loads it for 5 s
with `wrk`, in turn, so that the machine's drift falls on all alike:
- default: `wrk -c8` on the 28x28 PNG, each round also against the hello-world app, whose
  rate is the ceiling: req/s, CPU ms per request and the ratio to hello-world;
- --mixed: `wrk -c4` on the 28x28 PNG while one client sends 256-image batches back to back:
  the digits' req/s, p50 and p99, and how many batches were answered;
- --resources: also each version's start to /readyz, 256-image batches/s (three after one
  discarded), and at rest after both loads the PSS of its whole process tree and its process
  count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench import __main__ as bench

HELLO = ("hello", bench.ROOT, ["bench.hello_app", "--threads", "8"])


def version(spec: str) -> tuple[str, Path, list[str]]:
    name, _, rest = spec.partition("=")
    tree, _, flags = rest.partition(":")
    root = Path(tree) if tree else bench.ROOT
    return name, root, ["server", "--artifacts", str(bench.ROOT / "artifacts"), *flags.split()]


def batches_beside(server: bench.Server, body, stop: threading.Event, done: list) -> None:
    with requests.Session() as session:
        while not stop.is_set():
            r = session.post(
                server.url + "/predict",
                data=body.body,
                headers={"Content-Type": body.headers["Content-Type"]},
                timeout=60,
            )
            assert r.status_code == 200, r.text[:200]
            done.append(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("versions", nargs="+", help="NAME=[TREE][:FLAGS]")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mixed", action="store_true")
    p.add_argument("--resources", action="store_true")
    args = p.parse_args(argv)

    from training.data import load_split, resolve_data_dir

    scratch = Path(tempfile.mkdtemp(prefix="compare-"))
    digits = load_split(resolve_data_dir(None), "test").images
    path, ctype = bench.make_payloads(scratch, digits[0])["digit_28_png"]
    batch = requests.Request(
        "POST",
        "http://127.0.0.1/predict",
        files=[("image", (f"{i}.png", path.read_bytes(), "image/png")) for i in range(256)],
    ).prepare()
    versions = [version(v) for v in args.versions]
    if not args.mixed:
        versions.insert(0, HELLO)
    results: dict[str, list[dict]] = {name: [] for name, _, _ in versions}
    for r in range(args.rounds):
        for name, root, server_argv in versions:
            t0 = time.perf_counter()
            server = bench.Server(name, server_argv, cwd=root)
            start_s = time.perf_counter() - t0
            stop, done = threading.Event(), []
            try:
                bench.wrk(server, path, ctype, 8, 2, scratch)  # warm-up, discarded
                beside = None
                if args.mixed:
                    beside = threading.Thread(
                        target=batches_beside, args=(server, batch, stop, done), daemon=True
                    )
                    beside.start()
                out = bench.wrk(server, path, ctype, 4 if args.mixed else 8, 5, scratch)
                stop.set()
                if beside is not None:
                    beside.join(60)
                if args.resources and name != "hello":
                    images = bench.batch_throughput(server.url, path.read_bytes(), 3)
                    out["batch_images_per_s"] = images["images_per_s"]["median"]
                    time.sleep(bench.AT_REST)
                    out["pss_mb"], out["processes"] = bench.tree_pss_mb(server.proc.pid)
                    out["start_s"] = start_s
            finally:
                server.stop()
            out["batches"] = len(done)
            results[name].append(out)
            hello = results["hello"][-1]["rps"] if "hello" in results else None
            ratio = f"  {out['rps'] / hello:.2f}x hello-world" if hello and name != "hello" else ""
            extra = (
                f"  p50 {out['p50_ms']:.2f} p99 {out['p99_ms']:.2f} ms, {len(done)} batches"
                if args.mixed
                else f"  {out['cpu_ms_per_request']:.3f} CPU ms/req{ratio}"
            )
            if "pss_mb" in out:
                extra += (
                    f"; start {out['start_s']:.2f} s, batches {out['batch_images_per_s']:,.0f} "
                    f"img/s, PSS {out['pss_mb']:.0f} MB in {out['processes']} processes"
                )
            print(f"round {r}  {name:<12} {out['rps']:8.0f} req/s{extra}", flush=True)
    print()
    for name, runs in results.items():
        rps = [x["rps"] for x in runs]
        line = f"{name:<12} req/s median {statistics.median(rps):,.0f}"
        line += f" ({min(rps):,.0f}-{max(rps):,.0f})"
        if args.mixed:
            p99 = [x["p99_ms"] for x in runs]
            batches = [x["batches"] for x in runs]
            line += f", p99 {min(p99):.1f}-{max(p99):.1f} ms, batches {batches}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
