"""A bounded mixed load against one server (its default worker processes): 10,000 requests,
8 to 32 at a time, one in five bad. It must answer every one (no 5xx, no dropped connection),
every good answer correctly. Its timings and memory are reported, not judged: speed and
memory are `python -m bench`'s to measure."""

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from tests.live import ROOT, LiveServer
from tests.uploads import png

TOTAL = 10_000
WARM_UP = 1_000


@pytest.mark.slow
def test_mixed_load_is_answered_fully_and_correctly(bundle, mnist_test, capsys):
    images, labels = mnist_test
    server = LiveServer("--artifacts", str(bundle))
    try:
        # Good requests: digits the ensemble gets right (its answer must not change under load).
        candidates = [(png(images[i]), int(labels[i])) for i in range(200)]
        good = []
        for data, label in candidates:
            r = requests.post(
                server.url + "/predict",
                data=data,
                headers={"Content-Type": "image/png"},
                timeout=10,
            )
            if r.json()["label"] == label:
                good.append((data, label))
        bad = [
            (b"not an image at all", "image/png", 415),
            (png(images[0])[:100], "image/png", 400),
            (png(np.zeros((64, 64), np.uint8)), "image/png", 422),
            (png(images[1]), "text/plain", 415),
            (b"", "image/png", 400),
        ]
        rng = random.Random(0)
        plan = [
            ("bad", rng.choice(bad)) if rng.random() < 0.2 else ("good", rng.choice(good))
            for _ in range(TOTAL)
        ]
        local = threading.local()
        failures: list[str] = []
        counts = {"good": 0, "bad": 0, "5xx": 0, "dropped": 0, "wrong": 0}
        lock = threading.Lock()
        latencies: list[float] = []

        def send(item):
            kind, spec = item
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            data, ctype, expected = (spec[0], "image/png", spec[1]) if kind == "good" else spec
            t0 = time.perf_counter()
            try:
                r = session.post(
                    server.url + "/predict", data=data, headers={"Content-Type": ctype}, timeout=30
                )
            except requests.RequestException as e:
                with lock:
                    counts["dropped"] += 1
                    failures.append(repr(e))
                return
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                counts[kind] += 1
                if r.status_code >= 500:
                    counts["5xx"] += 1
                    failures.append(r.text[:200])
                elif kind == "good" and (r.status_code != 200 or r.json()["label"] != expected):
                    counts["wrong"] += 1
                    failures.append(r.text[:200])
                elif kind == "bad" and r.status_code != expected:
                    counts["wrong"] += 1
                    failures.append(f"{r.status_code} != {expected}: {r.text[:200]}")

        t_start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, plan[:WARM_UP]))
        rss_warm = server.rss_mb()
        # The rest in three phases of different concurrency: 8, 32, then 16 at a time.
        rest = plan[WARM_UP:]
        third = len(rest) // 3
        for workers, part in (
            (8, rest[:third]),
            (32, rest[third : 2 * third]),
            (16, rest[2 * third :]),
        ):
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(send, part))
        seconds = time.perf_counter() - t_start
        rss_end = server.rss_mb()
        metrics = requests.get(server.url + "/metrics", timeout=10).text
    finally:
        exit_code = server.stop()

    lat = np.array(latencies) * 1000
    report = {
        "requests": TOTAL,
        "seconds": round(seconds, 1),
        "req_per_s": round(TOTAL / seconds),
        **counts,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "rss_after_warm_up_mb": round(max(rss_warm.values()), 1),
        "rss_end_mb": round(max(rss_end.values()), 1),
        # Per process: each worker against itself after warm-up.
        "rss_growth_mb": round(max(rss_end[p] - rss_warm.get(p, rss_end[p]) for p in rss_end), 1),
        "processes": len(rss_end),
    }
    out = ROOT / "test-output"
    out.mkdir(exist_ok=True)
    (out / "load.json").write_text(json.dumps(report, indent=2))
    with capsys.disabled():
        print("\nload test:", json.dumps(report))
    assert exit_code == 0
    assert counts["5xx"] == 0 and counts["dropped"] == 0, failures[:5]
    assert counts["wrong"] == 0, failures[:5]
    assert counts["good"] + counts["bad"] == TOTAL
    assert 'status="500"' not in metrics and 'status="503"' not in metrics
