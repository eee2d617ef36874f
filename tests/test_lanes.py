"""The quick and bulk lanes of a worker's request threads (server/lanes.py)."""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import requests
from prometheus_client import CollectorRegistry, Counter

from server.lanes import Lanes, QueueWatch
from tests.live import LiveServer
from tests.uploads import png


def _counter() -> Counter:
    return Counter("queued", "test", ["lane"], registry=CollectorRegistry())


def _value(counter: Counter, lane: str) -> float:
    return counter.labels(lane=lane)._value.get()


class FakeChannel:
    """What a lane needs of a waitress channel: its next request, and service()."""

    def __init__(self, body_bytes: int, work=None):
        self.requests = [SimpleNamespace(body_bytes_received=body_bytes)]
        self.work = work or (lambda: None)
        self.thread = ""
        self.done = threading.Event()

    def service(self):
        self.thread = threading.current_thread().name
        self.work()
        self.done.set()

    def cancel(self):
        pass


def test_requests_from_the_threshold_on_take_the_bulk_lane():
    lanes = Lanes(1, bulk_from=1000, queued=_counter())
    try:
        for size, lane in ((0, "quick"), (999, "quick"), (1000, "bulk"), (10**7, "bulk")):
            channel = FakeChannel(size)
            lanes.add_task(channel)
            assert channel.done.wait(5)
            assert channel.thread == f"{lane}-0"
    finally:
        assert lanes.shutdown(timeout=5)


def test_a_busy_bulk_lane_does_not_hold_up_quick_requests():
    counter = _counter()
    lanes = Lanes(1, bulk_from=1000, queued=counter)
    started, release = threading.Event(), threading.Event()
    try:
        batch = FakeChannel(5000, work=lambda: started.set() or release.wait(10))
        queued_batch = FakeChannel(5000)
        lanes.add_task(batch)
        assert started.wait(5)
        lanes.add_task(queued_batch)  # waits for the bulk thread
        small = [FakeChannel(100) for _ in range(5)]
        for channel in small:
            lanes.add_task(channel)
            assert channel.done.wait(5), "a small request waited behind a batch"
        assert not batch.done.is_set() and not queued_batch.done.is_set()
        release.set()
        assert queued_batch.done.wait(5)
        # The second batch waited; the first may have too, if it came before the thread was
        # ready (waitress counts threads that have not reached their queue yet as busy).
        assert _value(counter, "bulk") >= 1
    finally:
        release.set()
        assert lanes.shutdown(timeout=5)
    assert not [t.name for t in threading.enumerate() if re.match(r"(quick|bulk)-\d", t.name)]


def test_queue_waits_are_counted_and_logged_once_a_minute_not_per_request(caplog):
    counter = _counter()
    watch = QueueWatch("quick", counter.labels(lane="quick"), interval=60)
    with caplog.at_level(logging.WARNING, logger="server"):
        for depth in (1, 3, 2, 1):
            watch.warning("Task queue depth is %d", depth)
    assert _value(counter, "quick") == 4
    assert len(caplog.records) == 1  # the first wait, at once
    assert "quick lane: 1 request(s) waited" in caplog.records[0].getMessage()
    watch.next_report = 0.0  # a minute later
    with caplog.at_level(logging.WARNING, logger="server"):
        watch.warning("Task queue depth is %d", 1)
    assert len(caplog.records) == 2
    assert "4 request(s) waited" in caplog.records[1].getMessage()
    assert "deepest queue: 3" in caplog.records[1].getMessage()


def test_a_digit_is_answered_while_a_long_batch_is_in_the_bulk_lane(bundle, mnist_test):
    images = mnist_test[0]
    # Digits drawn large, as a canvas sends them: each takes milliseconds to preprocess, and
    # without batch helpers the whole batch is preprocessed in its request thread.
    big = [png(np.kron(images[i], np.ones((10, 10), np.uint8))) for i in range(256)]
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(big)]
    digit = png(images[0])
    s = LiveServer("--artifacts", str(bundle), "--workers", "1", "--batch-helpers", "0")
    try:
        with ThreadPoolExecutor(1) as pool:
            batch = pool.submit(requests.post, s.url + "/predict", files=files, timeout=120)
            # The batch has been read and is being worked on once its images are counted.
            deadline = time.monotonic() + 30
            while "predict_images_total 256.0" not in requests.get(s.url + "/metrics").text:
                assert time.monotonic() < deadline and not batch.done(), s.log
                time.sleep(0.002)
            for _ in range(5):
                r = requests.post(
                    s.url + "/predict", data=digit, headers={"Content-Type": "image/png"}
                )
                assert r.status_code == 200
            assert not batch.done(), "the digits waited for the batch (or it is too short to tell)"
            assert batch.result().status_code == 200
        metrics = requests.get(s.url + "/metrics").text
        assert 'http_requests_queued_total{lane="quick"}' in metrics
    finally:
        assert s.stop() == 0, s.log
    assert "Task queue depth" not in s.log
