import dataclasses

import pytest
import torch

from training import checkpoint
from training.config import VARIANTS
from training.model import build


def test_checkpoint_rebuilds_the_same_model_from_its_own_arguments(tmp_path):
    v = VARIANTS["lenet5-bn-gelu"]
    torch.manual_seed(0)
    model = build(dataclasses.replace(v.model, pad_value=-0.4242))
    with torch.no_grad():  # non-trivial running statistics, so BN state round-trips too
        model.features[1].running_mean.uniform_()
    model.eval()
    path = tmp_path / "best.pt"
    checkpoint.save(path, model, {"mean": 0.13, "std": 0.31}, v, epoch=3, val_acc=0.5)
    loaded, ckpt = checkpoint.load(path)
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    assert loaded.args == model.args and ckpt["normalisation"] == {"mean": 0.13, "std": 0.31}
    assert ckpt["variant"]["name"] == v.name and ckpt["epoch"] == 3
    assert not loaded.training


def test_foreign_or_missing_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a lenet5-checkpoint"):
        checkpoint.load(tmp_path / "other.pt")
