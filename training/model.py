"""LeNet-5 and the knobs on which our three variants differ.

Every variant keeps LeNet-5's shape: two 5x5 convolutions with 6 and 16 maps, each followed by
2x2 subsampling, then dense layers of 120, 84 and 10 units. A teacher (training/config.py's
TEACHERS, never shipped) has the same layers, `width` times as many maps and units. `ModelArgs`
is everything needed to rebuild a model, and checkpoints store it, so loading never repeats the
settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training import cpu_kernels

ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": cpu_kernels.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}
POOLS = {"max": cpu_kernels.MaxPool2d, "avg": cpu_kernels.AvgPool2d}
NORMS = ("none", "batch")


@dataclass
class ModelArgs:
    activation: str = "relu"
    pool: str = "max"
    norm: str = "none"
    dropout: float = 0.0
    # pad=2 gives LeNet-5's original 32x32 input. The border is filled with the *normalised*
    # background value: zero padding after normalisation would draw a grey frame round the digit.
    pad: int = 0
    pad_value: float = 0.0
    num_classes: int = 10
    width: int = 1  # maps and units, times LeNet-5's; 1 for every model that ships

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {sorted(POOLS)}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}")
        if self.width < 1:
            raise ValueError("width must be 1 or more")


class LeNet5(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        act, pool = ACTIVATIONS[args.activation], POOLS[args.pool]
        bn = args.norm == "batch"
        side = (28 + 2 * args.pad - 4) // 2  # after conv1 and pool
        side = (side - 4) // 2  # after conv2 and pool

        def conv(cin: int, cout: int) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 5, bias=not bn)]
            return layers + ([nn.BatchNorm2d(cout)] if bn else []) + [act(), pool(2)]

        k = args.width
        self.features = nn.Sequential(*conv(1, 6 * k), *conv(6 * k, 16 * k))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * k * side * side, 120 * k),
            act(),
            nn.Dropout(args.dropout),
            nn.Linear(120 * k, 84 * k),
            act(),
            nn.Dropout(args.dropout),
            nn.Linear(84 * k, args.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, 28, 28] normalised images -> [N, classes] logits."""
        if self.args.pad:
            p = self.args.pad
            x = nn.functional.pad(x, (p, p, p, p), value=self.args.pad_value)
        return self.classifier(self.features(x))


def build(args: ModelArgs | dict) -> LeNet5:
    return LeNet5(args if isinstance(args, ModelArgs) else ModelArgs(**args))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary(args: ModelArgs) -> str:
    """One line a person can read, e.g. for the manifest and the model card."""
    size = 28 + 2 * args.pad
    norm = "+BN" if args.norm == "batch" else ""
    k = args.width
    return (
        f"LeNet-5{f' x{k}' if k > 1 else ''} {size}x{size} in, conv5x5x{6 * k}{norm}-"
        f"{args.pool}pool-conv5x5x{16 * k}{norm}-{args.pool}pool-fc{120 * k}-fc{84 * k}-"
        f"fc{args.num_classes}, {args.activation}, dropout {args.dropout:g}"
    )
