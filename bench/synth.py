"""Realistic uploads made from MNIST test digits, and images that are not digits at all.

Real users send phone photos, scans, screenshots and canvas drawings, not 28x28 tensors. Each
`KINDS` entry turns one MNIST digit (uint8 28x28, ink high) into the bytes of such an upload;
`NOT_DIGITS` entries make images that should be flagged `uncertain` or refused. Everything is
seeded, so a kind and an index always give the same file. Used by tests/test_preprocess.py,
bench/realworld.py (accuracy per kind) and bench/__main__.py (payloads).
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from training import nondigits
from training import printed as typeset


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _shape(digit: np.ndarray, height: int, thicken: int = 0) -> np.ndarray:
    """The digit as a smooth high-resolution ink mask in [0, 1], `height` pixels tall overall."""
    im = Image.fromarray(digit).resize((height, height), Image.Resampling.BICUBIC)
    im = im.filter(ImageFilter.GaussianBlur(height / 90))
    if thicken:
        im = im.filter(ImageFilter.MaxFilter(thicken | 1))
    ink = np.asarray(im, dtype=np.float32) / 255.0
    # Sharpen the blurry upscale into strokes with soft edges, as a pen leaves them.
    return np.clip((ink - 0.3) / 0.3, 0.0, 1.0)


def _paste(canvas: np.ndarray, mask: np.ndarray, top: int, left: int) -> np.ndarray:
    """Full-size ink mask with `mask` at (top, left)."""
    out = np.zeros(canvas.shape[:2], dtype=np.float32)
    h, w = mask.shape
    out[top : top + h, left : left + w] = mask
    return out


def _lighting(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth illumination field: a linear gradient and a vignette, 0.65 to 1."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    grad = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) * rng.uniform(0.1, 0.3)
    r = np.hypot((xx - w / 2) / w, (yy - h / 2) / h)
    field = 1.0 - grad - grad.min() - rng.uniform(0.1, 0.25) * r**2 * 2
    return np.clip(field, 0.65, 1.0)


def _rotate(mask: np.ndarray, degrees: float) -> np.ndarray:
    im = Image.fromarray((mask * 255).astype(np.uint8))
    im = im.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(im, dtype=np.float32) / 255.0


def photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Phone photo: ink on tinted paper, uneven light, noise, slight blur, off-centre, JPEG."""
    rgb, _ = _photographed(digit, rng)
    return _phone_jpeg(rgb, rng)


def _photographed(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """photo's picture before the lens's blur and the JPEG, and its ink mask."""
    h, w = 900, 1200
    mask = _rotate(_shape(digit, int(rng.integers(300, 520))), rng.uniform(-8, 8))
    top = int(rng.integers(0, h - mask.shape[0]))
    left = int(rng.integers(0, w - mask.shape[1]))
    ink = _paste(np.zeros((h, w)), mask, top, left)
    paper = np.array([rng.uniform(0.85, 0.97), rng.uniform(0.83, 0.95), rng.uniform(0.75, 0.9)])
    pen = _pen(rng)
    rgb = paper * (1 - ink[..., None]) + pen * ink[..., None]
    return rgb * _lighting(h, w, rng)[..., None] + rng.normal(0, 0.025, (h, w, 3)), ink


def _pen(rng: np.random.Generator) -> np.ndarray:
    """A ballpoint's colour, RGB: near black to dark blue."""
    return np.array([rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.45)])


def _phone_jpeg(rgb: np.ndarray, rng: np.random.Generator) -> bytes:
    im = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return _encode(im, "JPEG", quality=int(rng.integers(70, 92)))


def _desk(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A wooden desk, darker than paper: brown with a wavy grain, RGB in [0, 1]."""
    base = np.array([rng.uniform(0.25, 0.55), rng.uniform(0.18, 0.4), rng.uniform(0.1, 0.3)])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wave = np.sin(xx / rng.uniform(8, 30) + 3 * np.sin(yy / rng.uniform(40, 120)))
    return base * (1 + 0.06 * wave[..., None]) + rng.normal(0, 0.02, (h, w, 3))


def page_on_a_desk(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """photo's page not filling the frame: the desk shows along one or two sides, 4-12 % of
    the frame deep and slightly askew, never over the digit."""
    rgb, ink = _photographed(digit, rng)
    h, w = ink.shape
    # Where the desk may not reach: the digit and 16 px or more around it.
    near = Image.fromarray((ink > 0.1).astype(np.uint8) * 255).reduce(8)
    near = np.asarray(
        near.filter(ImageFilter.MaxFilter(5)).resize((w, h), Image.Resampling.NEAREST)
    )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    desk = np.zeros((h, w), dtype=bool)
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        depth, tilt = rng.uniform(0.04, 0.12), rng.uniform(-0.05, 0.05)
        for _ in range(5):  # shallower until clear of the digit
            strip = (
                xx < w * depth + tilt * yy,
                xx > w * (1 - depth) + tilt * yy,
                yy < h * depth + tilt * xx,
                yy > h * (1 - depth) + tilt * xx,
            )[side]
            if not (strip & (near > 0)).any():
                desk |= strip
                break
            depth /= 2
    rgb[desk] = _desk(h, w, rng)[desk]
    return _phone_jpeg(rgb, rng)


def sticky_note(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A sticky note (yellow, pink or green) with the digit on it, turned up to 12 degrees
    on a desk, 20-70 % of a phone photo: uneven light, slight blur, JPEG."""
    h, w = 900, 1200
    side = int(rng.integers(450, 850))
    note = np.array([(0.98, 0.92, 0.45), (0.98, 0.7, 0.8), (0.7, 0.95, 0.6)][rng.integers(3)])
    mask = _shape(digit, int(side * rng.uniform(0.5, 0.75)))
    on_note = np.zeros((side, side), np.float32)
    at = (side - mask.shape[0]) // 2
    on_note[at : at + mask.shape[0], at : at + mask.shape[1]] = mask
    turn = rng.uniform(-12, 12)
    sheet, ink = _rotate(np.ones((side, side), np.float32), turn), _rotate(on_note, turn)
    top = int(rng.integers(0, max(1, h - sheet.shape[0])))
    left = int(rng.integers(0, w - sheet.shape[1]))
    sh, sw = min(sheet.shape[0], h - top), sheet.shape[1]
    sheet, ink = sheet[:sh, :, None], ink[:sh, :, None]
    pen = _pen(rng)
    rgb = _desk(h, w, rng)
    area = rgb[top : top + sh, left : left + sw]
    area[:] = area * (1 - sheet) + (note * (1 - ink) + pen * ink) * sheet
    return _phone_jpeg(rgb * _lighting(h, w, rng)[..., None], rng)


def shadowed(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """photo with a hard-edged shadow over part of the page, the phone's or a hand's: the
    paper and ink under it 30-55 % darker, its edge 10-60 px soft, a straight or bowed line
    across the photo or the rim of a round shape, over the digit or beside it."""
    rgb, ink = _photographed(digit, rng)
    h, w = ink.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = xx - w / 2, yy - h / 2
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(angle), math.sin(angle)
        across, along = c * x + s * y, c * y - s * x
        inside = across - rng.uniform(-200, 200) + rng.uniform(-6e-4, 6e-4) * along**2
    else:
        rx, ry = rng.uniform(250, 700), rng.uniform(250, 700)
        x, y = x - rng.uniform(-w / 2, w / 2), y - rng.uniform(-h / 2, h / 2)
        inside = (1 - np.hypot(x / rx, y / ry)) * min(rx, ry)
    shade = 0.5 * (1 + np.tanh(inside / (2 * rng.uniform(10, 60))))  # a logistic edge
    return _phone_jpeg(rgb * (1 - rng.uniform(0.3, 0.55) * shade)[..., None], rng)


def thumb_in_frame(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """photo of a page held in the hand: a thumb reaching in from a side, skin-coloured,
    rounded and soft-edged, clear of the digit."""
    rgb, ink = _photographed(digit, rng)
    h, w = ink.shape
    near = ink > 0.1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    side, along = int(rng.integers(4)), rng.uniform(0.15, 0.85)
    cx, cy = ((along * w, h + 40), (along * w, -40), (-40, along * h), (w + 40, along * h))[side]
    reach, width = rng.uniform(180, 320), rng.uniform(100, 160)  # half-axes, px
    for _ in range(5):  # shorter until clear of the digit
        ry, rx = (reach, width) if side < 2 else (width, reach)
        r = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        thumb = np.clip((1 - r) * rng.uniform(3, 8), 0, 1)
        if not (thumb[near] > 0).any():
            break
        reach *= 0.7
    else:
        thumb[:] = 0
    skin = np.array([0.85, 0.62, 0.5]) * rng.uniform(0.7, 1.0)
    shaded = skin * (0.8 + 0.2 * np.clip(1 - r, 0, 1))[..., None]  # rounded: darker at its rim
    return _phone_jpeg(rgb * (1 - thumb[..., None]) + shaded * thumb[..., None], rng)


def coloured_paper(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Blue or grey ink on yellow, pink or green paper, scanned to PNG."""
    papers = [(0.98, 0.93, 0.55), (0.97, 0.8, 0.85), (0.75, 0.93, 0.78), (0.8, 0.88, 0.98)]
    inks = [(0.1, 0.15, 0.6), (0.35, 0.35, 0.38), (0.05, 0.05, 0.05)]
    paper = np.array(papers[rng.integers(len(papers))])
    pen = np.array(inks[rng.integers(len(inks))])
    mask = _shape(digit, int(rng.integers(120, 260)))
    size = int(mask.shape[0] * rng.uniform(1.2, 1.8))
    off = (size - mask.shape[0]) // 2
    ink = _paste(
        np.zeros((size, size)), mask, off + int(rng.integers(-off // 2, off // 2 + 1)), off
    )
    rgb = paper * (1 - ink[..., None]) + pen * ink[..., None] + rng.normal(0, 0.01, (size, size, 3))
    return _encode(Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)), "PNG")


def scan(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Grey scan of pencil (weak contrast) on white, with a dark page edge on one side; TIFF."""
    h, w = 700, 500
    mask = _shape(digit, int(rng.integers(200, 380)))
    ink = _paste(np.zeros((h, w)), mask, (h - mask.shape[0]) // 2, (w - mask.shape[1]) // 2)
    grey = 0.95 - ink * rng.uniform(0.35, 0.6) + rng.normal(0, 0.02, (h, w))
    grey[:, : int(rng.integers(8, 30))] = 0.15  # the scanner lid's shadow at the page edge
    return _encode(Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8), "L"), "TIFF")


def screenshot(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A crisp black-on-white digit in a small PNG, as cut from a screen."""
    mask = _shape(digit, 150)
    grey = 1.0 - _paste(np.zeros((200, 200)), mask, 25, 25)
    return _encode(Image.fromarray((grey * 255).astype(np.uint8), "L"), "PNG")


def canvas(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A web-canvas drawing: thick black strokes on a transparent 280x280 RGBA PNG."""
    mask = _shape(digit, 280, thicken=int(rng.integers(5, 13)))
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[..., 3] = (mask * 255).astype(np.uint8)
    return _encode(Image.fromarray(rgba, "RGBA"), "PNG")


def transparent_white(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """White strokes on transparency (invisible on a white page): RGB says nothing, alpha does."""
    mask = _shape(digit, 200)
    rgba = np.full((200, 200, 4), 255, dtype=np.uint8)
    rgba[..., 3] = (mask * 255).astype(np.uint8)
    return _encode(Image.fromarray(rgba, "RGBA"), "PNG")


def inverted(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Chalk on a blackboard: light strokes on a dark green background, JPEG."""
    mask = _shape(digit, int(rng.integers(200, 400)))
    size = mask.shape[0] + 100
    ink = _paste(np.zeros((size, size)), mask, 50, 50)
    board = np.array([0.12, 0.22, 0.16])
    chalk = np.array([0.9, 0.9, 0.88])
    rgb = (
        board * (1 - ink[..., None]) + chalk * ink[..., None] + rng.normal(0, 0.03, (*ink.shape, 3))
    )
    return _encode(Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)), "JPEG", quality=85)


def off_centre(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A small digit in a corner of a large white image, with a few specks of dust."""
    h, w = 600, 800
    mask = _shape(digit, int(rng.integers(60, 110)))
    top = (
        int(rng.integers(5, 120))
        if rng.random() < 0.5
        else int(rng.integers(450, h - mask.shape[0]))
    )
    left = (
        int(rng.integers(5, 150))
        if rng.random() < 0.5
        else int(rng.integers(600, w - mask.shape[1]))
    )
    ink = _paste(np.zeros((h, w)), mask, top, left)
    for _ in range(6):  # dust: specks well away from the digit
        y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        if abs(y - top) > 150 and abs(x - left) > 150:
            ink[y : y + 2, x : x + 2] = 1.0
    grey = 1.0 - 0.9 * ink
    return _encode(Image.fromarray((grey * 255).astype(np.uint8), "L"), "PNG")


def rotated(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Written at a slant: rotated 10 to 20 degrees either way, BMP."""
    angle = rng.uniform(10, 20) * rng.choice([-1, 1])
    mask = _rotate(_shape(digit, 200), angle)
    grey = 1.0 - mask * 0.85
    return _encode(Image.fromarray((grey * 255).astype(np.uint8), "L").convert("RGB"), "BMP")


def tiny(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A thumbnail: 16x16, black on white, GIF."""
    im = Image.fromarray(255 - digit).resize((16, 16), Image.Resampling.LANCZOS)
    return _encode(im.convert("P"), "GIF")


def mnist_png(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The MNIST digit itself, as a 28x28 PNG: the train/serve contract."""
    return _encode(Image.fromarray(digit, "L"), "PNG")


def bench_payloads(digit: np.ndarray, rng: np.random.Generator) -> dict[str, bytes]:
    """What `python -m bench` sends, made from one digit: a 28x28 PNG, a 280x280 canvas PNG and
    a 1000x1000 photo JPEG (a phone photo cropped square and resized)."""
    out = {"digit_28_png": mnist_png(digit, rng), "canvas_280_png": canvas(digit, rng)}
    square = Image.open(io.BytesIO(photo(digit, rng))).crop((100, 0, 1100, 900))
    out["photo_1000_jpeg"] = _encode(square.resize((1000, 1000)), "JPEG", quality=85)
    return out


# ---- what people send besides clean uploads (issue 17) ---------------------------------------
# Digits cropped to their own ink, digits in forms, small digits in big photos and blurry
# thumbnails, each kind from a generator of its own.


def _ink_box(digit: np.ndarray) -> np.ndarray:
    """The digit cut to every trace of its ink, the faintest rim included."""
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _tight_shape(digit: np.ndarray, height: int, thicken: int = 0) -> np.ndarray:
    """`_shape` cut to its ink: the digit's own strokes reach the mask's four sides."""
    mask = _shape(digit, round(height * 28 / 20), thicken)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _grey_bytes(grey: np.ndarray, rng: np.random.Generator, jpeg: bool) -> bytes:
    im = Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8), "L")
    if jpeg:
        return _encode(im, "JPEG", quality=int(rng.integers(70, 93)))
    return _encode(im, "PNG")


def _thinned(mask: np.ndarray) -> np.ndarray:
    """The strokes of a boolean mask thinned to their centre lines, a pixel wide (Zhang and
    Suen, 1984: in two alternating passes, outline pixels are peeled away where that neither
    breaks a stroke nor shortens one's end)."""
    out = np.pad(mask, 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            p = out
            # The eight neighbours, clockwise from the one above: P2 .. P9.
            n = [
                p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:],
                p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2],
            ]  # fmt: skip
            count = sum(x.astype(np.int32) for x in n)
            turns = sum(
                ((a == 0) & (b == 1)).astype(np.int32) for a, b in itertools.pairwise([*n, n[0]])
            )
            if step == 0:
                away = (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
            else:
                away = (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
            peel = (p[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (turns == 1) & away
            if peel.any():
                out[1:-1, 1:-1][peel] = 0
                changed = True
        if not changed:
            return out[1:-1, 1:-1].astype(bool)


def thin_pen(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A digit drawn with a fine pen or a stylus on a large canvas: the handwriting's centre
    line, 1, 3 or 5 px wide, 50-85 % of a 300-600 px white picture's side, PNG."""
    side = int(rng.integers(300, 601))
    mask = _tight_shape(digit, round(side * rng.uniform(0.5, 0.85))) > 0.5
    line = Image.fromarray(_thinned(mask).astype(np.uint8) * 255)
    pen = int(rng.integers(1, 5))
    if pen > 1:
        line = line.filter(ImageFilter.MaxFilter(pen | 1))
    ink = np.asarray(line.filter(ImageFilter.GaussianBlur(0.5)), dtype=np.float32) / 255.0
    h, w = ink.shape
    top, left = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
    grey = 1.0 - _paste(np.zeros((side, side)), np.clip(ink * 1.5, 0, 1), top, left)
    return _encode(Image.fromarray((grey * 255).astype(np.uint8), "L"), "PNG")


def tight_crop(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Cropped to the digit's own ink (0 or 1 px of margin), either polarity, upscaled 1-10x
    by any filter; a third are phone-photo JPEGs (noise, tinted paper), the rest PNGs."""
    crop = np.pad(_ink_box(digit), int(rng.integers(0, 2)))
    factor = rng.uniform(1, 10)
    h, w = crop.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    filters = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)
    im = Image.fromarray(crop).resize(size, filters[int(rng.integers(3))])
    ink = np.asarray(im, dtype=np.float32) / 255.0
    paper, pen = rng.uniform(0.8, 1.0), rng.uniform(0.0, 0.25)
    if rng.random() < 0.5:  # light strokes on a dark ground
        paper, pen = 1.0 - paper, 1.0 - pen
    grey = paper + (pen - paper) * ink
    photo = rng.random() < 1 / 3
    if photo:
        grey = grey + rng.normal(0, 0.02, grey.shape)
    return _grey_bytes(grey, rng, jpeg=photo)


def _form_sheet(
    ink: np.ndarray, lines: np.ndarray, rng: np.random.Generator, jpeg: bool | None = None
) -> bytes:
    """A pen's ink and a form's printed lines (both masks in [0, 1]) on paper: RGB, noise,
    PNG or JPEG. The lines are black, grey, or a light colour such as forms print in."""
    h, w = ink.shape
    paper = np.array([rng.uniform(0.9, 1.0), rng.uniform(0.9, 1.0), rng.uniform(0.85, 1.0)])
    pens = [(0.05, 0.05, 0.08), (0.1, 0.15, 0.55), (0.25, 0.25, 0.28)]
    pen = np.array(pens[int(rng.integers(len(pens)))])
    line_colours = [
        (0.0, 0.0, 0.0),
        (0.45, 0.45, 0.45),
        (0.55, 0.7, 0.9),  # light blue, as ruled paper
        (0.9, 0.5, 0.5),  # red
        (0.5, 0.75, 0.55),  # green
    ]
    line = np.array(line_colours[int(rng.integers(len(line_colours)))])
    rgb = paper * np.ones((h, w, 1), np.float32)
    rgb = rgb * (1 - lines[..., None]) + line * lines[..., None]
    rgb = rgb * (1 - ink[..., None]) + pen * ink[..., None]  # the pen writes over the lines
    rgb = rgb + rng.normal(0, 0.015, (h, w, 3))
    im = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    if jpeg if jpeg is not None else rng.random() < 0.5:
        return _encode(im, "JPEG", quality=int(rng.integers(75, 93)))
    return _encode(im, "PNG")


def _hline(lines: np.ndarray, y: float, x0: int, x1: int, width: int) -> None:
    top = max(0, round(y - width / 2))
    lines[top : top + width, max(0, x0) : max(0, x1)] = 1.0


def _vline(lines: np.ndarray, x: float, y0: int, y1: int, width: int) -> None:
    left = max(0, round(x - width / 2))
    lines[max(0, y0) : max(0, y1), left : left + width] = 1.0


def boxed(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A digit written in a form's box, photographed or scanned: the box's sides may touch or
    cross the strokes, the picture may be cut at the box's edges or show the neighbouring
    cells of the row."""
    return _form_sheet(*_boxed_masks(digit, rng), rng)


def _boxed_masks(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`boxed`'s ink and lines."""
    mask = _tight_shape(digit, int(rng.integers(70, 180)))
    dh, dw = mask.shape
    # Gaps between the strokes and each side of the box: a quarter touch or cross a stroke.
    gaps = [
        int(rng.integers(-2, 1)) if rng.random() < 0.25 else int(rng.integers(1, dh // 4 + 2))
        for _ in range(4)
    ]
    width = int(rng.integers(1, max(2, dh // 30) + 1))
    bh = dh + gaps[0] + gaps[2]
    bw = max(dw + gaps[1] + gaps[3], int(bh * rng.uniform(0.6, 1.0)))
    outside = int(rng.integers(0, dh // 3 + 1)) if rng.random() < 0.7 else 0
    pad = outside + width + 4  # room for strokes that cross the box, cut off below
    h, w = bh + 2 * pad, 3 * bw + 2 * pad
    ink, lines = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    top, left = pad, pad + bw
    extra = bw - (dw + gaps[1] + gaps[3])
    ink[top + gaps[0] : top + gaps[0] + dh, left + gaps[1] + extra // 2 :][:, :dw] = mask
    for y in (top, top + bh):
        _hline(lines, y, 0, w, width)
    for x in (left - bw, left, left + bw, left + 2 * bw):
        _vline(lines, x, top - width, top + bh + width, width)
    # The picture: the box alone, cut at its lines, or with some paper and of the cells beside.
    reach = int(rng.integers(0, bw // 2 + 1)) if outside else 0
    y0, y1 = top - outside - width // 2, top + bh + outside + (width + 1) // 2
    x0, x1 = left - reach - width // 2, left + bw + reach + (width + 1) // 2
    return ink[y0:y1, x0:x1], lines[y0:y1, x0:x1]


def comb(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A comb field: a baseline with short ticks between the characters; the digit stands on
    (or dips through) the baseline between two ticks, with empty cells beside it."""
    mask = _tight_shape(digit, int(rng.integers(60, 160)))
    dh, dw = mask.shape
    width = int(rng.integers(1, max(2, dh // 30) + 1))
    cell = int(dh * rng.uniform(0.8, 1.2))
    tick = int(dh * rng.uniform(0.2, 0.45))
    cells = int(rng.integers(1, 4))  # empty cells each side
    above = int(rng.integers(3, dh // 3 + 4))
    below = int(rng.integers(3, dh // 4 + 4))
    h, w = above + dh + below, cell * (2 * cells + 1) + 2 * width
    ink, lines = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    base = above + dh + int(rng.integers(-dh // 12 - 1, 3))  # on, above or through the line
    _hline(lines, base, 0, w, width)
    for k in range(2 * cells + 2):
        _vline(lines, width + k * cell, base - tick, base + 1, width)
    left = width + cells * cell + max(0, (cell - dw) // 2) + int(rng.integers(-2, 3))
    region = ink[above : above + dh, max(0, left) :][:, :dw]
    region[:] = mask[:, : region.shape[1]]
    return _form_sheet(ink, lines, rng)


def ruled(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Written on ruled paper: thin lines across the page, a line or two through the digit,
    sometimes the red margin line down one side."""
    ink, lines = _ruled_masks(digit, rng)
    return _form_sheet(ink, lines * rng.uniform(0.5, 1.0), rng)


def _ruled_masks(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`ruled`'s ink and lines."""
    mask = _tight_shape(digit, int(rng.integers(70, 180)))
    dh, dw = mask.shape
    pitch = int(dh * rng.uniform(0.45, 0.9))
    width = int(rng.integers(1, 3))
    h, w = dh + int(rng.integers(20, 3 * pitch)), dw + int(rng.integers(40, 5 * dw))
    ink, lines = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    top, left = int(rng.integers(5, h - dh - 4)), int(rng.integers(5, w - dw - 4))
    ink[top : top + dh, left : left + dw] = mask
    for y in np.arange(rng.uniform(0, pitch), h, pitch):
        _hline(lines, y, 0, w, width)
    if rng.random() < 0.3 and left > 25:
        _vline(lines, int(rng.integers(5, left - 15)), 0, h, width + 1)
    return ink, lines


def grid(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Written on squared (graph) paper: a grid of thin lines, the digit over several squares."""
    mask = _tight_shape(digit, int(rng.integers(70, 180)))
    dh, dw = mask.shape
    pitch = int(dh * rng.uniform(0.2, 0.5))
    width = int(rng.integers(1, 3))
    h, w = dh + int(rng.integers(20, 200)), dw + int(rng.integers(20, 200))
    ink, lines = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    top, left = int(rng.integers(5, h - dh - 4)), int(rng.integers(5, w - dw - 4))
    ink[top : top + dh, left : left + dw] = mask
    for y in np.arange(rng.uniform(0, pitch), h, pitch):
        _hline(lines, y, 0, w, width)
    for x in np.arange(rng.uniform(0, pitch), w, pitch):
        _vline(lines, x, 0, h, width)
    return _form_sheet(ink, lines * rng.uniform(0.4, 1.0), rng)


def underlined(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A digit with a line drawn under it (by hand or printed), near or touching its foot."""
    mask = _tight_shape(digit, int(rng.integers(70, 180)))
    dh, dw = mask.shape
    width = int(rng.integers(1, max(2, dh // 20) + 1))
    h, w = dh + int(rng.integers(30, 120)), dw + int(rng.integers(40, 250))
    ink, lines = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    top, left = int(rng.integers(8, h - dh - 20)), int(rng.integers(5, w - dw - 4))
    ink[top : top + dh, left : left + dw] = mask
    y = top + dh + int(rng.integers(-2, max(3, dh // 8)))
    x0 = int(rng.integers(0, max(1, left - 5)))
    x1 = int(rng.integers(min(w, left + dw + 5), w + 1))
    _hline(lines, y, x0, x1, width)
    return _form_sheet(ink, lines, rng)


def tilted_form(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A form photographed or scanned askew: a digit in a box (as `boxed`) or on ruled paper
    (as `ruled`), the whole sheet turned 2 to 6 degrees either way, so that its lines are
    a few degrees off level and upright."""
    masks = _boxed_masks if rng.random() < 0.5 else _ruled_masks
    ink, lines = masks(digit, rng)
    angle = rng.uniform(2, 6) * rng.choice([-1, 1])
    ink, lines = _rotate(ink, angle), _rotate(lines, angle)
    return _form_sheet(ink, lines * rng.uniform(0.5, 1.0), rng)


def small_in_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A small digit (3-5 % of the longer side) in a large phone photo of paper with grain,
    specks of dust and uneven light: 2000x1500 or 1500x2000, JPEG."""
    return _small_on_paper(digit, rng, (1500, 2000), (0.03, 0.05))


def on_a_page(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A digit written small on a page photographed whole: 1.3-2.5 % of a 12-megapixel
    photo's longer side (52-100 px), the light, grain and dust of small_in_photo."""
    return _small_on_paper(digit, rng, (3000, 4000), (0.013, 0.025))


def _small_on_paper(
    digit: np.ndarray, rng: np.random.Generator, size: tuple[int, int], share: tuple[float, float]
) -> bytes:
    """The digit `share` of the longer side of a photo of paper of `size` (either way up)."""
    h, w = size if rng.random() < 0.7 else size[::-1]
    height = int(max(h, w) * rng.uniform(*share))
    mask = _tight_shape(digit, height)
    dh, dw = mask.shape
    top, left = int(rng.integers(50, h - dh - 50)), int(rng.integers(50, w - dw - 50))
    # The paper's grain and light at a quarter of the size, then enlarged: cheap and smooth.
    qh, qw = h // 4, w // 4
    field = _lighting(qh, qw, rng) * rng.uniform(0.8, 0.95)
    field = field + rng.normal(0, 0.012, (qh, qw))
    grey = np.asarray(
        Image.fromarray(field.astype(np.float32), "F").resize((w, h), Image.Resampling.BILINEAR)
    ).copy()
    for _ in range(int(rng.integers(5, 30))):  # dust and specks, well away from the digit
        y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
        if abs(y - top) > 2 * dh or abs(x - left) > 2 * dw:
            r = int(rng.integers(2, 7))
            grey[y : y + r, x : x + r] *= rng.uniform(0.2, 0.7)
    pen = rng.uniform(0.05, 0.3)
    patch = grey[top : top + dh, left : left + dw]
    patch[:] = patch * (1 - mask) + pen * mask
    im = Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8), "L")
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    return _encode(im.convert("RGB"), "JPEG", quality=int(rng.integers(75, 92)))


def blurry_thumbnail(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """An 8x8 to 16x16 grey thumbnail of a digit that fills it (as other digit datasets keep
    them), enlarged 4-20x by a smooth filter: blurry, touching the frame, either polarity."""
    box = _ink_box(digit)
    h, w = box.shape
    side = max(h, w)
    square = np.zeros((side, side), np.uint8)
    square[(side - h) // 2 :][:h, (side - w) // 2 :][:, :w] = box
    n = int(rng.integers(8, 17))
    thumb = Image.fromarray(square).resize((n, n), Image.Resampling.BOX)
    levels = int(rng.choice([16, 256]))  # some sources keep 17 grey levels, as sklearn's digits
    thumb = thumb.point(lambda v: round(round(v * (levels - 1) / 255) * 255 / (levels - 1)))
    big = n * int(rng.integers(4, 21))
    filters = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)
    im = thumb.resize((big, big), filters[int(rng.integers(3))])
    if rng.random() < 0.5:
        im = ImageOps.invert(im)
    return _encode(im, "PNG")


KINDS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "mnist_png": mnist_png,
    "photo": photo,
    "coloured_paper": coloured_paper,
    "scan": scan,
    "screenshot": screenshot,
    "canvas": canvas,
    "thin_pen": thin_pen,
    "transparent_white": transparent_white,
    "inverted": inverted,
    "off_centre": off_centre,
    "rotated": rotated,
    "tiny": tiny,
    "tight_crop": tight_crop,
    "boxed": boxed,
    "comb": comb,
    "ruled": ruled,
    "grid": grid,
    "underlined": underlined,
    "tilted_form": tilted_form,
    "small_in_photo": small_in_photo,
    "on_a_page": on_a_page,
    "blurry_thumbnail": blurry_thumbnail,
    "page_on_a_desk": page_on_a_desk,
    "sticky_note": sticky_note,
    "shadowed": shadowed,
    "thumb_in_frame": thumb_in_frame,
}


def make(kind: str, digit: np.ndarray, seed: int) -> bytes:
    return KINDS[kind](digit, np.random.default_rng(seed))


def held_out_fonts() -> list[Path]:
    """The installed fonts (Debian's fonts-* packages) that training never draws letters or
    digits in: training/nondigits.py's held-out part."""
    return nondigits.split(nondigits.fonts(), "held")


def digit_fonts() -> list[Path]:
    """The held-out fonts whose digit characters are digits (not dingbats or keyboard keys)."""
    return typeset.digit_fonts("held")


def printed(text: str, font: Path, rng: np.random.Generator, size: int = 160) -> bytes:
    """`text` typeset in `font`, black on white with a little noise, as a PNG."""
    f = ImageFont.truetype(str(font), size)
    im = Image.new("L", (size * 2, size * 2), 255)
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((0, 0), text, font=f)
    x = (im.width - (box[2] - box[0])) // 2 - box[0]
    y = (im.height - (box[3] - box[1])) // 2 - box[1]
    draw.text((x, y), text, font=f, fill=0)
    arr = np.asarray(im, dtype=np.float32) / 255 + rng.normal(0, 0.02, (im.height, im.width))
    return _encode(Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)), "PNG")


# ---- images that are not digits -------------------------------------------------------------


def _draw(size: int, paint: Callable[[ImageDraw.ImageDraw, int], None]) -> bytes:
    im = Image.new("L", (size, size), 255)
    paint(ImageDraw.Draw(im), size)
    return _encode(im, "PNG")


def not_digit_shape(rng: np.random.Generator) -> bytes:
    """Filled squares, triangles, stars, crosses, arrows and hearts (outlines of circles and
    thin lines would be a 0 or a 1, so those are left out on purpose)."""
    s = 240
    kind = rng.integers(6)
    c = s / 2

    def star(d, n=5):
        pts = [
            (
                c + (90 if i % 2 == 0 else 38) * math.cos(math.pi * i / n - math.pi / 2),
                c + (90 if i % 2 == 0 else 38) * math.sin(math.pi * i / n - math.pi / 2),
            )
            for i in range(2 * n)
        ]
        d.polygon(pts, fill=0)

    painters = [
        lambda d, s: d.rectangle((50, 50, 190, 190), fill=0),
        lambda d, s: d.polygon([(120, 30), (215, 200), (25, 200)], fill=0),
        lambda d, s: star(d),
        lambda d, s: (
            d.rectangle((100, 30, 140, 210), fill=0),
            d.rectangle((30, 100, 210, 140), fill=0),
        ),
        lambda d, s: d.polygon(
            [(20, 100), (140, 100), (140, 50), (220, 120), (140, 190), (140, 140), (20, 140)],
            fill=0,
        ),
        lambda d, s: (
            d.ellipse((30, 40, 125, 135), fill=0),
            d.ellipse((115, 40, 210, 135), fill=0),
            d.polygon([(36, 105), (204, 105), (120, 215)], fill=0),
        ),
    ]
    return _draw(s, painters[kind])


def not_digit_clothing(rng: np.random.Generator) -> bytes:
    """Silhouettes of a T-shirt, trousers, a dress, a shoe or a bag (Fashion-MNIST's kinds)."""
    kind = rng.integers(5)
    polys = [
        [
            (70, 30),
            (170, 30),
            (225, 80),
            (195, 110),
            (175, 95),
            (175, 215),
            (65, 215),
            (65, 95),
            (45, 110),
            (15, 80),
        ],
        [(70, 20), (170, 20), (180, 220), (135, 220), (120, 90), (105, 220), (60, 220)],
        [(95, 20), (145, 20), (150, 80), (200, 220), (40, 220), (90, 80)],
        [(20, 150), (110, 150), (150, 110), (185, 110), (220, 170), (220, 200), (20, 200)],
        [(40, 90), (200, 90), (215, 215), (25, 215)],
    ]

    def paint(d, s):
        d.polygon(polys[kind], fill=int(rng.integers(0, 90)))
        if kind == 4:
            d.arc((80, 30, 160, 130), 180, 360, fill=0, width=12)

    return _draw(240, paint)


def not_digit_noise(rng: np.random.Generator) -> bytes:
    """Random noise, smooth or salt-and-pepper."""
    size = int(rng.integers(64, 300))
    noise = rng.random((size, size))
    if rng.random() < 0.5:
        im = Image.fromarray((noise * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(rng.uniform(1, 6))
        )
        arr = np.asarray(im, dtype=np.float32)
        arr = (arr - arr.min()) / max(1.0, arr.max() - arr.min()) * 255
        return _encode(Image.fromarray(arr.astype(np.uint8)), "PNG")
    return _encode(Image.fromarray(((noise > 0.5) * 255).astype(np.uint8)), "PNG")


def not_digit_blank_paper(rng: np.random.Generator) -> bytes:
    """A photo of a blank sheet: tinted paper, uneven light, noise, JPEG."""
    h, w = 600, 800
    paper = np.array([rng.uniform(0.85, 0.97), rng.uniform(0.83, 0.95), rng.uniform(0.75, 0.9)])
    rgb = paper * _lighting(h, w, rng)[..., None] + rng.normal(0, 0.02, (h, w, 3))
    return _encode(Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)), "JPEG", quality=85)


def not_digit_scene(rng: np.random.Generator) -> bytes:
    """A busy 'photo': overlapping random rectangles and ellipses in many grey levels, JPEG."""
    im = Image.new("RGB", (400, 300), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(15, 40))):
        x0, y0 = int(rng.integers(0, 380)), int(rng.integers(0, 280))
        box = (x0, y0, x0 + int(rng.integers(10, 150)), y0 + int(rng.integers(10, 120)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.rectangle if rng.random() < 0.5 else d.ellipse)(box, fill=colour)
    return _encode(im, "JPEG", quality=80)


LETTERS = "ABCDEFGHJKLMNPQRTUVWXYabcdefhkmnpqrtuvwxy"  # O, I, S, Z, g... look like digits: left out


def not_digit_letter(rng: np.random.Generator) -> bytes:
    found = held_out_fonts()
    if not found:
        raise RuntimeError("no fonts installed: apt-get install fonts-dejavu-core")
    font = found[int(rng.integers(len(found)))]
    return printed(LETTERS[int(rng.integers(len(LETTERS)))], font, rng)


# Capital letters as a pen draws them on the page's canvas: strokes in a unit box (x, y),
# each a polyline. Letters that a pen makes look like digits (O, I, S, Z, B, G) are left out.
PEN_LETTERS = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.25, 0.55), (0.75, 0.55)]],
    "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.7, 0.5)]],
    "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.7, 0.5)]],
    "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    "K": [[(0, 0), (0, 1)], [(1, 0), (0, 0.55), (1, 1)]],
    "M": [[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    "R": [[(0, 1), (0, 0), (0.8, 0), (1, 0.25), (0.8, 0.5), (0, 0.5)], [(0.4, 0.5), (1, 1)]],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.4), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "P": [[(0, 1), (0, 0), (0.8, 0), (1, 0.25), (0.8, 0.5), (0, 0.5)]],
    "U": [[(0, 0), (0, 0.8), (0.2, 1), (0.8, 1), (1, 0.8), (1, 0)]],
    "C": [[(1, 0.1), (0.7, 0), (0.3, 0), (0, 0.3), (0, 0.7), (0.3, 1), (0.7, 1), (1, 0.9)]],
}


def not_digit_drawn_letter(rng: np.random.Generator) -> bytes:
    """A capital letter drawn with a pen on the page's 280x280 canvas: wobbly strokes of any
    width, the letter's size and tilt varying, black on white (PNG)."""
    letter = list(PEN_LETTERS)[int(rng.integers(len(PEN_LETTERS)))]
    size, width = rng.uniform(120, 220), int(rng.integers(8, 24))
    # Narrow enough to fit between the 20 px margins, however large the letter is.
    w_scale = min(rng.uniform(0.6, 1.1), 240 / size)
    x0, y0 = rng.uniform(20, 260 - size * w_scale), rng.uniform(20, 260 - size)
    tilt = math.radians(rng.uniform(-12, 12))

    def paint(d, s):
        for stroke in PEN_LETTERS[letter]:
            pts = []
            for x, y in stroke:
                x, y = x * w_scale + rng.normal(0, 0.03), y + rng.normal(0, 0.03)
                x, y = x + y * math.sin(tilt), y
                pts.append((x0 + x * size, y0 + y * size))
            d.line(pts, fill=0, width=width, joint="curve")

    return _draw(280, paint)


def not_digit_scribble(rng: np.random.Generator) -> bytes:
    """A scribble on the page's canvas: one pen stroke wandering through 6 to 14 points,
    smoothed, or a tangle of loops (PNG)."""

    def paint(d, s):
        n = int(rng.integers(6, 15))
        pts = rng.uniform(30, 250, (n, 2))
        if rng.random() < 0.5:  # loops: points on a wobbly circle, around several times
            t = np.linspace(0, 2 * math.pi * rng.uniform(2, 4), n * 4)
            r = rng.uniform(40, 110) * (1 + 0.3 * np.sin(3 * t + rng.uniform(0, 6)))
            pts = np.stack([140 + r * np.cos(t) + 0.3 * t * 10, 140 + r * np.sin(t)], 1)
        d.line([tuple(p) for p in pts], fill=0, width=int(rng.integers(6, 20)), joint="curve")

    return _draw(280, paint)


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def not_digit_fashion_mnist(rng: np.random.Generator) -> bytes:
    """A Fashion-MNIST test image (Debian's dataset-fashion-mnist; training uses only the
    training file), scaled up, as a PNG: light on black as stored, or inverted."""
    import gzip

    if not FASHION_MNIST.is_file():
        raise RuntimeError("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    with gzip.open(FASHION_MNIST, "rb") as f:
        raw = f.read()
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    img = images[int(rng.integers(len(images)))]
    if rng.random() < 0.5:
        img = 255 - img
    size = int(rng.integers(28, 281))
    return _encode(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC), "PNG")


NOT_DIGITS: dict[str, Callable[[np.random.Generator], bytes]] = {
    "letter": not_digit_letter,
    "drawn_letter": not_digit_drawn_letter,
    "scribble": not_digit_scribble,
    "fashion_mnist": not_digit_fashion_mnist,
    "shape": not_digit_shape,
    "clothing": not_digit_clothing,
    "noise": not_digit_noise,
    "scene": not_digit_scene,
    "blank_paper": not_digit_blank_paper,
}
