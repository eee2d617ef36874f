"""Checkpoints that rebuild their own model.

A checkpoint carries the model's constructor arguments and the input normalisation next to
the weights, so export and evaluation never need a second copy of the settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from training.model import LeNet5, build

FORMAT = "lenet5-checkpoint/1"


class CheckpointError(Exception):
    """A checkpoint that is missing or is not one of ours. The message is one line."""


def save(path: Path, model: LeNet5, normalisation: dict, variant, **extra) -> None:
    payload = {
        "format": FORMAT,
        "model_args": dataclasses.asdict(model.args),
        "state_dict": model.state_dict(),
        "normalisation": normalisation,
        "variant": dataclasses.asdict(variant),
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind a crash


def load(path: Path, map_location: str | torch.device = "cpu") -> tuple[LeNet5, dict]:
    """Returns (model in eval mode, the checkpoint dict)."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        # weights_only: a checkpoint is data, never code to run (no pickle execution).
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    model = build(ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
