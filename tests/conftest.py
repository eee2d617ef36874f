"""Shared fixtures. MNIST comes from $MNIST_DIR or ../shared/data/mnist beside the repo."""

from __future__ import annotations

import os
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
