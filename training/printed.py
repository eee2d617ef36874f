"""Digits typeset in the installed fonts, as labelled training images.

MNIST is American handwriting: its 1 is a bare stroke. Printed in most sans-serif fonts a 1
has a flag, and models trained on MNIST alone read it as 7 (in over 35 of the 165 fonts
installed by scripts/test.sh), while a typed number in a form field is what many uploads are.
A few thousand typeset digits among the 55,000 handwritten ones teach the models the printed
forms. The fonts are split as the non-digits' are (training/nondigits.py): the held-out part
is never trained on, and is what the benchmark prints its digits in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.nondigits import CANVAS, FONT_DIRS, fit, fonts, split

# Fonts whose digit characters are not digits: Zapf Dingbats' symbols, and keyboard keys drawn
# around each character.
NOT_DIGITS = frozenset({"D050000L", "Linux Biolinum Keyboard O"})


def digit_fonts(part: str, dirs: tuple[Path, ...] = FONT_DIRS) -> list[Path]:
    """The installed fonts of `part` ("train" or "held") that typeset digits as digits."""
    found = []
    for path in split(fonts(dirs), part):
        try:
            family = ImageFont.truetype(str(path), 12).getname()[0]
        except OSError:
            continue
        if family not in NOT_DIGITS:
            found.append(path)
    return found


def _glyph(digit: int, font: ImageFont.FreeTypeFont, rng: np.random.Generator) -> np.ndarray:
    im = Image.new("L", (CANVAS, CANVAS), 0)
    # Filled only, never outlined: an outlined 1 is a thin ring, which is a 0. A stroke of
    # 0-2 px around the glyph makes it bolder than its font.
    ImageDraw.Draw(im).text(
        (CANVAS / 2, CANVAS / 2),
        str(digit),
        font=font,
        fill=255,
        anchor="mm",
        stroke_width=int(rng.integers(0, 3)),
        stroke_fill=255,
    )
    im = im.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32) / 255.0


def empty() -> tuple[np.ndarray, np.ndarray]:
    """No typeset digits: images uint8 [0, 28, 28], labels int64 [0]."""
    return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)


def generate(
    count: int, seed: int, part: str = "train", font_dirs: tuple[Path, ...] = FONT_DIRS
) -> tuple[np.ndarray, np.ndarray]:
    """`count` typeset digits, uint8 [N, 28, 28] fitted as MNIST fits a digit, and their labels
    int64 [N]; every digit equally often, fonts drawn at random. Empty without fonts."""
    rng = np.random.default_rng([seed, 7, part == "held"])
    loaded = [ImageFont.truetype(str(p), int(CANVAS * 0.6)) for p in digit_fonts(part, font_dirs)]
    images: list[np.ndarray] = []
    labels: list[int] = []
    while loaded and len(images) < count:
        digit = len(images) % 10
        fitted = fit(_glyph(digit, loaded[int(rng.integers(len(loaded)))], rng))
        if fitted is not None:
            images.append(fitted)
            labels.append(digit)
    if not images:
        return empty()
    return np.stack(images), np.array(labels, dtype=np.int64)
