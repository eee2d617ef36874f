"""The quick lane (the event loop's thread) and the bulk lane of a worker (server/lanes.py)."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import requests
from prometheus_client import CollectorRegistry, Counter

from server.__main__ import JsonErrorChannel
from server.lanes import Lanes, QueueWatch, accept_all
from tests.live import LiveServer
from tests.uploads import png


def _counter() -> Counter:
    return Counter("queued", "test", ["lane"], registry=CollectorRegistry())


def _value(counter: Counter, lane: str) -> float:
    return counter.labels(lane=lane)._value.get()


class FakeChannel:
    """What a lane needs of a waitress channel: its next request, service() and cancel()."""

    def __init__(self, body_bytes: int, work=None):
        self.requests = [SimpleNamespace(body_bytes_received=body_bytes)]
        self.work = work or (lambda: None)
        self.thread = ""
        self.done = threading.Event()
        self.cancelled = False

    def service(self):
        self.thread = threading.current_thread().name
        self.work()
        self.done.set()

    def cancel(self):
        self.cancelled = True


def test_small_requests_wait_for_the_loop_and_large_ones_go_to_the_bulk_thread():
    lanes = Lanes(1, bulk_from=1000, queued=_counter())
    try:
        small, edge, large = FakeChannel(999), FakeChannel(1000), FakeChannel(10**7)
        for channel in (small, edge, large):
            lanes.add_task(channel)
        assert edge.done.wait(5) and large.done.wait(5)
        assert edge.thread == large.thread == "bulk-0"
        assert not small.done.is_set()  # until the loop's pass is over
        lanes.run_pending()
        assert small.done.is_set() and small.thread == threading.current_thread().name
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
        lanes.run_pending()
        assert all(c.done.is_set() for c in small), "a small request waited behind a batch"
        assert not batch.done.is_set() and not queued_batch.done.is_set()
        release.set()
        assert queued_batch.done.wait(5)
        # The second batch waited; the first may have too, if it came before the thread was
        # ready (waitress counts threads that have not reached their queue yet as busy).
        assert _value(counter, "bulk") >= 1
        assert _value(counter, "quick") == 4  # each small one after the first waited its turn
    finally:
        release.set()
        assert lanes.shutdown(timeout=5)
    assert not [t.name for t in threading.enumerate() if re.match(r"bulk-\d", t.name)]


def test_the_loop_serves_quick_requests_in_slices_in_order_of_arrival():
    lanes = Lanes(1, bulk_from=1000, queued=_counter())
    order = []
    try:
        channels = [
            FakeChannel(10, work=lambda i=i: order.append(i) or time.sleep(0.002)) for i in range(6)
        ]
        for channel in channels[:4]:
            lanes.add_task(channel)
        lanes.run_pending(budget=0.003)  # then the loop reads its sockets again
        assert 1 <= len(order) < 4 and len(lanes.pending) == 4 - len(order)
        for channel in channels[4:]:  # read meanwhile: after those already waiting
            lanes.add_task(channel)
        while lanes.pending:
            lanes.run_pending(budget=0.003)
        assert order == list(range(6))
    finally:
        assert lanes.shutdown(timeout=5)


def test_every_waiting_connection_is_accepted_in_one_pass_up_to_the_limit():
    waiting = list(range(10))
    server = SimpleNamespace(_map={}, adj=SimpleNamespace(connection_limit=8))

    def accept_one():  # waitress: one connection per call, nothing when none waits
        if waiting:
            server._map[waiting.pop()] = "channel"

    server.handle_accept = accept_one
    accept_all(server)
    server.handle_accept()
    assert len(server._map) == 8 and len(waiting) == 2
    del server._map[9], server._map[8]
    server.handle_accept()
    assert len(server._map) == 8 and not waiting


def test_a_request_queued_from_the_bulk_thread_stays_in_the_bulk_lane():
    # waitress queues the next pipelined request of a connection from the thread that served
    # the one before; the loop's pending list is only ever touched by the loop.
    lanes = Lanes(1, bulk_from=1000, queued=_counter())
    try:
        small = FakeChannel(100)
        threading.Thread(target=lanes.add_task, args=(small,)).start()
        assert small.done.wait(5) and small.thread == "bulk-0"
        assert not lanes.pending
    finally:
        assert lanes.shutdown(timeout=5)


def test_a_failing_quick_request_is_logged_and_the_next_one_served(caplog):
    lanes = Lanes(1, bulk_from=1000, queued=_counter())
    try:
        broken, fine = FakeChannel(10, work=lambda: 1 / 0), FakeChannel(10)
        lanes.add_task(broken)
        lanes.add_task(fine)
        with caplog.at_level(logging.ERROR, logger="server"):
            lanes.run_pending()
        assert fine.done.is_set()
        assert "ZeroDivisionError" in caplog.text
    finally:
        assert lanes.shutdown(timeout=5)


def test_shutdown_cancels_quick_requests_not_yet_served():
    lanes = Lanes(1, bulk_from=1000, queued=_counter())
    waiting = FakeChannel(10)
    lanes.add_task(waiting)
    assert lanes.shutdown(timeout=5)
    assert waiting.cancelled and not waiting.done.is_set()


def test_a_response_buffered_past_the_limit_does_not_block_the_loop():
    # In a task thread waitress waits for the loop to send a response buffered past its
    # high-water mark; on the loop itself that wait would never end.
    channel = JsonErrorChannel.__new__(JsonErrorChannel)
    channel.server = SimpleNamespace(
        task_dispatcher=SimpleNamespace(loop_thread=None),
        pull_trigger=lambda: None,
    )
    channel.adj = SimpleNamespace(outbuf_high_watermark=16, log_socket_errors=True)
    channel.outbuf_lock = threading.Condition()
    channel.connected = True
    channel.total_outbufs_len = 10**6  # the client reads nothing
    channel._flush_some = lambda do_close=True: False
    done = threading.Event()

    def flush_on_the_loop():
        channel.server.task_dispatcher.loop_thread = threading.get_ident()
        channel._flush_outbufs_below_high_watermark()
        done.set()

    threading.Thread(target=flush_on_the_loop, daemon=True).start()
    assert done.wait(5), "the loop waited for itself"


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
    assert "longest queue: 3" in caplog.records[1].getMessage()


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
            # Digits one after another until the batch is answered; the server's own count of
            # answers says whether each came while the batch was still being worked on (a
            # digit queued behind the batch would find the batch counted before itself).
            answers = 'http_requests_total{method="POST",route="/predict",status="200"}'
            during = 0
            for answered in range(1, 1001):
                r = requests.post(
                    s.url + "/predict", data=digit, headers={"Content-Type": "image/png"}
                )
                assert r.status_code == 200
                text = requests.get(s.url + "/metrics").text
                during += f"{answers} {float(answered)}" in text.splitlines()
                if batch.done():
                    break
            assert during >= 1, "every digit waited for the batch"
            assert batch.result().status_code == 200
        metrics = requests.get(s.url + "/metrics").text
        assert 'http_requests_queued_total{lane="quick"}' in metrics
    finally:
        assert s.stop() == 0, s.log
    assert "Task queue depth" not in s.log


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """(status, body) of `count` HTTP/1.1 responses with Content-Length, read in order."""
    data, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(data) < length:
            data += sock.recv(65536)
        out.append((int(head.split(b" ", 2)[1]), data[:length]))
        data = data[length:]
    return out


def test_pipelined_requests_are_answered_in_order_from_either_lane(bundle, mnist_test):
    images, labels = mnist_test
    digit = png(images[0])
    batch = requests.Request(
        "POST",
        "http://127.0.0.1/predict",
        files=[("image", (f"{i}.png", png(images[i]), "image/png")) for i in range(150)],
    ).prepare()
    assert len(batch.body) >= 32 * 1024  # the bulk lane's threshold

    def post(body: bytes, ctype: str) -> bytes:
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body

    pipeline = (
        post(digit, "image/png")
        + post(batch.body, batch.headers["Content-Type"])
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # behind a bulk request
        + post(digit, "image/png")
    )
    s = LiveServer("--artifacts", str(bundle), "--workers", "1")
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as sock:
            sock.sendall(pipeline)
            answers = _read_responses(sock, 4)
    finally:
        assert s.stop() == 0, s.log
    assert [status for status, _ in answers] == [200, 200, 200, 200]
    assert b'"label":%d' % labels[0] in answers[0][1] and answers[0][1] == answers[3][1]
    assert answers[1][1].count(b'"label"') == 150 * 4  # each result and its three models
    assert answers[2][1] == b'{"status":"ok"}\n'
