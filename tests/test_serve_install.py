"""A fresh virtualenv with requirements-serve.txt alone runs the server: no torch anywhere."""

import io
import subprocess
import sys

import pytest
import requests
from PIL import Image

from tests.live import ROOT, LiveServer


@pytest.mark.slow
def test_fresh_serve_virtualenv_runs_the_server_without_torch(bundle, tmp_path, mnist_test):
    venv = tmp_path / "serve-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [
            str(venv / "bin/pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / "requirements-serve.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stderr
    listed = subprocess.run(
        [str(venv / "bin/pip"), "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "torch" not in listed and "onnxruntime==" in listed

    server = LiveServer("--artifacts", str(bundle), python=str(venv / "bin/python"))
    try:
        buf = io.BytesIO()
        Image.fromarray(mnist_test[0][0]).save(buf, "PNG")
        r = requests.post(
            server.url + "/predict",
            data=buf.getvalue(),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["label"] == int(mnist_test[1][0])
    finally:
        assert server.stop() == 0
