"""The server as deployed: `python -m server` (granian) on 127.0.0.1, a free port."""

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from bench import procs
from tests.live import ROOT, LiveServer, run
from tests.uploads import png


@pytest.fixture(scope="module")
def server(bundle):
    # Two workers whatever the machine's core count: the tests below count their log lines.
    s = LiveServer(
        "--artifacts",
        str(bundle),
        "--device",
        "cpu",  # the tests below expect the CPU, on a GPU machine too
        "--workers",
        "2",
        "--header-timeout",
        "2",
        "--body-timeout",
        "2",
    )
    yield s
    assert s.stop() == 0


def test_start_up_logs_providers_and_self_test(server):
    ready = requests.get(server.url + "/readyz", timeout=5).json()
    assert ready["ready"] and ready["device"] == "cpu"
    deadline = time.monotonic() + 10  # workers log as they finish loading
    while server.log.count("self-test passed") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log.count("self-test passed") >= 2, server.log  # the wait alone never fails
    assert server.log.count("onnxruntime providers active: CPUExecutionProvider") == 2
    assert re.search(r"serving on http://127\.0\.0\.1:\d+ \(2 worker\(s\); ", server.log)


def test_all_mnist_test_digits_over_http_match_the_manifest(served_mnist, bundle, mnist_test):
    # The train/serve contract, end to end: every test digit as a PNG, through the server,
    # preprocessing and the ensemble graph, scores what export measured on the tensors.
    _, labels = mnist_test
    manifest = json.loads((bundle / "manifest.json").read_text())
    predicted = [a["label"] for a in served_mnist]
    accuracy = float(np.mean(np.array(predicted) == labels))
    assert abs(accuracy - manifest["ensemble"]["test_acc"]) <= 0.001, accuracy


def test_concurrent_requests_are_all_answered_correctly(server, mnist_test):
    images, _ = mnist_test
    session = requests.Session()

    def one(i: int, http=requests) -> tuple[int, dict]:
        r = http.post(
            server.url + "/predict",
            data=png(images[i]),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        return r.status_code, r.json()

    # The answers one at a time, then 32 at a time: the same answers, every one of them.
    sequential = [one(i, session) for i in range(300)]
    with ThreadPoolExecutor(32) as pool:
        concurrent = list(pool.map(one, range(300)))
    assert all(status == 200 for status, _ in sequential + concurrent)
    assert [a for _, a in concurrent] == [a for _, a in sequential]


def test_every_scrape_counts_the_requests_of_every_worker(server, mnist_test):
    # A scrape reaches one worker (a new connection each, whichever worker accepts it); with
    # per-process counters it would report only that worker's share.
    def served() -> float:
        text = requests.get(server.url + "/metrics", timeout=5).text
        line = 'http_requests_total{method="POST",route="/predict",status="200"} '
        return sum(float(x[len(line) :]) for x in text.splitlines() if x.startswith(line))

    before = {served() for _ in range(8)}
    assert len(before) == 1, before
    images, _ = mnist_test
    for img in images[:30]:
        headers = {"Content-Type": "image/png"}
        r = requests.post(server.url + "/predict", data=png(img), headers=headers, timeout=10)
        assert r.status_code == 200
    assert {served() for _ in range(8)} == {before.pop() + 30}


def test_oversized_body_is_refused_before_it_is_read(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1073741824\r\n\r\n" + b"\0" * 1000
        )
        # Only 1,000 of the 1 GiB were sent: an answer at all means it did not wait for them
        # (the connection would otherwise close silently after the 2 s body timeout).
        response = b""
        while b"}" not in response:
            chunk = s.recv(65536)
            if not chunk:
                break
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head
    assert json.loads(body)["code"] == "request_entity_too_large"
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


def test_slow_client_is_dropped_and_others_are_served(server, mnist_test):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n")
        # While this client stalls, others are served.
        r = requests.post(
            server.url + "/predict",
            data=png(mnist_test[0][0]),
            headers={"Content-Type": "image/png"},
            timeout=5,
        )
        assert r.status_code == 200
        # Closed by the server after its header timeout (2 s), well before this socket's 10 s.
        assert s.recv(1024) == b""


def _unread_bytes(server_port: int, client_port: int) -> int | None:
    """Bytes the kernel holds for the server on this connection that it has not read yet
    (rx_queue of its socket in /proc/net/tcp), or None while there is no such socket."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, _, queues = line.split()[1:5]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            return int(queues.split(":")[1], 16)
    return None


def test_sigterm_lets_requests_in_flight_finish(bundle, mnist_test):
    s = LiveServer("--artifacts", str(bundle))
    big = png(np.asarray(Image.fromarray(255 - mnist_test[0][0]).resize((2000, 2000))))
    files = [("image", (f"{i}.png", big, "image/png")) for i in range(20)]
    request = requests.Request("POST", s.url + "/predict", files=files).prepare()
    assert len(request.body) < 10_000_000  # under the body limit: the batch takes a while
    head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in request.headers.items()
    )
    with socket.create_connection(("127.0.0.1", s.port), timeout=60) as c:
        c.sendall(head.encode() + b"\r\n" + request.body)
        # In flight: the server has read every byte of the request and not answered yet.
        deadline = time.monotonic() + 30
        while _unread_bytes(s.port, c.getsockname()[1]) != 0:
            assert time.monotonic() < deadline, s.log
            time.sleep(0.01)
        assert select.select([c], [], [], 0)[0] == [], "answered before the signal"
        s.proc.send_signal(signal.SIGTERM)
        response = b""
        while chunk := c.recv(1 << 16):
            response += chunk
    assert s.wait_exit(30) == 0, s.log
    status, _, body = response.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), response[:300]
    assert len(json.loads(body)["results"]) == 20
    assert "stopped" in s.log
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/healthz", timeout=2)


def _start_fails(*args: str) -> subprocess.CompletedProcess:
    return run("server", "--port", "0", *args, timeout=60)


def test_missing_bundle_is_a_clear_start_up_error(tmp_path):
    p = _start_fails("--artifacts", str(tmp_path / "nothing"))
    assert p.returncode == 2
    assert "cannot start:" in p.stderr and "manifest.json not found" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove"])
def test_damaged_model_file_is_a_clear_start_up_error(bundle, tmp_path, damage):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    model = copy / json.loads((copy / "manifest.json").read_text())["models"][0]["file"]
    data = model.read_bytes()
    if damage == "truncate":
        model.write_bytes(data[: len(data) // 3])
    elif damage == "flip":
        model.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        model.unlink()
    p = _start_fails("--artifacts", str(copy))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert ("sha256" if damage != "remove" else "is missing") in p.stderr


def test_cuda_without_a_gpu_is_an_error_not_a_fallback(bundle):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    p = _start_fails("--artifacts", str(bundle), "--device", "cuda")
    assert p.returncode == 2 and "--device cuda" in p.stderr and "onnxruntime-gpu" in p.stderr


def _has_cuda_provider() -> bool:
    """onnxruntime-gpu installed on a machine with an NVIDIA GPU (the package alone lists the
    provider on any machine)."""
    import onnxruntime

    gpu = shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")
    return gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.cuda
@pytest.mark.skipif(not _has_cuda_provider(), reason="needs onnxruntime-gpu and a CUDA GPU")
def test_cuda_answers_what_the_cpu_answers(bundle, mnist_test):
    images, _ = mnist_test
    files = [("image", (f"{i}.png", png(img), "image/png")) for i, img in enumerate(images[:256])]
    answers = {}
    for device in ("cpu", "cuda"):
        s = LiveServer("--artifacts", str(bundle), "--device", device, "--workers", "1")
        try:
            assert requests.get(s.url + "/readyz", timeout=5).json()["device"] == device
            r = requests.post(s.url + "/predict", files=files, timeout=60)
            assert r.status_code == 200, r.text
            answers[device] = r.json()["results"]
        finally:
            assert s.stop() == 0
        assert f"onnxruntime providers active: {'CUDA' if device == 'cuda' else 'CPU'}" in s.log
    for cpu, cuda in zip(answers["cpu"], answers["cuda"], strict=True):
        assert cpu["label"] == cuda["label"]
        assert [m["label"] for m in cpu["models"]] == [m["label"] for m in cuda["models"]]
        for m_cpu, m_cuda in zip(cpu["models"], cuda["models"], strict=True):
            assert np.allclose(m_cpu["probabilities"], m_cuda["probabilities"], atol=1e-4)


def test_serving_never_imports_torch(bundle, mnist_test):
    code = f"""
import sys, io
from PIL import Image
import numpy as np
from server import create_app
from server.config import ServerConfig
app = create_app(ServerConfig(artifacts={str(bundle)!r}))
digit = np.load({str(bundle / "golden.npz")!r})['pixels'][0]
buf = io.BytesIO(); Image.fromarray(digit).save(buf, 'PNG')
r = app.test_client().post('/predict', data=buf.getvalue(), content_type='image/png')
assert r.status_code == 200, r.data
banned = ('torch', 'torchvision', 'training', 'export')
print(sorted(m for m in sys.modules if m.split('.')[0] in banned))
"""
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def _batch_with_refusals(images: np.ndarray) -> tuple[list, list]:
    """Files for one batch: MNIST digits with a blank and a broken image among them, and the
    answer expected at each position (a digit, or an error code)."""
    files, expected = [], []
    for i, img in enumerate(images):
        files.append(("image", (f"{i}.png", png(img), "image/png")))
        expected.append(i)
        if i % 20 == 7:
            files.append(("image", ("blank.png", png(np.zeros((28, 28), np.uint8)), "image/png")))
            expected.append("no_ink")
        if i % 20 == 13:
            files.append(("image", ("cut.png", png(img)[:40], "image/png")))
            expected.append("undecodable_image")
    return files, expected


def _check_batch(url: str, images: np.ndarray, labels: np.ndarray) -> None:
    files, expected = _batch_with_refusals(images)
    results = requests.post(url + "/predict", files=files, timeout=60).json()["results"]
    assert len(results) == len(expected)
    wrong = 0
    for want, got in zip(expected, results, strict=True):
        if isinstance(want, str):
            assert got["code"] == want
        else:
            wrong += got["label"] != labels[want]
    assert wrong <= 1  # in order: a shuffled slice would get a tenth right


def _helpers_ready(server: LiveServer, count: int) -> None:
    """Waits for the batch pool's `count`-th start (a worker starts it on its first batch
    large enough to be cut)."""
    deadline = time.monotonic() + 60
    while server.log.count("batch helper process(es) ready") < count:
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)


def test_batches_are_split_over_helpers_and_survive_a_helper_dying(bundle, mnist_test):
    images, labels = mnist_test[0][:200], mnist_test[1][:200]
    s = LiveServer("--artifacts", str(bundle), "--workers", "1", "--batch-helpers", "2")
    try:
        assert len(s.descendants()) == 1  # the worker: no helper before the first batch
        _check_batch(s.url, images, labels)  # in the request thread; starts the helpers
        _helpers_ready(s, 1)
        _check_batch(s.url, images, labels)
        # The helpers are the fork server's children (and share its command line).
        killed = [p for p in s.descendants() if "forkserver" in procs.cmdline(procs.parent(p))]
        assert len(killed) == 2, [procs.cmdline(p) for p in s.descendants()]
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):  # gone with the first one
                os.kill(pid, signal.SIGKILL)
        _check_batch(s.url, images, labels)  # answered in the request thread meanwhile
        assert "a batch helper died; restarting the helpers" in s.log
        _helpers_ready(s, 2)
        _check_batch(s.url, images, labels)
        everything = s.descendants()
    finally:
        assert s.stop() == 0, s.log
    deadline = time.monotonic() + 5
    while [p for p in everything if procs.alive(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [procs.cmdline(p) for p in everything if procs.alive(p)]  # no orphans
