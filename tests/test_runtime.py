"""The serving runtime of `python -m server` under attack and faults: slow requests, slow
clients, dead workers, stops at any moment, and HTTP edge cases."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from bench import procs
from tests.live import ROOT, LiveServer
from tests.uploads import png


def slow_jpeg(side: int, copies: int) -> bytes:
    """A flat progressive JPEG whose last scan (end-of-band runs only, a few bytes) comes
    `copies` more times: each copy is a pass over every block, so a file of tens of KB takes
    seconds to decode."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 200).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * copies + b"\xff\xd9"


def _exchange(port: int, request: bytes, timeout: float = 5) -> tuple[bytes, bool]:
    """Sends `request`, reads until the server closes or goes quiet for 1 s: (what came back,
    whether the server closed the connection)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        s.settimeout(1)
        try:
            while chunk := s.recv(65536):
                data += chunk
            return data, True
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True


@pytest.fixture(scope="module")
def server(bundle):
    s = LiveServer("--artifacts", str(bundle), "--workers", "2")
    yield s
    assert s.stop() == 0, s.log


# ---- nothing a request does holds up the others --------------------------------------------


def test_slow_decodes_hold_up_neither_health_checks_nor_new_connections(bundle):
    s = LiveServer("--artifacts", str(bundle), "--workers", "2")
    # About a second of decoding each, inside the decode budget: four queue up per worker.
    jpeg = slow_jpeg(2600, 90)
    assert len(jpeg) < 32 * 1024  # a small body
    try:
        with ThreadPoolExecutor(8) as pool:
            slow = [
                pool.submit(
                    requests.post,
                    s.url + "/predict",
                    data=jpeg,
                    headers={"Content-Type": "image/jpeg"},
                    timeout=120,
                )
                for _ in range(8)
            ]
            time.sleep(0.5)  # every one has been sent; the first two are being decoded
            for _ in range(5):
                assert requests.get(s.url + "/healthz", timeout=60).status_code == 200
            # A new connection is accepted and its request read: an oversized one is refused.
            answer, _ = _exchange(
                s.port,
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 20000000\r\n\r\n",
            )
            assert answer.startswith(b"HTTP/1.1 413")
            # Answered while the decodes were running: a health check that waited for the
            # decodes queued before it on its worker would find at least four finished.
            finished = sum(f.done() for f in slow)
            assert finished < 4, f"{finished} decodes finished before the health checks"
            assert all(f.result().status_code < 500 for f in slow)
    finally:
        assert s.stop() == 0, s.log


# ---- slow clients --------------------------------------------------------------------------


def _trickle(port: int, count: int, head: bytes, line: bytes, seconds: float, stop) -> int:
    """`count` connections that send `head`, then `line` every 0.5 s for `seconds`; returns
    how many the server had closed by then."""
    conns = []
    for _ in range(count):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(head)
        conns.append(c)
    closed = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.5)
        for i, c in enumerate(conns):
            if i in closed:
                continue
            try:
                c.sendall(line)
            except OSError:
                closed.add(i)
    for c in conns:
        c.close()
    return len(closed)


@pytest.mark.parametrize(
    ("kind", "head", "line"),
    [
        ("headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Trickle: 1\r\n"),
        (
            "body",
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n",
            b"x" * 10,
        ),
    ],
)
def test_clients_that_trickle_are_dropped_and_good_requests_served(
    bundle, mnist_test, kind, head, line
):
    # Every connection sends something every 0.5 s: an idle timeout never fires.
    s = LiveServer(
        "--artifacts", str(bundle), "--workers", "2", "--header-timeout", "2", "--body-timeout", "2"
    )
    digit = png(mnist_test[0][0])
    stop = threading.Event()
    try:
        with ThreadPoolExecutor(1) as pool:
            attack = pool.submit(_trickle, s.port, 450, head, line, 8, stop)
            time.sleep(1.5)  # every connection is open and trickling
            served = 0
            for _ in range(8):
                try:
                    r = requests.post(
                        s.url + "/predict",
                        data=digit,
                        headers={"Content-Type": "image/png"},
                        timeout=5,
                    )
                    served += r.status_code == 200
                except requests.RequestException:
                    pass
            during = not attack.done()  # still trickling when the last good one was answered
            dropped = attack.result(60)
    finally:
        stop.set()
        assert s.stop() == 0, s.log
    assert served == 8 and during, (served, during)
    assert dropped == 450  # each closed at its deadline


# ---- workers and processes -----------------------------------------------------------------


def _workers(s: LiveServer) -> list[int]:
    return procs.children(s.proc.pid)


def _wait_for(predicate, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_process_tree_is_a_master_and_its_workers_until_a_batch_needs_helpers(bundle):
    s = LiveServer("--artifacts", str(bundle), "--workers", "2")
    try:
        _wait_for(lambda: s.log.count("self-test passed") == 2, what=s.log)
        time.sleep(1)  # anything started in the background after start-up is there by now
        tree = procs.tree(s.proc.pid)
        assert len(tree) == 3, [procs.cmdline(p) for p in tree]
    finally:
        assert s.stop() == 0, s.log


def test_a_killed_worker_is_replaced_and_leaves_nothing_behind(bundle, mnist_test):
    s = LiveServer("--artifacts", str(bundle), "--workers", "2", "--batch-helpers", "1")
    digit = png(mnist_test[0][0])
    files = [("image", (f"{i}.png", digit, "image/png")) for i in range(64)]
    try:
        _wait_for(lambda: len(_workers(s)) == 2, what=s.log)
        # Batches until both workers run their batch pools (helpers, fork server, tracker).
        _wait_for(
            lambda: (
                requests.post(s.url + "/predict", files=files, timeout=30).ok
                and s.log.count("batch helper process(es) ready") == 2
            ),
            what=s.log,
        )
        victim = _workers(s)[0]
        below = procs.tree(victim)
        assert len(below) >= 3, [procs.cmdline(p) for p in below]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(_workers(s)) == 2 and victim not in _workers(s), what=s.log)
        _wait_for(lambda: not [p for p in below if procs.alive(p)], 10, "orphans")
        for _ in range(20):  # every request answered, by either worker
            r = requests.post(
                s.url + "/predict", data=digit, headers={"Content-Type": "image/png"}, timeout=10
            )
            assert r.status_code == 200
        assert s.proc.poll() is None
        everything = procs.tree(s.proc.pid)
    finally:
        assert s.stop() == 0, s.log
    _wait_for(lambda: not [p for p in everything if procs.alive(p)], 10, "left behind")


@pytest.mark.parametrize("delay", [0.2, 0.4, 0.6, 0.8, 1.0])
def test_a_stop_at_any_moment_of_start_up_leaves_no_process(bundle, delay):
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", "0", "--artifacts", str(bundle)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: set[int] = set()
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        seen.update(procs.tree(proc.pid))
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    seen.discard(proc.pid)
    _wait_for(lambda: not [p for p in seen if procs.alive(p)], 10, "orphans")
    assert code in (0, -signal.SIGTERM)


# ---- HTTP edge cases -----------------------------------------------------------------------


def test_expect_100_continue_over_the_limit_gets_413_without_sending_the_body(server):
    answer, closed = _exchange(
        server.port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 20000000\r\nExpect: 100-continue\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"100 Continue" not in answer and closed


def test_a_body_of_exactly_the_limit_is_read(server):
    body = b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 1024 * 1024 - 8)
    r = requests.post(
        server.url + "/predict", data=body, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert r.status_code != 413 and r.status_code < 500, r.text
    r = requests.post(
        server.url + "/predict", data=body + b"!", headers={"Content-Type": "image/png"}, timeout=60
    )
    assert r.status_code == 413


def test_the_host_header_never_reaches_a_location(server):
    for path in ("//healthz", "/v2//health/live", "/static//app.js", "//evil.example/x"):
        r = requests.get(
            server.url + path, headers={"Host": "evil.example"}, allow_redirects=False, timeout=5
        )
        assert "evil.example" not in r.headers.get("Location", ""), (path, r.headers)
        assert r.status_code < 500


def test_content_length_with_chunked_encoding_closes_the_connection(server):
    answer, closed = _exchange(
        server.port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert re.match(rb"HTTP/1.1 4\d\d", answer), answer[:100]
    assert answer.count(b"HTTP/1.1") == 1 and closed


def test_onnxruntime_writes_no_telemetry(bundle, tmp_path, mnist_test):
    home = tmp_path / "home"
    home.mkdir()
    s = LiveServer("--artifacts", str(bundle), "--workers", "1", env={"HOME": str(home)})
    try:
        r = requests.post(
            s.url + "/predict",
            data=png(mnist_test[0][0]),
            headers={"Content-Type": "image/png"},
            timeout=10,
        )
        assert r.status_code == 200
    finally:
        assert s.stop() == 0, s.log
    assert not list(home.rglob("*")), list(home.rglob("*"))


def test_importing_the_server_changes_no_environment_and_loads_no_runtime():
    # The commands set their environment before onnxruntime and prometheus_client read it;
    # an import that changed it would decide for whoever embeds the app. The batch helpers
    # import preprocessing alone: no web framework, runtime or metrics library in them.
    script = (
        "import json, os, sys; before = dict(os.environ); "
        "import server, server.preprocess, server.config, server.manifest; "
        "heavy = [m for m in ('flask', 'onnxruntime', 'prometheus_client') if m in sys.modules]; "
        "from server import create_app; "
        "print(json.dumps([heavy, dict(os.environ) == before]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORT_", "PROMETHEUS_"))}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [[], True]


def test_an_operators_metrics_directory_starts_each_run_from_zero(bundle, tmp_path, mnist_test):
    # prometheus_client's multiprocess directory, set by the operator: its files from the last
    # run must not add to this run's counts (its documentation: wipe it between runs).
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    line = 'http_requests_total{method="POST",route="/predict",status="200"} '
    for run in range(2):
        s = LiveServer("--artifacts", str(bundle), "--workers", "2", env=env)
        try:
            for _ in range(3):
                r = requests.post(
                    s.url + "/predict",
                    data=png(mnist_test[0][run]),
                    headers={"Content-Type": "image/png"},
                    timeout=10,
                )
                assert r.status_code == 200
            assert list(tmp_path.glob("*.db")), "the values are not in the operator's directory"
            text = requests.get(s.url + "/metrics", timeout=5).text
            served = sum(float(x[len(line) :]) for x in text.splitlines() if x.startswith(line))
            assert served == 3, (run, served)
        finally:
            assert s.stop() == 0, s.log


# ---- lanes ---------------------------------------------------------------------------------


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


def test_a_closed_app_is_not_ready_and_its_batch_pool_is_stopped(bundle, mnist_test):
    from server import create_app
    from server.config import ServerConfig

    before = set(procs.children(os.getpid()))
    app = create_app(ServerConfig(artifacts=bundle, batch_helpers=1))
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    state = app.extensions["digits"]
    state.close()  # what python -m server calls when a worker stops
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["ready"] is False
    # A closed pool starts no helpers: a large batch is answered in the request thread.
    files = [(io.BytesIO(png(mnist_test[0][i])), f"{i}.png") for i in range(64)]
    r = client.post("/predict", data={"image": files}, content_type="multipart/form-data")
    assert r.status_code == 200 and len(r.get_json()["results"]) == 64
    assert set(procs.children(os.getpid())) <= before
