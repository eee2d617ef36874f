"""The server, --device cpu vs cuda (or the devices given as arguments, in that order):
single-image latency and batch throughput, one worker. Run from the repository root.
Tidied for the linter after it ran; same steps."""

import sys
import time

import numpy as np
import requests

sys.path.insert(0, ".")
from tests.live import LiveServer
from tests.uploads import png

g = np.load("artifacts/golden.npz")["pixels"]
one = png(g[0])
files = [("image", (f"{i}.png", png(g[i % 16]), "image/png")) for i in range(256)]
for device in sys.argv[1:] or ("cpu", "cuda"):
    try:
        s = LiveServer("--artifacts", "artifacts", "--device", device, "--workers", "1")
    except RuntimeError as e:
        print(device, "did not start:", str(e)[-800:])
        continue
    try:
        ses = requests.Session()
        print(device, ses.get(s.url + "/readyz").json().get("device"))
        headers = {"Content-Type": "image/png"}
        for _ in range(50):
            ses.post(s.url + "/predict", data=one, headers=headers)
        lat = []
        for _ in range(500):
            t = time.perf_counter()
            r = ses.post(s.url + "/predict", data=one, headers=headers)
            lat.append(time.perf_counter() - t)
            assert r.status_code == 200
        lat.sort()
        p50, p99 = 1e3 * lat[250], 1e3 * lat[494]
        print(f"{device}: single image, 500 sequential: p50 {p50:.2f} ms p99 {p99:.2f} ms")
        ses.post(s.url + "/predict", files=files)
        t = time.perf_counter()
        for _ in range(20):
            assert ses.post(s.url + "/predict", files=files).status_code == 200
        rate = 20 * 256 / (time.perf_counter() - t)
        print(f"{device}: 20 batches of 256: {rate:,.0f} images/s", flush=True)
    finally:
        print("exit", s.stop())
