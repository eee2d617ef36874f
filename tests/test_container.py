"""deploy/Dockerfile built and run for real, with podman, as a cluster would run it.

The image is built by deploy/build.sh on a Debian bookworm base made from Debian's archive
(deploy/base.sh; no image registry is reachable from the build machines), then run with a
read-only root filesystem and a tmpfs on /tmp only, as its non-root user, without capabilities,
under the CPU and memory limits of deploy/kserve/digits-server.yaml, on a free port of
127.0.0.1. Podman keeps the base image and the build's layers, so only the first run on a
machine pays for debootstrap and pip (a few minutes); later runs take seconds.

scripts/test.sh installs podman, runc and debootstrap. Without them, or without root, the
tests are skipped with the reason; under CI they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from server import create_app
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"  # the README's sample uploads
IMAGE = "localhost/digits-server:test"
# runc and the explicit limits: crun fails in this sandbox, and a container may not raise its
# limits above the host's (the same settings as deploy/build.sh).
PODMAN = ["podman", "--runtime", os.environ.get("PODMAN_RUNTIME", "runc")]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
CONTAINER_PORT = 8080  # the Dockerfile's EXPOSE; tests/test_kserve.py checks it against CMD


def _why_podman_cannot_run() -> str | None:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed: scripts/test.sh installs them "
            "(apt-get install podman runc debootstrap)"
        )
    if os.geteuid() != 0:
        return "needs root: debootstrap and podman's rootful storage"
    return None


def _skip_or_fail_without_podman() -> None:
    why = _why_podman_cannot_run()
    if why is None:
        return
    message = f"THE CONTAINER IMAGE WAS NOT BUILT OR RUN: {why}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {done.returncode}\n{done.stderr}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manifest_limits() -> dict[str, str]:
    doc = yaml.safe_load((ROOT / "deploy" / "kserve" / "digits-server.yaml").read_text())
    return doc["spec"]["predictor"]["containers"][0]["resources"]["limits"]


def memory_flag(quantity: str) -> str:
    """A Kubernetes memory quantity in Mi or Gi as podman's --memory value."""
    units = {"Mi": "m", "Gi": "g"}
    return quantity[:-2] + units[quantity[-2:]]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """The image built from this checkout, by its id: another checkout on the same machine
    may tag its own build with the same name meanwhile."""
    _skip_or_fail_without_podman()
    iidfile = tmp_path_factory.mktemp("image") / "id"
    build = subprocess.run(
        ["nice", "-n", "10", str(ROOT / "deploy" / "build.sh"), IMAGE, "--iidfile", str(iidfile)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return iidfile.read_text().strip()


class Container:
    def __init__(self, image: str):
        self.image = image
        self.name = f"digits-test-{os.getpid()}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        limits = manifest_limits()
        podman(
            "run",
            "--detach",
            "--name",
            self.name,
            "--read-only",
            "--read-only-tmpfs=false",  # podman's own tmpfs on /run, /tmp, /var/tmp: none
            "--tmpfs",
            "/tmp:rw,nosuid,nodev,mode=1777,size=64m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--cpus",
            limits["cpu"],
            "--memory",
            memory_flag(limits["memory"]),
            # The HEALTHCHECK stays; podman's timer for it needs systemd, so the test runs it.
            "--health-interval",
            "disable",
            *LIMITS,
            "--publish",
            f"127.0.0.1:{self.port}:{CONTAINER_PORT}",
            self.image,
        )

    def state(self) -> dict:
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *command, check=False)

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check = podman("healthcheck", "run", self.name, check=False)
            if check.returncode == 0:
                return
            if "no defined healthcheck" in check.stderr:
                raise AssertionError("the image has no HEALTHCHECK")
            if not self.state()["Running"]:
                raise AssertionError("the container exited:\n" + self.logs())
            time.sleep(1)
        raise AssertionError("the HEALTHCHECK never passed:\n" + self.logs())

    def remove(self) -> None:
        podman("rm", "--force", "--ignore", self.name, check=False)


@pytest.fixture(scope="module")
def container(image):
    c = Container(image)
    try:
        c.start()
        c.wait_healthy()
        yield c
    finally:
        c.remove()


@pytest.fixture(scope="module")
def in_process(bundle):
    """The same server in this process, for the answers the container must match."""
    return create_app(ServerConfig(artifacts=bundle)).test_client()


pytestmark = pytest.mark.slow


def test_health_check_passes_and_readyz_reports_the_models(container, bundle):
    r = requests.get(container.url + "/readyz", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True
    shipped = json.loads((bundle / "manifest.json").read_text())
    assert body["models"] == [m["name"] for m in shipped["models"]]


def test_predict_answers_a_digit_as_the_server_does_outside_the_image(container, in_process):
    upload = (EXAMPLES / "mnist-7.png").read_bytes()
    r = requests.post(
        container.url + "/predict",
        data=upload,
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    want = in_process.post("/predict", data=upload, content_type="image/png").get_json()
    assert got["label"] == want["label"] == 7
    for key in ("votes", "agreement", "uncertain", "preprocessing"):
        assert got[key] == want[key], key
    assert [(m["name"], m["label"]) for m in got["models"]] == [
        (m["name"], m["label"]) for m in want["models"]
    ]
    for g, w in zip(got["models"], want["models"], strict=True):
        assert g["probabilities"] == pytest.approx(w["probabilities"], abs=2e-6)


def test_bad_upload_gets_the_same_4xx_json_as_outside_the_image(container, in_process):
    bad = (EXAMPLES / "notes.txt").read_bytes()
    r = requests.post(
        container.url + "/predict",
        data=bad,
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    want = in_process.post("/predict", data=bad, content_type="image/png")
    assert 400 <= r.status_code < 500
    assert r.headers["Content-Type"].startswith("application/json")
    assert (r.status_code, r.json()) == (want.status_code, want.get_json())


def test_server_runs_as_non_root_on_a_read_only_root(container):
    uid = container.exec("id", "-u")
    assert uid.returncode == 0, uid.stderr
    assert uid.stdout.strip() not in ("", "0")
    # The server itself (PID 1), not only what exec starts: real, effective, saved, fs uids.
    status = container.exec("cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert "0" not in uids, status
    # onnxruntime's telemetry is off: it would warn that it cannot store its device id.
    assert "telemetry" not in container.logs()
    denied = container.exec("touch", "/app/server/written")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert container.exec("touch", "/tmp/written").returncode == 0


def test_sigterm_stops_the_server_with_exit_status_0(container):
    podman("kill", "--signal", "TERM", container.name)
    podman("wait", container.name, timeout=90)
    state = container.state()
    log = container.logs()
    assert not state["Running"]
    assert state["ExitCode"] == 0, log
    # The server's own last word, after its workers finished (not killed: that is 137).
    assert log.rstrip().endswith("INFO server: stopped"), log
