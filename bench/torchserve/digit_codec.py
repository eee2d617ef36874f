"""What TorchServe's worker does around the model, as plain functions: a request's bytes -> a
normalised tensor, and the ensemble's outputs -> JSON answers like bench/seed_app.py's.

Kept apart from handler.py so that tests run it without TorchServe installed. The archive
carries it beside the handler (torch-model-archiver --extra-files), which imports it by its
bare name. It imports only torch and Pillow: the TorchServe virtualenv has no numpy.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from PIL import Image

# The multipart field our API and bench send images in. TorchServe hands each multipart field
# to the handler under its own name, and a raw body as "body" (some clients: "data").
FIELDS = ("image", "body", "data")


@dataclass(frozen=True)
class InputSpec:
    """The model input the bundle's manifest describes."""

    height: int
    width: int
    mean: float
    std: float

    @classmethod
    def from_manifest(cls, manifest: dict) -> InputSpec:
        spec = manifest["input"]
        return cls(spec["height"], spec["width"], spec["mean"], spec["std"])


def upload(request: dict) -> bytes | bytearray:
    """The image bytes of one request of TorchServe's batch."""
    for field in FIELDS:
        if request.get(field) is not None:
            return request[field]
    raise ValueError("no image: send it as the body or as the multipart field 'image'")


def to_tensor(data: bytes | bytearray, spec: InputSpec) -> torch.Tensor:
    """An encoded image -> float32 [1, H, W], as bench/seed_app.py preprocesses: grey, resized
    to the model's input, normalised with the manifest's mean and std. No fitting or centring
    (our server's preprocess does those): both baselines take the 28x28 MNIST PNG as it is."""
    image = Image.open(io.BytesIO(data)).convert("L").resize((spec.width, spec.height))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return (pixels.view(1, spec.height, spec.width).float() / 255.0 - spec.mean) / spec.std


def to_batch(requests: list[dict], spec: InputSpec) -> torch.Tensor:
    """TorchServe's batch of requests -> float32 [N, 1, H, W], in the batch's order."""
    return torch.stack([to_tensor(upload(r), spec) for r in requests])


def answers(
    label: torch.Tensor, votes: torch.Tensor, tie_broken: torch.Tensor, probabilities: torch.Tensor
) -> list[dict]:
    """The ensemble's outputs for N images (ensemble.onnx's, in its order) -> one answer each,
    in bench/seed_app.py's shape."""
    return [
        {
            "label": int(label[i]),
            "votes": votes[i].tolist(),
            "tie_broken": bool(tie_broken[i]),
            "models": [
                {"label": int(p.argmax()), "probabilities": p.tolist()} for p in probabilities[i]
            ],
        }
        for i in range(len(label))
    ]
