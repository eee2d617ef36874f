"""Images that are not digits, made in the training stage for outlier exposure.

The models learn to spread their probability over all ten digits on these (Hendrycks et al.,
"Deep anomaly detection with outlier exposure", 2019), and export chooses the uncertainty
thresholds on a held-out part. Kinds:

  letter    letters in every installed font (Debian's fonts-* packages)
  symbol    punctuation and symbols in the same fonts
  shape     filled polygons, stars, hearts, arrows, crosses, blobs
  frame     outlined rectangles, triangles and diamonds, grids, hatching
  scribble  smooth random pen strokes, zig-zags and spirals
  fashion   Fashion-MNIST (Debian's dataset-fashion-mnist), where installed

Every image is drawn as ink on a large canvas and then fitted as MNIST (and the server's
preprocessing) fits a digit: the ink's longer side scaled to 20 pixels, the centre of mass
moved to pixel (14, 14). So the models see a non-digit as they will see an upload of one.
Nothing is downloaded: a missing font package or dataset leaves its kinds out, and says so.
Fonts and Fashion-MNIST images are split: `part="train"` and `part="held"` never share a
font or an image, so the held-out part measures what the models did not see.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
KINDS = ("letter", "symbol", "shape", "frame", "scribble", "fashion")
# Left out because they are digits in most fonts too: O o (0), I l i j (1), Z z (2), S s (5),
# g (9); and single strokes (/ \\ | ( ) [ ] ! -), which fitted to 20 pixels are a 1. Kept,
# although a pen's may pass for a digit: D Q (0), G b (6), B (8), q (9): a font sets them
# apart (a straight side or stem, a tail), and models never shown them read printed b and q
# as 6 and 9 at full confidence.
LETTERS = "ABCDEFGHJKLMNPQRTUVWXYabcdefhkmnpqrtuvwxy"
SYMBOLS = "#%&@?+=*$<>~^"
CANVAS = 96
BOX = 20  # the fitted ink's longer side, as MNIST's digits
CENTRE = 14.0  # the fitted ink's centre of mass, row and column


@dataclass
class NonDigits:
    images: np.ndarray  # uint8 [N, 28, 28], ink high, fitted like an MNIST digit
    kinds: np.ndarray  # int64 [N], index into `names`
    names: tuple[str, ...] = KINDS
    missing: list[str] = field(default_factory=list)  # what was not installed, one line each

    def counts(self) -> dict[str, int]:
        return {n: int((self.kinds == i).sum()) for i, n in enumerate(self.names)}


def fonts(dirs: tuple[Path, ...] = FONT_DIRS) -> list[Path]:
    found: list[Path] = []
    for d in dirs:
        if d.is_dir():
            found += sorted(p for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return found


def split(items: list, part: str) -> list:
    # Every fourth item is held out: fonts are sorted by path, so families spread over both.
    held = items[::4]
    return held if part == "held" else [x for i, x in enumerate(items) if i % 4]


def fit(ink: np.ndarray) -> np.ndarray | None:
    """Ink in [0, 1] [H, W] -> uint8 [28, 28] fitted as MNIST; None when there is no ink."""
    rows, cols = np.flatnonzero(ink.max(1) > 0.05), np.flatnonzero(ink.max(0) > 0.05)
    if not len(rows):
        return None
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    small = np.asarray(im, dtype=np.float32)
    out = np.zeros((28, 28), dtype=np.float32)
    total = small.sum()
    if total <= 0:
        return None
    yy, xx = np.mgrid[0 : small.shape[0], 0 : small.shape[1]]
    top = round(CENTRE - float((yy * small).sum() / total))
    left = round(CENTRE - float((xx * small).sum() / total))
    top = min(max(top, 0), 28 - small.shape[0])
    left = min(max(left, 0), 28 - small.shape[1])
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.clip(out, 0, 255).astype(np.uint8)


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("L", (CANVAS, CANVAS), 0)
    return im, ImageDraw.Draw(im)


def _ink(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float32) / 255.0


def _glyph(text: str, font: ImageFont.FreeTypeFont, rng: np.random.Generator) -> np.ndarray:
    im, d = _canvas()
    d.text((CANVAS / 2, CANVAS / 2), text, font=font, fill=255, anchor="mm")
    if rng.random() < 0.3:  # an outline pen instead of a filled glyph
        im = Image.new("L", (CANVAS, CANVAS), 0)
        ImageDraw.Draw(im).text(
            (CANVAS / 2, CANVAS / 2),
            text,
            font=font,
            fill=0,
            anchor="mm",
            stroke_width=2,
            stroke_fill=255,
        )
    return _ink(im.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR))


def _width(rng: np.random.Generator) -> int:
    return int(rng.integers(3, 11))


def _shape(rng: np.random.Generator) -> np.ndarray:
    im, d = _canvas()
    c, r = CANVAS / 2, CANVAS * rng.uniform(0.3, 0.45)
    kind = int(rng.integers(7))
    if kind == 0:  # a star with 4 to 8 points
        n = int(rng.integers(4, 9))
        inner = rng.uniform(0.3, 0.6)
        pts = [
            (
                c + r * (1 if i % 2 == 0 else inner) * math.cos(math.pi * i / n),
                c + r * (1 if i % 2 == 0 else inner) * math.sin(math.pi * i / n),
            )
            for i in range(2 * n)
        ]
        d.polygon(pts, fill=255)
    elif kind == 1:  # a random polygon
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = r * rng.uniform(0.5, 1.0, n)
        d.polygon(
            [
                (c + a * math.cos(t), c + a * math.sin(t))
                for a, t in zip(radii, angles, strict=True)
            ],
            fill=255,
        )
    elif kind == 2:  # a filled rectangle or ellipse of any proportions
        w, h = r * rng.uniform(0.4, 1.0), r * rng.uniform(0.4, 1.0)
        (d.rectangle if rng.random() < 0.5 else d.ellipse)((c - w, c - h, c + w, c + h), fill=255)
    elif kind == 3:  # a heart
        d.ellipse((c - r, c - r * 0.8, c, c + r * 0.2), fill=255)
        d.ellipse((c, c - r * 0.8, c + r, c + r * 0.2), fill=255)
        d.polygon([(c - r * 0.95, c - r * 0.1), (c + r * 0.95, c - r * 0.1), (c, c + r)], fill=255)
    elif kind == 4:  # a thick cross or plus
        w = r * rng.uniform(0.15, 0.35)
        d.rectangle((c - w, c - r, c + w, c + r), fill=255)
        d.rectangle((c - r, c - w, c + r, c + w), fill=255)
    elif kind == 5:  # an arrow
        w = r * rng.uniform(0.15, 0.3)
        d.polygon(
            [
                (c - r, c - w),
                (c + r * 0.2, c - w),
                (c + r * 0.2, c - 2.2 * w),
                (c + r, c),
                (c + r * 0.2, c + 2.2 * w),
                (c + r * 0.2, c + w),
                (c - r, c + w),
            ],
            fill=255,
        )
    else:  # a smiley, a face: a filled disc with holes, or a ring with eyes and a mouth
        d.ellipse((c - r, c - r, c + r, c + r), fill=255)
        e = r * 0.18
        for x in (c - r * 0.4, c + r * 0.4):
            d.ellipse((x - e, c - r * 0.35 - e, x + e, c - r * 0.35 + e), fill=0)
        d.arc((c - r * 0.55, c - r * 0.3, c + r * 0.55, c + r * 0.6), 20, 160, fill=0, width=4)
    return _ink(im.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR))


def _frame(rng: np.random.Generator) -> np.ndarray:
    im, d = _canvas()
    c, r, w = CANVAS / 2, CANVAS * rng.uniform(0.3, 0.45), _width(rng)
    kind = int(rng.integers(5))
    if kind == 0:  # a rectangle outline, sometimes with a second one inside
        a, b = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.5, 1.0)
        d.rectangle((c - a, c - b, c + a, c + b), outline=255, width=w)
        if rng.random() < 0.3:
            d.rectangle((c - a / 2, c - b / 2, c + a / 2, c + b / 2), outline=255, width=w)
    elif kind == 1:  # a triangle or diamond outline
        n = 3 if rng.random() < 0.5 else 4
        pts = [
            (c + r * math.cos(2 * math.pi * i / n), c + r * math.sin(2 * math.pi * i / n))
            for i in range(n)
        ]
        d.line([*pts, pts[0]], fill=255, width=w, joint="curve")
    elif kind == 2:  # a grid (#-like or finer)
        n = int(rng.integers(2, 5))
        for t in np.linspace(c - r, c + r, n + 1):
            d.line((t, c - r, t, c + r), fill=255, width=w)
            d.line((c - r, t, c + r, t), fill=255, width=w)
    elif kind == 3:  # hatching: parallel strokes
        n = int(rng.integers(3, 7))
        for t in np.linspace(c - r, c + r, n):
            d.line((t - r * 0.3, c - r, t + r * 0.3, c + r), fill=255, width=w)
    else:  # a star or cross made of strokes
        n = int(rng.integers(3, 6))
        for i in range(n):
            t = math.pi * i / n
            d.line(
                (
                    c - r * math.cos(t),
                    c - r * math.sin(t),
                    c + r * math.cos(t),
                    c + r * math.sin(t),
                ),
                fill=255,
                width=w,
            )
    return _ink(im.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR))


def _scribble(rng: np.random.Generator) -> np.ndarray:
    im, d = _canvas()
    c, r, w = CANVAS / 2, CANVAS * 0.42, _width(rng)
    kind = int(rng.integers(4))
    if kind == 0:  # a smooth random stroke through 5 to 12 points
        pts = rng.uniform(c - r, c + r, (int(rng.integers(5, 13)), 2))
        for _ in range(3):  # Chaikin's corner cutting, three rounds: a pen's curve
            q = np.repeat(pts, 2, axis=0)[1:-1].reshape(-1, 2, 2)
            pts = np.concatenate(
                [0.75 * q[:, 0] + 0.25 * q[:, 1], 0.25 * q[:, 0] + 0.75 * q[:, 1]], 1
            ).reshape(-1, 2)
        d.line([tuple(p) for p in pts], fill=255, width=w, joint="curve")
    elif kind == 1:  # a zig-zag
        n = int(rng.integers(4, 9))
        xs = np.linspace(c - r, c + r, n)
        ys = c + np.where(np.arange(n) % 2 == 0, -1, 1) * r * rng.uniform(0.2, 0.8)
        d.line(list(zip(xs, ys, strict=True)), fill=255, width=w, joint="curve")
    elif kind == 2:  # a spiral of 1.5 to 3 turns
        turns = rng.uniform(1.5, 3.0)
        t = np.linspace(0, 2 * math.pi * turns, 200)
        rad = r * t / t[-1]
        d.line(list(zip(c + rad * np.cos(t), c + rad * np.sin(t), strict=True)), fill=255, width=w)
    else:  # a loop gone round 2 to 4 times, wobbling and drifting: a doodle, not a 0's overdraw
        t = np.linspace(0, 2 * math.pi * rng.uniform(2, 4), 240)
        wobble = 1 + rng.uniform(0.15, 0.4) * np.sin(rng.integers(2, 5) * t + rng.uniform(0, 6))
        drift = rng.uniform(0.25, 0.6) * r * t / (2 * math.pi) * np.array([[1.0], [0.0]])
        aspect = rng.uniform(0.6, 1.0)
        x = r * 0.6 * wobble * np.cos(t) + drift[0]
        y = r * 0.6 * aspect * wobble * np.sin(t)
        x -= (x.max() + x.min()) / 2
        d.line(list(zip(c + x, c + y, strict=True)), fill=255, width=w, joint="curve")
    return _ink(im.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR))


def _fashion(part: str, dirs: tuple[Path, ...]) -> np.ndarray | None:
    """Fashion-MNIST images (uint8 [N, 28, 28]): the training file for `train`, the test
    file for `held`; None when the dataset is not installed."""
    name = "t10k-images-idx3-ubyte.gz" if part == "held" else "train-images-idx3-ubyte.gz"
    for d in dirs:
        path = d / name
        if path.is_file():
            with gzip.open(path, "rb") as f:
                raw = f.read()
            count = int.from_bytes(raw[4:8], "big")
            return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, 28, 28)
    return None


def generate(
    count: int,
    seed: int,
    part: str = "train",
    font_dirs: tuple[Path, ...] = FONT_DIRS,
    fashion_dirs: tuple[Path, ...] = FASHION_DIRS,
) -> NonDigits:
    """`count` non-digit images, as evenly as possible over the kinds that are installed."""
    if part not in ("train", "held"):
        raise ValueError("part must be train or held")
    rng = np.random.default_rng([seed, part == "held"])
    missing = []
    font_paths = split(fonts(font_dirs), part)
    loaded = []
    for p in font_paths:
        try:
            loaded.append(ImageFont.truetype(str(p), int(CANVAS * 0.6)))
        except OSError:
            continue
    if not loaded:
        missing.append(
            "no fonts found (apt-get install fonts-dejavu-core fonts-liberation "
            "fonts-freefont-ttf): no letters or symbols"
        )
    fashion = _fashion(part, fashion_dirs)
    if fashion is None:
        missing.append(
            "Fashion-MNIST not found (apt-get install dataset-fashion-mnist): no clothing images"
        )
    kinds = [k for k in KINDS if (k not in ("letter", "symbol") or loaded)]
    kinds = [k for k in kinds if k != "fashion" or fashion is not None]
    images: list[np.ndarray] = []
    labels: list[int] = []
    fashion_order = rng.permutation(len(fashion)) if fashion is not None else None
    per_kind = -(-count // len(kinds))
    for kind in kinds:
        made = 0
        while made < per_kind and len(images) < count:
            if kind == "fashion":
                ink = fashion[fashion_order[made % len(fashion)]].astype(np.float32) / 255.0
            elif kind in ("letter", "symbol"):
                chars = LETTERS if kind == "letter" else SYMBOLS
                font = loaded[int(rng.integers(len(loaded)))]
                ink = _glyph(chars[int(rng.integers(len(chars)))], font, rng)
            else:
                ink = {"shape": _shape, "frame": _frame, "scribble": _scribble}[kind](rng)
            fitted = fit(ink)
            if fitted is None:  # a glyph the font does not have
                continue
            images.append(fitted)
            labels.append(KINDS.index(kind))
            made += 1
    return NonDigits(
        images=np.stack(images) if images else np.zeros((0, 28, 28), np.uint8),
        kinds=np.array(labels, dtype=np.int64),
        missing=missing,
    )
