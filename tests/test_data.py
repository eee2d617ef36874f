import gzip
import shutil

import numpy as np
import pytest
import torch

from tests.live import run
from training.data import (
    IMAGE_MAGIC,
    LABEL_MAGIC,
    BatchSampler,
    MnistDataError,
    load_mnist,
    load_split,
    normalisation,
    one_hot,
    parse_idx,
    stratified_split,
    stratified_subset,
)


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_reads_images_and_labels():
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    parsed = parse_idx(idx_bytes(IMAGE_MAGIC, images), IMAGE_MAGIC, (28, 28), "x")
    assert parsed.shape == (2, 28, 28) and (parsed == images).all()
    labels = parse_idx(idx_bytes(LABEL_MAGIC, np.array([3, 7])), LABEL_MAGIC, (), "y")
    assert labels.tolist() == [3, 7]


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "too short"),
        (idx_bytes(LABEL_MAGIC, np.zeros((2, 28, 28))), "bad magic"),
        (idx_bytes(IMAGE_MAGIC, np.zeros((2, 27, 28))), "item shape"),
        (idx_bytes(IMAGE_MAGIC, np.zeros((2, 28, 28)))[:-5], "truncated"),
        (idx_bytes(IMAGE_MAGIC, np.zeros((2, 28, 28))) + b"x", "header promises"),
    ],
)
def test_parse_idx_rejects_malformed_files(raw, message):
    with pytest.raises(MnistDataError, match=message):
        parse_idx(raw, IMAGE_MAGIC, (28, 28), "file")


def test_real_mnist_loads_gz_and_raw_alike(mnist_dir, tmp_path):
    test = load_split(mnist_dir, "test")
    assert test.images.shape == (10_000, 28, 28) and test.images.dtype == np.uint8
    # Published label counts of the test set (shared/data/mnist/README.md).
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(test.labels).tolist() == counts
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(mnist_dir / f"{name}.gz") as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    raw = load_split(tmp_path, "test")
    assert (raw.images == test.images).all() and raw.sha256 == test.sha256


def test_missing_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(
        MnistDataError, match=r"t10k-images-idx3-ubyte\[\.gz\] not found.*MNIST_DIR"
    ):
        load_split(tmp_path, "test")


def test_corrupt_gzip_is_a_clear_error(mnist_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, tmp_path / name)
    data = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(MnistDataError, match="cannot be read"):
        load_split(tmp_path, "test")


def test_training_cli_reports_missing_data_in_one_line(tmp_path):
    proc = run(
        "training", "--smoke", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "run")
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert (
        proc.stderr.startswith("error: train-images-idx3-ubyte") and "Traceback" not in proc.stderr
    )


def test_stratified_split_is_exact_disjoint_and_balanced():
    rng = np.random.default_rng(0)
    labels = rng.choice(10, size=6000, p=np.linspace(0.05, 0.15, 10))
    keep, held = stratified_split(labels, 500, seed=1)
    assert len(held) == 500 and len(keep) == 5500
    assert not set(keep) & set(held) and len(set(keep) | set(held)) == 6000
    expected = np.bincount(labels) * 500 / 6000
    assert np.abs(np.bincount(labels[held], minlength=10) - expected).max() < 1.0
    again, _ = stratified_split(labels, 500, seed=1)
    assert (again == keep).all()


@pytest.mark.parametrize("size", [10, 100, 999])
def test_stratified_subset_has_the_asked_size_and_every_class(size):
    labels = np.repeat(np.arange(10), 100)
    subset = stratified_subset(labels, size, seed=0)
    assert len(subset) == size == len(set(subset))
    if size >= 10:
        assert np.bincount(labels[subset], minlength=10).min() == size // 10


def test_one_hot_with_and_without_smoothing():
    labels = torch.tensor([0, 3, 9])
    hard = one_hot(labels)
    assert hard.shape == (3, 10) and hard.sum(1).tolist() == [1, 1, 1]
    assert hard.argmax(1).tolist() == [0, 3, 9] and hard.max() == 1
    soft = one_hot(labels, smoothing=0.1)
    assert torch.allclose(soft.sum(1), torch.ones(3))
    assert soft[1, 3].item() == pytest.approx(0.91) and soft[1, 0].item() == pytest.approx(0.01)


def test_epoch_sampler_is_a_permutation():
    labels = torch.arange(1000) % 10
    sampler = BatchSampler(labels, 128, balanced=False, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 8
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))


def test_balanced_sampler_draws_rare_classes_as_often_as_common_ones():
    labels = torch.cat([torch.zeros(9000, dtype=torch.long), torch.arange(1, 10).repeat(100)])
    sampler = BatchSampler(labels, 500, balanced=True, generator=torch.Generator().manual_seed(0))
    drawn = labels[torch.cat(list(sampler))]
    share = torch.bincount(drawn, minlength=10).float() / len(drawn)
    assert (share - 0.1).abs().max() < 0.02, share


def test_load_mnist_normalises_with_training_split_only(mnist_dir):
    data = load_mnist(mnist_dir, torch.device("cpu"), val_size=5000, subset=0, split_seed=0)
    assert data.train_x.shape == (55_000, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.val_x.shape == (5000, 1, 28, 28) and data.test_x.shape == (10_000, 1, 28, 28)
    assert (data.mean, data.std) == normalisation(data.train_x.numpy())
    # The classic MNIST constants, for a sanity check of the pipeline (0.1307, 0.3081).
    assert data.mean == pytest.approx(0.1307, abs=2e-3) and data.std == pytest.approx(
        0.3081, abs=2e-3
    )
    val_counts = torch.bincount(data.val_y, minlength=10).float()
    assert (val_counts / 5000 - torch.bincount(data.train_y).float() / 55_000).abs().max() < 1e-3
