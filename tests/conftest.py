"""Shared fixtures. MNIST comes from $MNIST_DIR or ../shared/data/mnist beside the repo."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
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


def once_per_session(tmp_path_factory, name: str, make) -> Path:
    """The folder `name` that `make(folder)` fills once per test session: under pytest-xdist
    the first worker to ask makes it while the others wait, and all of them read it."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the parent of the workers' own temporary folders
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".done").touch()
    return folder


@pytest.fixture(scope="session")
def smoke_run(mnist_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One `python -m training --smoke` run, as a user runs it, shared by every test that
    needs a training run (its directory and the finished process). Tests that change the run
    work on a copy."""
    from tests.live import run

    def train(folder: Path) -> None:
        out = str(folder / "run")
        # Seconds on an idle machine; the timeout is for a hang, not a busy machine.
        proc = run("training", "--smoke", "--data-dir", str(mnist_dir), "--out", out, timeout=900)
        assert proc.returncode == 0, proc.stderr
        (folder / "process.json").write_text(json.dumps([proc.args, proc.stdout, proc.stderr]))

    folder = once_per_session(tmp_path_factory, "smoke", train)
    args, stdout, stderr = json.loads((folder / "process.json").read_text())
    return folder / "run", subprocess.CompletedProcess(args, 0, stdout, stderr)


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
def served_mnist(shared_server, mnist_test, tmp_path_factory) -> list[dict]:
    """The shared server's answers to all 10,000 MNIST test digits, each sent as a PNG."""

    def post(folder: Path) -> None:
        answers = post_batches(shared_server.url, mnist_test[0])
        (folder / "answers.json").write_text(json.dumps(answers))

    folder = once_per_session(tmp_path_factory, "served_mnist", post)
    return json.loads((folder / "answers.json").read_text())


# The modules that take longest, started first under pytest-xdist so that none is left running
# alone at the end.
FIRST = ("test_training_cli.py", "test_export.py", "test_runtime.py", "test_web_page.py")


def pytest_collection_modifyitems(config, items):
    """Under `pytest -n 2 --dist loadfile` (scripts/test.sh) each worker takes whole modules,
    so a module's fixtures (servers, browsers) start once; the longest modules go first."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # set in xdist's workers only
        return
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))
