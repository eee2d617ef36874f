"""Shared fixtures. MNIST comes from $MNIST_DIR or ../shared/data/mnist beside the repo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mnist_dir() -> Path:
    return Path(os.environ.get("MNIST_DIR") or ROOT.parent / "shared" / "data" / "mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = _mnist_dir()
    if (
        not (path / "t10k-images-idx3-ubyte.gz").exists()
        and not (path / "t10k-images-idx3-ubyte").exists()
    ):
        pytest.fail(f"MNIST not found in {path}: set MNIST_DIR (tests never download it)")
    return path


ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="session")
def bundle() -> Path:
    """The shipped bundle the server serves."""
    if not (ARTIFACTS / "manifest.json").is_file():
        pytest.fail(f"no bundle in {ARTIFACTS}: run python -m export first")
    return ARTIFACTS


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    """The 10,000 MNIST test digits (uint8 [N, 28, 28], ink high) and their labels."""
    from training.data import load_split

    test = load_split(mnist_dir, "test")
    return test.images, test.labels


@pytest.fixture(scope="session")
def smoke_run(mnist_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One `python -m training --smoke` run, as a user runs it, shared by every test that
    needs a training run (its directory and the finished process). Tests that change the run
    work on a copy."""
    out = tmp_path_factory.mktemp("smoke")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "--smoke",
            "--data-dir",
            str(mnist_dir),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="session")
def shared_server(bundle):
    """One `python -m server` on the shipped bundle (CPU, batches of up to 256), shared by the
    tests that only read from it: none stops it, signals it or counts its metrics or log."""
    from tests.live import LiveServer

    s = LiveServer("--artifacts", str(bundle), "--device", "cpu", "--max-batch", "256")
    yield s
    assert s.stop() == 0, s.log


def post_batches(url: str, images, size: int = 250, threads: int = 4) -> list[dict]:
    """POST /predict's answers for uint8 digits [N, 28, 28], sent as batches of `size` PNGs,
    `threads` batches at a time; in order."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tests.uploads import png

    def post(start: int) -> list[dict]:
        chunk = images[start : start + size]
        files = [("image", (f"{i}.png", png(img), "image/png")) for i, img in enumerate(chunk)]
        r = requests.post(url + "/predict", files=files, timeout=300)
        r.raise_for_status()
        return r.json()["results"]

    with ThreadPoolExecutor(threads) as pool:
        return [a for chunk in pool.map(post, range(0, len(images), size)) for a in chunk]


@pytest.fixture(scope="session")
def served_mnist(shared_server, mnist_test) -> list[dict]:
    """The shared server's answers to all 10,000 MNIST test digits, each sent as a PNG."""
    return post_batches(shared_server.url, mnist_test[0])
