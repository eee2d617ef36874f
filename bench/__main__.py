"""python -m bench: speed and memory of the server, against baselines started in the same run.

    python -m bench [--run runs/latest] [--duration 5] [--repeats 3] [--quick]

Servers loaded by `wrk` (a separate process) on 127.0.0.1:
  (a) hello   - a hello-world Flask app under waitress (8 threads): the framework's ceiling here
  (b) seed    - Flask under waitress (8 threads) + the same three models in PyTorch eager,
                resize-and-normalise preprocessing
  (c) ours    - python -m server on the shipped bundle, as shipped (granian's master and its
                default workers)
  (d) torchserve - TorchServe 0.12 tuned on the same models, 28x28 PNG at c=8 only, where its
                virtualenv is set up (bench/torchserve/; `python -m bench.torchserve` for more)
Payloads: a 28x28 PNG digit, a 280x280 RGBA canvas PNG, a 1000x1000 JPEG photo; concurrency
1, 8 and 32. Every figure is the median of --repeats runs, with min-max, after one discarded
warm-up run per server. Also: a batch of 256 images (and the same batch in process on one core,
beside how much two busy processes get done at once on this machine just then), RSS idle and
after load, the PSS of the whole process tree and its process count at rest after load
(AT_REST), the size of a serve virtualenv made for the current requirements-serve.txt,
start-to-ready time (from compiled bytecode, as the container starts),
onnxruntime vs torch inference, training images/s.
Writes bench/results/bench.json and bench/results/bench.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from bench import procs, synth

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ("digit_28_png", "canvas_280_png", "photo_1000_jpeg")
CONCURRENCY = (1, 8, 32)
WARM_UP_SECONDS = 2
AT_REST = 1.0  # seconds after the last request: the process tree's memory is measured then


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of a server process and every process below it."""
    return sum(procs.cpu_seconds(p) for p in procs.tree(pid))


def tree_pss_mb(pid: int) -> tuple[float, int]:
    """PSS of every process of a server together, and how many processes it has."""
    tree = procs.tree(pid)
    return sum(procs.pss_mb(p) for p in tree), len(tree)


def rss_mb(pid: int, total: bool = False) -> float:
    """Resident memory of the largest process of a server (a worker, when there are some), or
    of all its processes together."""
    sizes = [procs.rss_mb(p) for p in procs.tree(pid)]
    return sum(sizes) if total else max(sizes)


class Server:
    """`python -m <argv>` started from `cwd` (another checkout, to compare versions)."""

    def __init__(self, name: str, argv: list[str], cwd: Path = ROOT):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.predict_url = self.url + "/predict"  # wrk's target; TorchServe's is elsewhere
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *argv, "--port", str(self.port)],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_ready(self.url, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - t0
        except requests.ConnectionError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{url}: not ready after {timeout} s")


def make_payloads(folder: Path, digit: np.ndarray) -> dict[str, tuple[Path, str]]:
    for name, data in synth.bench_payloads(digit, np.random.default_rng(0)).items():
        (folder / name).write_bytes(data)
    types = {
        "digit_28_png": "image/png",
        "canvas_280_png": "image/png",
        "photo_1000_jpeg": "image/jpeg",
    }
    return {name: (folder / name, types[name]) for name in PAYLOADS}


def wrk(
    server: Server, payload: Path, ctype: str, connections: int, seconds: float, script_dir: Path
) -> dict:
    script = script_dir / f"{payload.name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{ctype}"\n'
        f'local f = io.open("{payload}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    cpu0 = proc_cpu_seconds(server.proc.pid)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{round(seconds)}s",  # wrk takes whole seconds
            "--latency",
            "-s",
            str(script),
            server.predict_url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    cpu = proc_cpu_seconds(server.proc.pid) - cpu0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def latency_ms(pct: str) -> float:
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "cpu_ms_per_request": 1000 * cpu / max(total, 1),
        "requests": total,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request"):
        values = [r[key] for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["socket_errors"] = [r["socket_errors"] for r in runs if r["socket_errors"]]
    return out


def batch_throughput(url: str, digit_png: bytes, repeats: int, size: int = 256) -> dict:
    files = [("image", (f"{i}.png", digit_png, "image/png")) for i in range(size)]
    body = requests.Request("POST", url + "/predict", files=files).prepare()
    session = requests.Session()
    # The first batch starts the worker's batch helpers in the background (server/
    # batch_pool.py) and is preprocessed without them; the figure is the steady state after.
    session.send(body, timeout=60)
    time.sleep(1)
    rates = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        r = session.send(body, timeout=60)
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200 and len(r.json()["results"]) == size
        rates.append(size / elapsed)
    rates = rates[1:]  # the first warms up
    return {
        "images_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
        "batch": size,
    }


def batch_in_process(artifacts: Path, digit_png: bytes, repeats: int, size: int = 256) -> dict:
    """The same batch through the request path (preprocessing, the models, the answers, JSON)
    in this process, on one core, without HTTP or batch helpers, in images per CPU second:
    what one core does alone. The server's batch figure over it is what HTTP, the second core
    and the helpers make of it."""
    from server.answers import to_json
    from server.config import ServerConfig
    from server.ensemble import Ensemble
    from server.manifest import load
    from server.predict import answer
    from server.predictor import Predictor

    manifest = load(artifacts)
    predictor = Predictor(manifest, Ensemble(manifest, device="cpu"), ServerConfig.max_pixels)
    images = [digit_png] * size
    to_json(answer(predictor, images))
    rates = []
    for _ in range(repeats):
        t0 = time.process_time()
        to_json(answer(predictor, images))
        rates.append(size / (time.process_time() - t0))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def parallel_capacity(rounds: int = 5, loops: int = 5_000_000) -> dict:
    """Work two processes get done at once, in units of one process alone, on a fixed
    CPU-bound loop (median of `rounds`, with min-max: on a shared machine one round says
    little): 2 on two free cores, less where they are busy or are two threads of one physical
    core: how far a worker with its batch helper can go beyond one core at that time."""
    code = (
        "import time\nt = time.perf_counter()\nx = 0\n"
        f"for i in range({loops}):\n    x += i\nprint(time.perf_counter() - t)"
    )

    def loop_seconds(n: int) -> float:
        running = [
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        return max(float(p.communicate()[0]) for p in running)

    values = [2 * loop_seconds(1) / loop_seconds(2) for _ in range(rounds)]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def serve_venv_size(cache: Path) -> dict:
    # One venv per version of the requirements: an edit to them is measured, not a stale venv.
    requirements = ROOT / "requirements-serve.txt"
    venv = cache / f"serve-venv-{hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]}"
    if not (venv / "bin/python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin/pip"),
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
                str(requirements),
            ],
            check=True,
        )
    torch_dir = Path(__import__("torch").__file__).parent
    return {"serve_venv_mb": _du_mb(venv), "torch_package_alone_mb": _du_mb(torch_dir)}


def _du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1e6


def start_to_ready(argv: list[str], repeats: int) -> dict:
    """Seconds from the command to /readyz's 200, and the CPU seconds its processes had used
    by then: on a busy machine the wall time mostly measures the others, the CPU time what the
    start itself costs. Started from compiled bytecode, as the container image is (its
    Dockerfile runs compileall): compiling the server's sources took 0.1-0.2 s of each start."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            *(str(ROOT / d) for d in ("server", "bench", "training")),
        ],
        check=True,
    )
    times, cpu = [], []
    for _ in range(repeats):
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", *argv, "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            times.append(time.perf_counter() - t0)
            cpu.append(proc_cpu_seconds(proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "cpu_s_median": statistics.median(cpu),
    }


def inference(run: Path, artifacts: Path, repeats: int) -> dict:
    """onnxruntime (the ensemble graph) vs torch eager (three models + vote), in-process."""
    import onnxruntime as ort
    import torch

    from training import checkpoint
    from training.vote import vote

    names = json.loads((run / "run.json").read_text())["variants"]
    models = [checkpoint.load(run / n / "best.pt")[0] for n in names]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        str(artifacts / "ensemble.onnx"), options, providers=["CPUExecutionProvider"]
    )
    out = {}
    for batch in (1, 64, 1024):
        x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
        t = torch.from_numpy(x)

        def run_torch(t=t):
            with torch.no_grad():
                vote(torch.stack([m(t).softmax(1) for m in models]))

        def run_ort(x=x):
            sess.run(None, {"image": x})

        row = {}
        for label, fn in (("torch_eager", run_torch), ("onnxruntime", run_ort)):
            fn()
            n = max(3, int(200 / batch))
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times.append((time.perf_counter() - t0) / n)
            row[label] = {
                "ms_per_batch": 1000 * statistics.median(times),
                "images_per_s": batch / statistics.median(times),
            }
        row["speedup"] = row["torch_eager"]["ms_per_batch"] / row["onnxruntime"]["ms_per_batch"]
        out[str(batch)] = row
    return out


def training_speed(seconds: float = 8.0) -> dict:
    """Training images/s per recipe (augmentation, optimiser and weight average included), on
    CPU and on CUDA if present."""
    import torch
    import torch.nn.functional as F

    from training.augment import augment
    from training.config import VARIANTS
    from training.ema import EMA
    from training.model import build
    from training.train import build_optimizer

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = {}
    for device in devices:
        for name, v in VARIANTS.items():
            model = build(v.model).to(device)
            opt = build_optimizer(model, v, torch.device(device))
            ema = EMA(model, v.optim.ema)
            gen = torch.Generator(device=device).manual_seed(0)
            x8 = torch.randint(
                0, 256, (v.optim.batch_size, 1, 28, 28), dtype=torch.uint8, device=device
            )
            y = torch.randint(0, 10, (v.optim.batch_size,), device=device)
            seen, t0 = 0, None
            while t0 is None or time.perf_counter() - t0 < seconds:
                x = augment(x8.float() / 255.0, v.augment, gen)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                    loss = F.cross_entropy(model(x).float(), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                ema.update(model)
                if t0 is None:  # the first step warms up
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    continue
                seen += len(y)
            if device == "cuda":
                torch.cuda.synchronize()
            out[f"{device}/{name}"] = seen / (time.perf_counter() - t0)
    return out


def ensure_run(run: Path | None, scratch: Path) -> Path:
    if run and (run / "run.json").is_file():
        return run
    # The seed baseline only needs the architectures; smoke-trained weights cost the same.
    out = scratch / "smoke-run"
    subprocess.run(
        [sys.executable, "-m", "training", "--smoke", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


def torchserve_contender(args, payload: tuple[Path, str], scratch: Path, http: dict) -> None:
    """Issue #20's baseline on the 28x28 PNG at c=8, where its virtualenv is set up (outside
    the repo: bench/torchserve/server.py). `python -m bench.torchserve` interleaves it with
    ours at every concurrency."""
    from bench.torchserve import server as torchserve

    venv = torchserve.venv_path()
    if not torchserve.installed(venv):
        print(
            f"TorchServe skipped: no virtualenv at {venv} (set ${torchserve.VENV_VARIABLE}, or: "
            f"{torchserve.SETUP})"
        )
        return
    contender = torchserve.TorchServe(args.artifacts, venv)
    try:
        wrk(contender, *payload, 8, WARM_UP_SECONDS, scratch)
        runs = [wrk(contender, *payload, 8, args.duration, scratch) for _ in range(args.repeats)]
        http["torchserve|digit_28_png|8"] = summary = summarise(runs)
        print(f"torchserve digit_28_png c=8 {summary['rps']['median']:8.0f} req/s", flush=True)
    finally:
        contender.stop()


def markdown(r: dict) -> str:
    lines = [
        f"# Benchmark results\n\n`{r['command']}` on {r['machine']}, {r['date']}.\n",
        "Median of the runs, min-max in brackets. req/s and latency from `wrk` on "
        "127.0.0.1; CPU ms per request is the server process's own CPU time.\n",
        "| server | payload | conc. | req/s | p50 ms | p99 ms | CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, v in r["http"].items():
        server, payload, conc = key.split("|")
        rps, p50, p99, cpu = v["rps"], v["p50_ms"], v["p99_ms"], v["cpu_ms_per_request"]
        lines.append(
            f"| {server} | {payload} | {conc} | {rps['median']:,.0f} ({rps['min']:,.0f}-"
            f"{rps['max']:,.0f}) | {p50['median']:.2f} | {p99['median']:.2f} "
            f"({p99['min']:.2f}-{p99['max']:.2f}) | {cpu['median']:.2f} |"
        )
    lines += ["", "| target | measured | holds |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['holds'] else '**no**'} |"
        for t in r["targets"]
    ]
    lines += ["", "Other figures:", "```", json.dumps(r["other"], indent=2), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--run",
        type=Path,
        default=Path("runs/latest"),
        help="training run for the seed baseline (smoke-trained if absent)",
    )
    p.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=8, help="waitress threads of the baselines")
    p.add_argument("--quick", action="store_true", help="1 repeat of 2 s: a smoke run")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.repeats = 2.0, 1
    if not shutil.which("wrk"):
        print("error: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2

    from training.data import load_split, resolve_data_dir

    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    digit = load_split(resolve_data_dir(None), "test").images[0]
    payloads = make_payloads(scratch, digit)
    run = ensure_run(args.run, scratch)
    threads = ["--threads", str(args.threads)]
    servers = {
        "hello": ["bench.hello_app", *threads],
        "seed": ["bench.seed_app", "--run", str(run), *threads],
        # Ours as shipped: its defaults (one worker process per core, one thread per lane).
        "ours": ["server", "--artifacts", str(args.artifacts)],
    }
    result: dict = {"http": {}, "other": {}}
    for name, argv_ in servers.items():
        server = Server(name, argv_)
        try:
            result["other"][f"rss_idle_mb/{name}"] = rss_mb(server.proc.pid)
            # Steady state, not start-up: the first run after a start warms every server's
            # caches and code paths. Every server gets the same discarded run.
            wrk(server, *payloads["digit_28_png"], 8, WARM_UP_SECONDS, scratch)
            for payload in PAYLOADS:
                path, ctype = payloads[payload]
                for conc in CONCURRENCY:
                    runs = [
                        wrk(server, path, ctype, conc, args.duration, scratch)
                        for _ in range(args.repeats)
                    ]
                    result["http"][f"{name}|{payload}|{conc}"] = summarise(runs)
                    print(
                        f"{name:<6} {payload:<16} c={conc:<3} "
                        f"{result['http'][f'{name}|{payload}|{conc}']['rps']['median']:8.0f} "
                        f"req/s",
                        flush=True,
                    )
            result["other"][f"rss_after_load_mb/{name}"] = rss_mb(server.proc.pid)
            result["other"][f"rss_all_processes_mb/{name}"] = rss_mb(server.proc.pid, total=True)
            if name == "ours":
                result["other"]["batch_256"] = batch_throughput(
                    server.url, payloads["digit_28_png"][0].read_bytes(), args.repeats
                )
                # Large batches are what grow a worker: measured apart from the wrk load.
                result["other"]["rss_after_batches_mb/ours"] = rss_mb(server.proc.pid)
                # The whole tree at rest after both loads, batch helpers included (started by
                # the first batch): what a deployment holds between bursts, once the workers
                # have handed back what the burst freed (server/asgi.py, TRIM_AFTER).
                time.sleep(AT_REST)
                pss, count = tree_pss_mb(server.proc.pid)
                result["other"]["pss_tree_after_load_mb/ours"] = pss
                result["other"]["processes_after_load/ours"] = count
        finally:
            server.stop()
    torchserve_contender(args, payloads["digit_28_png"], scratch, result["http"])
    result["other"]["batch_256_one_core_in_process"] = batch_in_process(
        args.artifacts, payloads["digit_28_png"][0].read_bytes(), args.repeats
    )
    result["other"]["parallel_capacity"] = parallel_capacity()
    result["other"]["start_to_ready_s/ours"] = start_to_ready(servers["ours"], 5)
    result["other"]["start_to_ready_s/seed"] = start_to_ready(servers["seed"], 3)
    result["other"]["install"] = serve_venv_size(ROOT / "bench" / "results" / "tmp")
    result["other"]["inference"] = inference(run, args.artifacts, args.repeats)
    result["other"]["training_images_per_s"] = training_speed(2.0 if args.quick else 8.0)

    h = result["http"]
    med = {k: v["rps"]["median"] for k, v in h.items()}
    key = "digit_28_png"
    targets = [
        ("28x28 PNG at c=8 >= 3x seed", med[f"ours|{key}|8"] / med[f"seed|{key}|8"], 3.0, "x"),
        (
            "28x28 PNG at c=8 >= 0.5x hello-world",
            med[f"ours|{key}|8"] / med[f"hello|{key}|8"],
            0.5,
            "x",
        ),
        ("p99 at c=1 <= 2 ms (28x28 PNG)", h[f"ours|{key}|1"]["p99_ms"]["median"], 2.0, "ms"),
        (
            "p99 at c=1 <= 4 ms (canvas PNG)",
            h["ours|canvas_280_png|1"]["p99_ms"]["median"],
            4.0,
            "ms",
        ),
        (
            "batch of 256 >= 5,000 images/s",
            result["other"]["batch_256"]["images_per_s"]["median"],
            5000,
            "img/s",
        ),
        ("serve virtualenv <= 250 MB", result["other"]["install"]["serve_venv_mb"], 250, "MB"),
        (
            "RSS <= 120 MB per process (after load and after batches)",
            max(result["other"][f"rss_after_{when}_mb/ours"] for when in ("load", "batches")),
            120,
            "MB",
        ),
        ("start to /readyz <= 0.5 s", result["other"]["start_to_ready_s/ours"]["median"], 0.5, "s"),
        (
            "whole process tree <= 200 MB PSS at rest after load",
            result["other"]["pss_tree_after_load_mb/ours"],
            200,
            "MB",
        ),
    ]
    if f"torchserve|{key}|8" in med:
        ratio = med[f"ours|{key}|8"] / med[f"torchserve|{key}|8"]
        targets.append(("28x28 PNG at c=8 >= 1.2x TorchServe 0.12 tuned", ratio, 1.2, "x"))
    result["targets"] = [
        {
            "target": t,
            "measured": f"{v:,.2f} {unit}",
            "holds": v >= bound if t.startswith(("28x28", "batch")) else v <= bound,
        }
        for t, v, bound, unit in targets
    ]
    result.update(
        command="python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        date=time.strftime("%Y-%m-%d %H:%M"),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    (args.out / "bench.md").write_text(markdown(result))
    print(markdown(result))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
