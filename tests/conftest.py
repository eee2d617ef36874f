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
