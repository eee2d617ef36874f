"""python -m training.whole_digit: the whole-digit check that reading a number leans on.

The three models read any image as some digit, and often surely: two touching digits read
whole as one of them (31 as 3), a digit cut in the wrong place as another (a 9 without its
loop's left half as a 7). This small network answers the question they cannot: is the fitted
image one whole digit, or two touching digits, a part of one, or a digit with a slice of its
neighbour? Its examples are made from MNIST training digits (never the validation or test
ones), fitted by the server's own preprocessing (server/preprocess.fit), so it sees what the
number mode hands it. Export ships it beside the models (export/whole_digit.py), and the
number mode weighs its cuts with it (server/segment.py) and flags a digit it scores low
(`not_one_digit`, server/predictor.py). It trains on the CPU in about 4 minutes.

Writes into --out: whole-digit.pt (weights, normalisation, settings) and metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from export.spec import SPEC
from server.errors import NoInk
from server.manifest import InputSpec
from server.preprocess import fit
from training.data import (
    MnistDataError,
    load_split,
    normalisation,
    resolve_data_dir,
    stratified_split,
)
from training.provenance import git_commit
from training.train import normalise

FORMAT = "whole-digit-checkpoint/1"
CHECKPOINT = "whole-digit.pt"
# What an example is; every kind but WHOLE is "not one whole digit".
WHOLE, PAIR, PART, SLIVER = range(4)
KINDS = ("whole", "pair", "part", "sliver")
INK = 0.1  # of full ink: a pixel darker than this is background when cropping
# The server fits each digit with the manifest's box and centre; mean and std do not matter
# to fitting, only to the tensors, which take the run's own normalisation.
FIT_SPEC = InputSpec(
    SPEC.input_name, SPEC.height, SPEC.width, 0.0, 1.0, True, SPEC.digit_box, SPEC.centre_of_mass
)


@dataclass
class WholeDigitConfig:
    out: str = "runs/whole-digit"
    data_dir: str | None = None
    examples: int = 80_000  # whole digits drawn; each comes with one example that is not
    val_examples: int = 5_000  # the same, from the validation digits, for the scores
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3  # one-cycle peak
    weight_decay: float = 1e-4
    seed: int = 0
    val_size: int = 5_000  # must match the run of the models: the same digits stay unseen
    split_seed: int = 0
    threads: int = 0  # 0: every core this process may use


class WholeDigitNet(nn.Module):
    """Two 5x5 convolutions (16 and 32 maps) with max pooling, 64 units, one logit: wider
    than LeNet-5's first layers, as what tells a 3 with a touching 1 from a 3 is fine detail."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images [N, 1, 28, 28] -> logits [N] of "one whole digit"."""
        return self.layers(x).squeeze(1)


class Scored(nn.Module):
    """The network as shipped: the probability that each image is one whole digit, from
    images normalised as the bundle's input says (`given`), which may differ a little from the
    normalisation it was trained with (`trained`: a smoke run of the models measures it on a
    subset)."""

    def __init__(self, net: WholeDigitNet, trained: dict, given: dict):
        super().__init__()
        self.net = net
        self.scale = given["std"] / trained["std"]
        self.shift = (given["mean"] - trained["mean"]) / trained["std"]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image * self.scale + self.shift))


def _crop(d: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(d.max(1) > INK), np.flatnonzero(d.max(0) > INK)
    return d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _pair(a: np.ndarray, b: np.ndarray, overlap: int, rng: np.random.Generator) -> np.ndarray:
    """b right of a, on one baseline give or take 2 px, moved left until some row of b meets
    a's ink, then `overlap` px further: touching as written, not merely boxes overlapping."""
    drift = int(rng.integers(-2, 3))
    h = max(a.shape[0], b.shape[0]) + 6
    w = a.shape[1] + b.shape[1] + 4
    page = np.zeros((h, w), np.float32)
    ta = h - 3 - a.shape[0]
    page[ta : ta + a.shape[0], : a.shape[1]] = a
    tb = min(max(h - 3 - b.shape[0] + drift, 0), h - b.shape[0])
    reach = []
    for r in range(b.shape[0]):
        in_a, in_b = np.flatnonzero(page[tb + r] > 0.3), np.flatnonzero(b[r] > 0.3)
        if in_a.size and in_b.size:
            reach.append(in_a[-1] - in_b[0])
    x = (max(reach) if reach else a.shape[1]) - overlap + 1
    x = max(0, min(x, w - b.shape[1]))
    area = page[tb : tb + b.shape[0], x : x + b.shape[1]]
    np.maximum(area, b, out=area)
    return _crop(page)


def _part(a: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """One side of a digit cut by a slanted line through its middle half (a wrong cut)."""
    h, w = a.shape
    if w < 6:
        return None
    x = int(rng.integers(max(2, round(0.25 * w)), max(3, round(0.75 * w))))
    slope = rng.uniform(-0.3, 0.3)
    left = np.arange(w)[None, :] < x + slope * (np.arange(h)[:, None] - h / 2)
    part = a * (left if rng.random() < 0.5 else ~left)
    if part.sum() < 0.2 * a.sum() or (part > INK).sum() < 10:
        return None
    return _crop(part)


def _with_sliver(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A whole digit with the near edge of its neighbour (10-35 % of its width) touching it:
    what a cut a little off its place leaves."""
    k = max(2, round(rng.uniform(0.1, 0.35) * b.shape[1]))
    overlap = int(rng.integers(0, 2))
    if rng.random() < 0.5:
        return _pair(a, b[:, :k], overlap, rng)
    return _pair(b[:, -k:], a, overlap, rng)


def _at_scale(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half the examples enlarged 1.5-4 times (bilinear) before the fit: uploads are larger
    than MNIST's 20 px, and what the fit makes of smooth large strokes differs."""
    if rng.random() < 0.5:
        return ink
    f = rng.uniform(1.5, 4.0)
    size = (max(1, round(ink.shape[1] * f)), max(1, round(ink.shape[0] * f)))
    im = Image.fromarray(ink, mode="F").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def examples(digits: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` whole digits drawn from `digits` (uint8 [N, 28, 28]) and as many examples that
    are not one whole digit (pairs, parts and slivers in turn), fitted as the server fits a
    digit: (uint8 [M, 28, 28], kinds [M])."""
    rng = np.random.default_rng(seed)
    ink = digits.astype(np.float32) / 255.0
    images, kinds = [], []
    for i in range(count):
        a = _crop(ink[rng.integers(len(ink))])
        images.append(fit(_at_scale(a, rng), FIT_SPEC))
        kinds.append(WHOLE)
        b = _crop(ink[rng.integers(len(ink))])
        kind = (PAIR, PART, SLIVER)[i % 3]
        if kind == PAIR:
            other = _pair(a, b, int(rng.integers(0, 4)), rng)
        elif kind == PART:
            other = _part(a, rng)
        else:
            other = _with_sliver(a, b, rng)
        if other is None:
            continue
        try:
            images.append(fit(_at_scale(other, rng), FIT_SPEC))
        except NoInk:
            continue
        kinds.append(kind)
    return np.stack(images), np.array(kinds, dtype=np.int64)


def to_tensor(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """uint8 [N, 28, 28] -> normalised float32 [N, 1, 28, 28], as the models' inputs are."""
    return normalise(torch.from_numpy(images).unsqueeze(1), mean, std)


@torch.no_grad()
def scores(net: nn.Module, x: torch.Tensor, batch: int = 1024) -> np.ndarray:
    """The probability that each image is one whole digit."""
    net.eval()
    return np.concatenate(
        [torch.sigmoid(net(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    )


def report(p: np.ndarray, kinds: np.ndarray) -> dict:
    """Accuracy at 0.5, each kind's share on the right side of 0.5, and quantiles of whole
    digits' scores (where a threshold for flagging would fall)."""
    whole = kinds == WHOLE
    right = np.where(whole, p >= 0.5, p < 0.5)
    return {
        "images": len(p),
        "accuracy": float(right.mean()),
        "right_by_kind": {k: float(right[kinds == i].mean()) for i, k in enumerate(KINDS)},
        "whole_quantiles": {
            str(q): float(np.quantile(p[whole], q)) for q in (0.005, 0.01, 0.02, 0.05)
        },
    }


def train(cfg: WholeDigitConfig, command: str) -> dict:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    mnist = load_split(resolve_data_dir(cfg.data_dir), "train")
    keep, held = stratified_split(mnist.labels, cfg.val_size, cfg.split_seed)
    # The models' own normalisation (training part of the split): the server hands this
    # network the tensors it hands them.
    mean, std = normalisation(mnist.images[keep])
    t0 = time.perf_counter()
    x_img, kinds = examples(mnist.images[keep], cfg.examples, cfg.seed)
    v_img, v_kinds = examples(mnist.images[held], cfg.val_examples, cfg.seed + 1)
    made = time.perf_counter() - t0
    x, y = to_tensor(x_img, mean, std), torch.from_numpy(kinds == WHOLE).float()
    vx = to_tensor(v_img, mean, std)
    net = WholeDigitNet()
    opt = torch.optim.AdamW(net.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            b = order[i : i + cfg.batch_size]
            # A pixel's shift either way: the fit's rounding of the centre of mass.
            dy, dx = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(x[b], shifts=(dy, dx), dims=(2, 3))
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xb), y[b]).backward()
            opt.step()
            sched.step()
        val = report(scores(net, vx), v_kinds)
        history.append(val["accuracy"])
        print(f"epoch {epoch + 1}/{cfg.epochs}: validation accuracy {val['accuracy']:.4f}")
    torch.save(
        {
            "format": FORMAT,
            "state_dict": net.state_dict(),
            "normalisation": {"mean": mean, "std": std},
            "config": dataclasses.asdict(cfg),
            "command": command,
        },
        out / CHECKPOINT,
    )
    metrics = {
        "validation": val,
        "history": history,
        "examples": {"train": len(x), "validation": len(vx)},
        "seconds": {"examples": made, "total": time.perf_counter() - t0},
        "git": git_commit(),
        "command": command,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def load(path: Path) -> tuple[WholeDigitNet, dict]:
    """The network in eval mode and its checkpoint; ValueError when it is not one."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a whole-digit checkpoint")
    net = WholeDigitNet()
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), ckpt


def parse_args(argv: list[str] | None) -> WholeDigitConfig:
    d = WholeDigitConfig()
    p = argparse.ArgumentParser(
        prog="python -m training.whole_digit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=d.out, help="run directory (default: %(default)s)")
    p.add_argument(
        "--data-dir", help="folder with the MNIST IDX files (default: $MNIST_DIR, then data/mnist)"
    )
    p.add_argument(
        "--examples", type=int, default=d.examples, help="whole digits drawn (default: %(default)s)"
    )
    p.add_argument("--val-examples", type=int, default=d.val_examples)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-size", type=int, default=d.val_size)
    p.add_argument("--split-seed", type=int, default=d.split_seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument(
        "--smoke", action="store_true", help="2,000 examples, one epoch: the pipeline in seconds"
    )
    a = p.parse_args(argv)
    cfg = WholeDigitConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(d)})
    if a.smoke:
        cfg = dataclasses.replace(cfg, examples=2_000, val_examples=500, epochs=1)
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    args = argv if argv is not None else sys.argv[1:]
    try:
        m = train(cfg, shlex.join(["python", "-m", "training.whole_digit", *args]))
    except MnistDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v = m["validation"]
    print(
        f"whole-digit check: {v['accuracy']:.4f} on {v['images']} validation examples "
        f"({', '.join(f'{k} {r:.3f}' for k, r in v['right_by_kind'].items())}); "
        f"{m['seconds']['total']:.0f} s -> {Path(cfg.out) / CHECKPOINT}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
