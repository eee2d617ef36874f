"""MNIST from its original IDX files: reading, checking, splitting and sampling.

Everything here works on numpy arrays or torch tensors that already sit on the training
device; no per-sample Python runs once the arrays are loaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IMAGE_SIZE = 28
NUM_CLASSES = 10
SPLITS = {
    # split: (image file, label file, expected count)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}


class MnistDataError(Exception):
    """A missing, truncated or malformed MNIST file. The message is one line for the user."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, 28, 28], ink is high (white on black), as MNIST stores it
    labels: np.ndarray  # int64 [N]
    sha256: dict[str, str]  # of each uncompressed file, for provenance


def resolve_data_dir(data_dir: str | None) -> Path:
    """--data-dir wins, then $MNIST_DIR, then ./data/mnist."""
    return Path(data_dir or os.environ.get("MNIST_DIR") or "data/mnist")


def _find(data_dir: Path, stem: str) -> Path:
    # torchvision's download layout is accepted too, so --download and the plain files agree.
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise MnistDataError(
        f"{stem}[.gz] not found in {data_dir} (set --data-dir or MNIST_DIR, or pass --download)"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise MnistDataError(f"{path}: cannot be read ({e})") from None


def parse_idx(raw: bytes, magic: int, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    """Parses one IDX file and checks its header against what MNIST must look like."""
    ndim = 1 + len(shape_tail)
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise MnistDataError(f"{name}: file too short for an IDX header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise MnistDataError(f"{name}: bad magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != shape_tail:
        raise MnistDataError(f"{name}: item shape {dims[1:]}, expected {shape_tail}")
    expected = header_len + int(np.prod(dims))
    if len(raw) != expected:
        raise MnistDataError(f"{name}: {len(raw)} bytes, header promises {expected} (truncated?)")
    # A copy, so callers get a writable array torch can wrap without warnings.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def load_split(data_dir: Path, split: str) -> Split:
    image_stem, label_stem, count = SPLITS[split]
    image_path, label_path = _find(data_dir, image_stem), _find(data_dir, label_stem)
    image_raw, label_raw = _read_bytes(image_path), _read_bytes(label_path)
    images = parse_idx(image_raw, IMAGE_MAGIC, (IMAGE_SIZE, IMAGE_SIZE), image_path.name)
    labels = parse_idx(label_raw, LABEL_MAGIC, (), label_path.name)
    if len(images) != count or len(labels) != count:
        raise MnistDataError(
            f"{split} split has {len(images)} images and {len(labels)} labels, expected {count}"
        )
    if labels.max() >= NUM_CLASSES:
        raise MnistDataError(f"{label_path.name}: label {labels.max()} is not a digit")
    sha256 = {
        image_stem: hashlib.sha256(image_raw).hexdigest(),
        label_stem: hashlib.sha256(label_raw).hexdigest(),
    }
    return Split(images=images, labels=labels.astype(np.int64), sha256=sha256)


def download(data_dir: Path) -> None:
    """Fetches MNIST through torchvision (needs internet; tests never call this)."""
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(data_dir), train=train, download=True)


def stratified_split(labels: np.ndarray, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, holdout) with each class's share of the holdout as in `labels`."""
    if not 0 <= holdout < len(labels):
        raise ValueError(f"holdout {holdout} must be in [0, {len(labels)})")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder rounding so the per-class quotas add up to exactly `holdout`.
    exact = counts * holdout / len(labels)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(exact - quota)[::-1][: holdout - quota.sum()]] += 1
    held = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    held_idx = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_idx)
    return keep, held_idx


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified subset of `size` items (sorted)."""
    if size >= len(labels):
        return np.arange(len(labels))
    _, subset = stratified_split(labels, size, seed)
    return subset


def normalisation(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of pixel values scaled to [0, 1] (MNIST train: about 0.1307, 0.3081)."""
    x = images.astype(np.float64) / 255.0
    return float(x.mean()), float(x.std())


def one_hot(labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """[N] int labels -> [N, 10] float targets, with label smoothing spread over all classes."""
    target = torch.nn.functional.one_hot(labels, NUM_CLASSES).to(torch.float32)
    return target * (1.0 - smoothing) + smoothing / NUM_CLASSES


class BatchSampler:
    """Yields index batches for one epoch, drawn on the device.

    `balanced` draws every class equally often (with replacement, weights 1/class count);
    otherwise each epoch is a plain permutation.
    """

    def __init__(
        self, labels: torch.Tensor, batch_size: int, balanced: bool, generator: torch.Generator
    ):
        self.n = len(labels)
        self.batch_size = batch_size
        self.generator = generator
        self.weights = None
        if balanced:
            counts = torch.bincount(labels, minlength=NUM_CLASSES).to(torch.float32)
            self.weights = (1.0 / counts)[labels]

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        device = self.generator.device
        if self.weights is None:
            order = torch.randperm(self.n, generator=self.generator, device=device)
        else:
            order = torch.multinomial(
                self.weights.to(device), self.n, replacement=True, generator=self.generator
            )
        yield from order.split(self.batch_size)


@dataclass
class Mnist:
    """The splits of one run as uint8 tensors [N, 1, 28, 28] on the training device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float
    std: float
    checksums: dict[str, str]


def load_mnist(
    data_dir: Path, device: torch.device, val_size: int, subset: int, split_seed: int
) -> Mnist:
    """Loads, splits (stratified) and moves MNIST to `device`.

    The normalisation constants come from the training part only: the validation and test
    images must not leak into anything the model is fitted with.
    """
    train, test = load_split(data_dir, "train"), load_split(data_dir, "test")
    keep, held = stratified_split(train.labels, val_size, split_seed)
    if subset:
        keep = keep[stratified_subset(train.labels[keep], subset, split_seed)]
    mean, std = normalisation(train.images[keep])

    def to_device(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(device)
        return x, torch.from_numpy(labels).to(device)

    return Mnist(
        *to_device(train.images[keep], train.labels[keep]),
        *to_device(train.images[held], train.labels[held]),
        *to_device(test.images, test.labels),
        mean=mean,
        std=std,
        checksums={**train.sha256, **test.sha256},
    )
