"""onnxruntime-gpu on a GPU machine: does the users' path (preload_dlls) work, do CUDA answers
match the CPU's on the 10,000 MNIST test digits, and how fast is each, per batch size.

Run from the repository root with MNIST_DIR set and onnxruntime-gpu importable
(bench/gpu/gpu.sh does both). Tidied for the linter after it ran; same steps.
"""

import gzip
import json
import os
import statistics
import time

import numpy as np
import onnxruntime as ort

print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers(), flush=True)
t0 = time.perf_counter()
getattr(ort, "preload_dlls", lambda: None)()
print(f"preload_dlls {time.perf_counter() - t0:.2f}s", flush=True)
with open("artifacts/manifest.json") as f:
    m = json.load(f)
mean, std = m["input"]["mean"], m["input"]["std"]
with gzip.open(os.environ["MNIST_DIR"] + "/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
with gzip.open(os.environ["MNIST_DIR"] + "/t10k-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)
x = ((x.astype(np.float32) / 255 - mean) / std).astype(np.float32)
path = "artifacts/ensemble.onnx"
so = ort.SessionOptions()
so.log_severity_level = 3
so.intra_op_num_threads = 1
cpu = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
outs = [o.name for o in cpu.get_outputs()]
print("outputs", outs)


def timed(sess, n: int) -> float:
    t = time.perf_counter()
    sess.run(None, {"image": x[:n]})
    return time.perf_counter() - t


def bench(sess, sizes=(1, 8, 32, 256, 1024)) -> dict:
    r = {}
    for n in sizes:
        first = timed(sess, n)
        med = statistics.median(timed(sess, n) for _ in range(max(5, min(300, 3000 // n))))
        r[n] = f"first {1e3 * first:.2f} ms, median {1e3 * med:.3f} ms, {n / med:,.0f} img/s"
    return r


def run_all(sess) -> list:
    parts = [sess.run(None, {"image": x[i : i + 1000]}) for i in range(0, 10000, 1000)]
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


ref = run_all(cpu)
ip = outs.index("probabilities")
print("cpu accuracy", float((ref[0] == y).mean()))
print("cpu timings (1 thread)", json.dumps(bench(cpu), indent=1), flush=True)
for opts in ({}, {"use_tf32": 0}, {"use_tf32": 0, "cudnn_conv_algo_search": "HEURISTIC"}):
    try:
        t = time.perf_counter()
        providers = [("CUDAExecutionProvider", {"device_id": 0, **opts}), "CPUExecutionProvider"]
        s = ort.InferenceSession(path, so, providers=providers)
        took = time.perf_counter() - t
        print("\n== options", opts, "providers", s.get_providers(), f"session {took:.2f}s")
        got = run_all(s)
        print(
            "labels differ from cpu:",
            int((got[0] != ref[0]).sum()),
            "max |prob diff|:",
            float(np.abs(got[ip] - ref[ip]).max()),
            "accuracy",
            float((got[0] == y).mean()),
        )
        firsts = [round(1e3 * timed(s, n), 2) for n in (3, 17, 77, 333)]
        print("first calls of new sizes (ms):", firsts)
        print(json.dumps(bench(s), indent=1), flush=True)
    except Exception as e:
        print("options", opts, "failed:", type(e).__name__, str(e)[:500], flush=True)
