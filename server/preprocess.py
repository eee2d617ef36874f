"""Image bytes -> the tensor the models were trained on. Pure functions on numpy and Pillow.

Real uploads are photos of ink on paper, scans, screenshots, canvas drawings and transparent
PNGs, in either polarity and at any size. Each step below undoes one way they differ from MNIST:

  decode      accepted formats only, pixel cap before the full decode, JPEG draft mode,
              first frame, EXIF orientation
  as_fitted   an upload that already is a fitted digit (an MNIST digit as stored) is taken
              as it is: the steps below would only resample it
  to_grey     any mode to one grey channel; transparent pixels become background
  ink_map     ink polarity, uneven lighting, shadows and paper colour removed: ink is 1,
              background 0
  find_digit  connected components; specks, page borders, a desk along the edges and a
              thumb dropped
  zoom        a sheet on a desk looked at alone (on_the_paper), a digit small at working
              size found again on the decoded pixels
  fit         the digit's ink box scaled to the manifest's box, centred by centre of mass
              on the manifest's pixel, quantised to 8 bits as MNIST is, then normalised
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from server import components, decode_budget, lines
from server.errors import ApiError, NoInk, TooManyPixels, UndecodableImage, UnsupportedFormat
from server.manifest import InputSpec

# The accepted formats, the one list of them: Pillow's name of each -> the name users read
# (the refusal below, the page, the API document).
ACCEPTED_FORMATS = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "GIF": "GIF",
    "BMP": "BMP",
    "WEBP": "WebP",
    "TIFF": "TIFF",
}
LOSSY_FORMATS = ("JPEG", "WEBP")
WORK_SIZE = 320  # longest side analysed; a digit filling a tenth of it still has 32 pixels
ANALYSIS_SIZE = 128  # longest side at which connected components are found
MIN_CONTRAST = 0.08  # darkest-to-lightest spread below which an image is blank
MIN_INK = 0.15  # weakest stroke contrast (relative to the paper) accepted as ink
NOISE_CHECK = 0.04  # grain above which ink_map checks it against neighbouring pixels
TEXTURE_PIECES = 20  # marks in an image beyond which a huge region is taken for texture
# A region reaching across the picture with holes everywhere, more than TEXTURE_HOLES and one
# per 50 of its pixels, is grain or noise: bench/synth.py's salt-and-pepper noise has 240 and
# up (one per 9 pixels or fewer), its digits that touch two sides 9 at most (one per 170).
TEXTURE_HOLES = 20
BALANCED = 0.2  # light and dark shares of an image within 50 +- this: a digit filling it
# Of the shorter side: how far past a dark line along an edge the paper of such an image is
# looked for. bench/synth.py's box lines are at most a thirtieth of the digit's height thick,
# under 6 % of the picture's shorter side.
FRAME_DEPTH = 0.08
LINE_SCRAP = 0.15  # of the digit's area: a piece touching a removed line and smaller is the line's
# A level line of a digit (a 7's bar, a 2's base) has the rest of its digit reaching at least
# this share of its length across it; a comb's base, whose teeth are its only other ink, not.
OWN_DEPTH = 0.6
OWN_NEAR = 0.2  # of a line's length: how far from it the ink that meets it is looked for
OWN_END = 0.1  # of a line's length: how near one of its ends that ink reaches
OWN_OVER = 0.4  # of a line's length: the most of it beyond the rest of its digit (a 7's bar: 0.3)
OWN_EDGE = 0.01  # of the picture's side: a line ending this near the edge runs on beyond it
STRONG_FEW = 0.0002  # of the image: its strongest pixels set the stroke contrast at least
# (20 at working size; a digit 3 % of a photo's side has about twice as many)
SMALL_EXTENT = 16  # pixels at analysis size: a digit smaller is found again at working size
FINE_EXTENT = 0.025  # of the longer side: the smallest digit found at working size
FAR_PIECE = 0.15  # of the digit's area: a piece away from it and smaller is dirt, not a stroke
ZOOM_BELOW = 40  # pixels at working size: a digit smaller is cut again from the decoded image
FEW_MIN = 0.3  # ink that the few strongest pixels must reach to set the stroke contrast
TWO_TONED = 0.3  # share of an image at most in the middle third of its range: paper and ink
LEVELS = 1024  # histogram levels for the stroke contrast
SHADE = 0.45  # the most that uneven light darkens paper, in ink units (bench/synth.py: 0.43)
STROKE_PEAK = 0.5  # of the strongest mark's peak: a piece of the digit reaches at least this
# A finger or thumb in the frame: a solid mark (FINGER_FILL of its box or more) reaching in
# from a side, lighter than the pen (skin on paper: 0.25-0.55 of the ink's contrast), under
# FINGER_PEAK of the strongest mark's peak.
FINGER_PEAK = 0.75
FINGER_FILL = 0.6
FINGER_WIDTH = 0.15  # of the picture's shorter side, both ways: a speck at the edge is no finger
# A thumb shortened to stay clear of the digit reaches in 5-15 % of the picture's side. So
# narrow (THUMB_WIDTH or more), a mark is a thumb only beside a piece touching no side with
# CLEAR of the largest piece's ink or more, and when it holds THUMB_SHARE of the largest
# other piece's ink: the tips of strokes a tight crop cuts, faint in a blurred thumbnail, are
# as solid and as wide, but their digit touches the sides, or they hold little of its ink.
THUMB_WIDTH = 0.05
THUMB_SHARE = 0.2
CLEAR = 0.25
FITTED_INK = 128  # the strongest pixel of a digit already fitted reaches this (MNIST: 255)
# Stroke width (stroke_width), in pixels of the fitted digit: MNIST's are 2 (1st percentile)
# to 5 (95th), median 3. A thin pen on a large canvas or a ballpoint in a photo fits thinner
# than THIN, a faint ghost the models read as 1; such strokes are widened to STROKE before the
# digit is scaled. bench/synth.py's thin_pen reads the same with THIN from 0.8 to 1 px (989
# of 1,000 right, 0.7 % flagged); at 1 px more thin scribbles pass for digits (94.7 % of
# bench.realworld's flagged, against 96.0 %).
THIN = 0.8
STROKE = 2.4
# A sheet of paper on a darker desk, found as a light mark (on_the_paper): it covers SHEET
# of the picture at least, its box is FILLED with ink on average (a note turned askew leaves
# desk in its box's corners), and SOLID of its box stays marked when worn away by
# SHEET_WORN of its side (sticky notes 0.34-0.62; the boldest digits found as large and
# filled, up to 0.38). What is found on it has strokes: worn by STROKES_WORN, STROKES_LEFT
# of its box stays at most (bold digits on notes 0.006 at most, a bold 0's hole 0.10).
SHEET = 0.2
FILLED = 0.4
SOLID = 0.3
SHEET_WORN = 0.05
STROKES_WORN = 0.15
STROKES_LEFT = 0.04
# Ink on the sheet this strong, full black against full white, is no pen photographed on
# paper (sticky notes 0.73-0.91): it is the dark canvas showing through a bold light digit
# drawn on it, whose strokes the sheet look took for the paper.
DRAWN = 0.97
DESK_RIM = 0.01  # of the sheet's look's longer side: the edge, blurred, taken with the desk
EDGE_BAND = 0.2  # of the picture's side: how deep a desk beside the paper may reach in
EDGE_SHARE = 0.9  # of a piece's pixels within EDGE_BAND: a piece along the edges
EDGE_SPAN = 0.8  # of the picture's side: how far a piece along the edges reaches at least
SLIVER = 0.12  # of the picture's side: the deepest a sliver from a corner reaches in
MIN_EXTENT = 5  # pixels at analysis size: a mark shorter than this is a speck, not a digit
# Times the working size: the most pixels the second look, for marks too small at working
# size, is made at. The smallest digit it finds is FINE_EXTENT of half its side (1.25 % of
# the upload's longer side), 12 pixels tall there: at 8, in a look at twice the working size,
# the thin strokes of a digit so small are averaged with the paper and lose their contrast.
WIDE = 3
WIDER_GAIN = 1.5  # how much more strongly the wider look's strokes must stand out (1.2-2 alike)
# A shadow across the paper (a phone's or a hand's): even blocks of paper, lit (LIT of the
# lightest block's brightness or more) and shaded (SHADED_PAPER of it), LIT_SHARE and
# SHADOW_SHARE of the blocks or more (a round shadow may cover 4 of a 4:3 photo's 48; a small
# note on a flat desk, the desk a shade of it, is left to the sheet look, which does not take
# the note's edge, sharp and ringing in a JPEG, for ink), some of them NEAR blocks apart or
# less. It is looked for before the picture is taken for a digit cropped to its ink, which a
# shadow over half of it resembles. The gentle fall of light across a photo darkens paper as
# much, but not so close to lit paper (bench/synth.py's photos: by 0.05 of its brightness a
# block). A block is even where its middle half of values spans EVEN of the lightest block's
# brightness at most: no stroke and no shadow's edge crosses it. Such paper is followed on a
# grid of CELL pixels, taking away what is narrower than OPEN_CELLS cells (the strokes). What
# a wider stroke leaves is inkier than any paper: there the lightest paper within twice that
# reach stands for it, and never more ink than the deepest shaded block's paper, EVEN darker.
# A bold grey pen's strokes, wider than a block, are as even, at 0.25-0.29 of the paper's
# brightness (bench/synth.py's boxed digits); its shadows leave 0.36 of it or more.
LIT = 0.9
SHADED_PAPER = (0.3, 0.72)
SHADOW_SHARE = 0.08
LIT_SHARE = 0.15
NEAR = 2
EVEN = 0.1
CELL = 2
OPEN_CELLS = 11


@dataclass(frozen=True)
class Shape:
    """What the fitted 28x28 digit looks like, for telling digits from other things."""

    # MNIST figures: its 10,000 test digits sent as PNGs through this preprocessing.
    ink: float  # mean intensity in [0, 1]; MNIST: 0.044 to 0.271 (0.5th-99.5th percentile)
    parts: int  # pieces of ink kept as the digit (specks dropped); MNIST: 1 (98.1 %) or 2 (1.4 %)
    edge_ratio: float  # share of inked pixels on the ink's edge: 1 for thin strokes, low for
    # filled blobs; MNIST: 0.345 and up (0.5th percentile)


@dataclass(frozen=True)
class Preprocessed:
    pixels: np.ndarray  # uint8 [28, 28], ink high: what the models saw, before normalisation
    tensor: np.ndarray  # float32 [1, 28, 28], normalised as the manifest says
    source_size: tuple[int, int]  # width, height of the upload
    inverted: bool  # the upload had dark ink on a light background
    components_kept: int
    components_dropped: int
    shape: Shape
    lines_removed: int = 0  # a form's long straight lines found and removed


SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


def _claims_accepted_format(data: bytes) -> bool:
    """Starts like an accepted format: a broken one is then corrupt (400), not foreign (415)."""
    return data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # upright, first frame, possibly reduced (JPEG draft mode)
    size: tuple[int, int]  # width, height as uploaded
    format: str


def decode(data: bytes, max_pixels: int, draft: int = WORK_SIZE) -> Decoded:
    """Opens an upload. Pixels, memory and the decoder's work are checked from the headers,
    before any pixel is decoded (server/decode_budget.py); JPEGs decode already reduced
    (draft mode) when both sides are at least twice `draft`."""
    if not data:
        raise UndecodableImage("The image is empty (0 bytes).")
    structure = decode_budget.inspect(data)
    if structure.canvas is not None:  # WebP: checked before Pillow's reader sizes its canvas
        cw, ch = structure.canvas
        _check_pixels(cw, ch, max_pixels)
        decode_budget.check_bytes(
            math.ceil(cw * ch * decode_budget.WEBP_BYTES_PER_PIXEL), cw, ch, "RGBA"
        )
    # No warnings.catch_warnings here: it swaps process-wide state and is not thread-safe.
    # Pillow only warns about sizes; the pixel cap below is what refuses them.
    try:
        im = Image.open(io.BytesIO(data), formats=tuple(ACCEPTED_FORMATS))
    except UnidentifiedImageError:
        if _claims_accepted_format(data):
            raise UndecodableImage("The image header is corrupt.") from None
        raise UnsupportedFormat(
            f"This is not an image in an accepted format ({', '.join(ACCEPTED_FORMATS.values())})."
        ) from None
    except Image.DecompressionBombError:
        raise TooManyPixels(f"The image has more than {max_pixels:,} pixels.") from None
    except Exception:  # Pillow's parsers raise many types on malformed headers
        raise UndecodableImage("The image header is corrupt.") from None
    w, h = im.size
    fmt = im.format or ""
    _check_pixels(w, h, max_pixels)
    if fmt == "JPEG":
        im.draft("L", (draft, draft))  # DCT scaling: a 12 MP photo decodes at 1/8
    decode_budget.check_bytes(decode_budget.peak_bytes(im, structure), w, h, im.mode)
    try:
        im.load()
    except Exception:  # truncated data, bad chunks or checksums, decoder errors of any kind
        raise UndecodableImage("The image data is truncated or corrupt.") from None
    with contextlib.suppress(Exception):  # a broken EXIF block is no reason to refuse pixels
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of an upright image
    return Decoded(im, (w, h), fmt)


def region(
    data: bytes, upload: Decoded, max_pixels: int, box: tuple[int, int, int, int], finer: float
) -> tuple[Image.Image, float]:
    """`box` (left, top, right, bottom in upload.image's pixels) of the upload, with up to
    `finer` times upload.image's resolution where the file holds more, and the scale of the
    region's pixels to upload.image's. A JPEG that decode() reduced in draft mode is decoded
    again, less reduced: a small number in a large photo has its own pixels there."""
    if upload.format != "JPEG" or finer <= 1 or max(upload.image.size) >= max(upload.size):
        return upload.image.crop(box), 1.0
    try:
        image = decode(data, max_pixels, draft=math.ceil(max(upload.image.size) * finer)).image
    except ApiError:  # beyond the decode budget at that scale: the reduced pixels serve
        return upload.image.crop(box), 1.0
    scale = image.width / upload.image.width
    return image.crop(tuple(round(v * scale) for v in box)), scale


T = TypeVar("T")  # what a look finds


def look_at(
    data: bytes, upload: Decoded, max_pixels: int, look: Callable[[np.ndarray, int], T]
) -> tuple[Decoded, np.ndarray, T]:
    """`look(grey, side)` at the upload's grey at working size and what it found; `side` is
    the length the smallest digit is FINE_EXTENT of, 0 for the grey's own longer side. When it
    finds no ink and the upload holds more pixels than that, marks may be too small to be
    digits there (a digit on a page photographed whole): the look is made again at up to WIDE
    times the working size with `side` half its side, the upload decoded again if draft mode
    reduced it below that."""
    try:
        grey = to_grey(upload.image)
        return upload, grey, look(grey, 0)
    except NoInk:
        wide = look_wide(data, upload, max_pixels, look)
        if wide is None:
            raise
        return wide


def look_wide(
    data: bytes, upload: Decoded, max_pixels: int, look: Callable[[np.ndarray, int], T]
) -> tuple[Decoded, np.ndarray, T] | None:
    """look_at's second look, at up to WIDE times the working size; None when the upload is
    not twice the working size."""
    size = min(WIDE * WORK_SIZE, max(upload.size))
    if size < 2 * WORK_SIZE:
        return None
    if upload.format == "JPEG" and max(upload.image.size) < size:
        upload = decode(data, max_pixels, draft=size)
    grey = to_grey(upload.image, size)
    return upload, grey, look(grey, size // 2)


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w < 1 or h < 1:
        raise UndecodableImage("The image has no pixels.")
    if w * h > max_pixels:
        raise TooManyPixels(f"The image has {w:,} x {h:,} pixels; the limit is {max_pixels:,}.")


def _resize_to_work(im: Image.Image, work_size: int = WORK_SIZE) -> Image.Image:
    w, h = im.size
    scale = work_size / max(w, h)
    if scale >= 1:
        return im
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return im.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def to_grey(im: Image.Image, work_size: int = WORK_SIZE) -> np.ndarray:
    """float32 [H, W] in [0, 1] at most `work_size` on a side; transparent pixels are
    background."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if im.mode == "F":
            top = max(1.0, float(arr.max(initial=0)))
        grey = Image.fromarray(np.clip(arr / top, 0, 1).astype(np.float32), "F")
        return np.asarray(_resize_to_work(grey, work_size), dtype=np.float32)
    if not im.has_transparency_data and im.mode not in ("LA", "La", "PA", "RGBA", "RGBa"):
        grey = im if im.mode == "L" else im.convert("L")
        return np.asarray(_resize_to_work(grey, work_size), dtype=np.float32) / 255.0
    if im.mode not in ("LA", "RGBA"):
        im = im.convert("RGBA")
    lum, alpha = _resize_to_work(im.convert("LA"), work_size).split()
    if alpha.getextrema()[0] > 250:
        return np.asarray(lum, dtype=np.float32) / 255.0
    # Statistics from every few pixels; the compositing itself is Pillow's, in C.
    step = max(1, min(lum.size) // 64)
    small_lum = np.asarray(lum)[::step, ::step].astype(np.float32) / 255.0
    small_alpha = np.asarray(alpha)[::step, ::step].astype(np.float32) / 255.0
    opaque = small_alpha > 0.5
    if not opaque.any():
        return np.zeros((lum.height, lum.width), dtype=np.float32)
    if opaque.mean() < 0.5:
        # Mostly transparent: the opaque pixels are the drawing. Put them on a background of
        # the opposite brightness, so white strokes on transparency stay visible.
        weighted = float((small_lum * small_alpha).sum() / small_alpha.sum())
        background = 255 if weighted < 0.5 else 0
    else:
        # Mostly opaque (a photo with rounded corners): fill the holes with the paper colour.
        background = round(255 * _median(small_lum[opaque]))
    grey = Image.composite(lum, Image.new("L", lum.size, background), alpha)
    return np.asarray(grey, dtype=np.float32) / 255.0


def _kth(values: np.ndarray, k: int) -> float:
    """The k-th smallest value. A sort, not np.partition: image values repeat a lot, and
    numpy's partition degrades on repeats (an MNIST digit, 85 % zeros: 8.9 us against 1.0 us
    for the sort). Over the kinds of bench/synth.py, per image: MNIST PNGs 22.8 -> 5.5 us,
    canvases 75.5 -> 14.7, screenshots 65.7 -> 8.5, noisy photos 18-25 -> 18-29."""
    return float(np.sort(values, axis=None)[k])


def _median(values: np.ndarray) -> float:
    return _kth(values, values.size // 2)


def _low(values: np.ndarray) -> float:
    """10th percentile: below any stroke, robust to noise."""
    return _kth(values, values.size // 10)


def _blocks(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The picture in blocks, for the background and for a shadow: every `step`-th pixel
    (plenty for a percentile, and the cost flat in image size), those of each block one row
    of an [hb, wb, n] array, None for a thumbnail or a sliver; and the blocks' pitch in the
    picture's pixels."""
    h, w = grey.shape
    block = max(8, round(max(h, w) / 8))  # several stroke widths, even on a tiny image
    step = max(1, block // 8)
    sub, block = grey[::step, ::step], block // step
    hb, wb = sub.shape[0] // block, sub.shape[1] // block  # a ragged edge strip is left out
    if max(h, w) < 4 * block * step or not hb or not wb:
        return sub, None, block * step
    cells = (
        sub[: hb * block, : wb * block]
        .reshape(hb, block, wb, block)
        .transpose(0, 2, 1, 3)
        .reshape(hb, wb, -1)
    )
    return sub, cells, block * step


def _block_background(
    grey: np.ndarray, inverted: bool, strongest: float | None
) -> np.ndarray | float:
    """Smooth estimate of the background, ink high (so of 1 - grey if `inverted`): an array,
    or one value where the background is even. `strongest`, the inkiest value (ink high), is
    given for an image about half ink, whose strokes may fill whole blocks."""
    h, w = grey.shape
    sub, cells, pitch = _blocks(grey)
    if cells is None:
        # A thumbnail (MNIST's own size) or a sliver (320 x 1): no light to follow.
        return _low(1.0 - sub if inverted else sub)
    cells = 1.0 - cells if inverted else cells
    hb, wb = cells.shape[:2]
    k = cells.shape[2] // 10
    low = np.sort(cells, axis=2)[:, :, k]  # a sort, as in _kth
    # A block inside a stroke holds no paper. Where the digit fills the picture (cropped to
    # its ink) such blocks form whole stretches, so none is allowed a background more than
    # 60 % of the way from the lightest paper to the strongest ink, and never less than
    # SHADE above the lightest: lighting shades paper less (bench/synth.py's photos: at most
    # 45 % of the way to their ink, in their darkest corner; a blank sheet has no ink at all).
    if strongest is not None:
        lightest = float(low.min())
        low = np.minimum(low, lightest + max(SHADE, 0.6 * (strongest - lightest)))
    # A block all inside a fat stroke stands out from its neighbours; a median of the 3x3
    # neighbourhood replaces it and still follows a lighting gradient.
    low = np.asarray(
        Image.fromarray(low.astype(np.float32), "F").filter(ImageFilter.MedianFilter(3))
    )
    if low.max() - low.min() < 0.02:
        return float(low.mean())
    # Between the blocks' centres the light is interpolated, and beyond the outermost ones,
    # half a block and the ragged strip to the picture's edge, extrapolated: a photo's
    # vignette keeps darkening into its corners, and held at the last centre's value it
    # leaves shade there as strong as a faint stroke. A ring of cells extrapolated from the
    # two beside it, then Pillow's bilinear resize of the box whose pixel centres are the
    # blocks' centres.
    ext = np.empty((hb + 2, wb + 2), dtype=np.float32)
    ext[1:-1, 1:-1] = low
    if hb > 1:
        ext[0, 1:-1] = 2 * low[0] - low[1]
        ext[-1, 1:-1] = 2 * low[-1] - low[-2]
    else:
        ext[0, 1:-1] = ext[-1, 1:-1] = low[0]
    if wb > 1:
        ext[:, 0] = 2 * ext[:, 1] - ext[:, 2]
        ext[:, -1] = 2 * ext[:, -2] - ext[:, -3]
    else:
        ext[:, 0] = ext[:, -1] = ext[:, 1]
    up = Image.fromarray(ext, "F").resize(
        (w, h), Image.Resampling.BILINEAR, box=(1, 1, 1 + w / pitch, 1 + h / pitch)
    )
    return np.asarray(up, dtype=np.float32)


def _shadowed(grey: np.ndarray, lo: float, hi: float) -> tuple[bool, float] | None:
    """None, or, where the paper is partly in a hard-edged shadow as the constants above say,
    the ink's polarity (True: dark ink), which the median, lit paper or shaded, does not
    tell, and the inkiest the background may be (ink high: the deepest shade, EVEN beyond).
    The ink lies beyond the paper's levels, darker than the shaded paper or lighter than the
    lit, by MIN_INK of the paper's brightness at least. Blocks as _blocks'; an even block's
    median is its paper. `lo` and `hi` are the darkest and the lightest value."""
    _, cells, _ = _blocks(grey)
    if cells is None or min(cells.shape[:2]) < 2:
        return None
    ordered = np.sort(cells, axis=2)
    k = ordered.shape[2] // 4
    paper, spread = ordered[:, :, 2 * k], ordered[:, :, 3 * k] - ordered[:, :, k]
    most = float(paper.max())
    even = spread < EVEN * most
    lit = even & (paper >= LIT * most)
    shaded = even & (paper >= SHADED_PAPER[0] * most) & (paper <= SHADED_PAPER[1] * most)
    if lit.mean() < LIT_SHARE or shaded.mean() < SHADOW_SHARE:
        return None
    near_lit = Image.fromarray(lit.astype(np.uint8)).filter(ImageFilter.MaxFilter(2 * NEAR + 1))
    if not (shaded & (np.asarray(near_lit) > 0)).any():
        return None
    deepest = float(paper[shaded].min())
    darker, lighter = deepest - lo, hi - most
    if max(darker, lighter) < MIN_INK * most:
        return None  # nothing beyond the paper's levels: what seemed shaded paper is the ink
    if darker > lighter:
        return True, 1.0 - deepest + EVEN * most
    return False, most * (1.0 + EVEN)


def _opened(values: np.ndarray) -> np.ndarray:
    """A morphological opening of `values` (ink high) on a grid of CELL pixels, one value a
    cell: what is narrower than OPEN_CELLS cells is taken away, a wide region (paper, lit or
    in shadow) and the ramp of a shadow's edge are kept. The picture's edge values extend
    beyond it, so a strip along a side (the desk beside a sticky note) is as wide as it is
    there and stays."""
    h, w = values.shape
    hc, wc = -(-h // CELL), -(-w // CELL)
    padded = np.pad(values, ((0, hc * CELL - h), (0, wc * CELL - w)), mode="edge")
    cells = padded.reshape(hc, CELL, wc, CELL).min(axis=(1, 3))
    r = OPEN_CELLS - 1
    cells = np.pad(cells, r, mode="edge")
    eroded = _rank(_rank(cells, np.minimum, 0), np.minimum, 1)
    return _rank(_rank(eroded, np.maximum, 0), np.maximum, 1)[r:-r, r:-r]


def _rank(values: np.ndarray, reduce: np.ufunc, axis: int) -> np.ndarray:
    """`reduce` (np.minimum or np.maximum) over a window of OPEN_CELLS along `axis`, the edge
    value repeated beyond: windows of doubling length, then the last two overlapping."""
    r = OPEN_CELLS // 2
    out = np.moveaxis(
        np.pad(values, [(r, r) if a == axis else (0, 0) for a in (0, 1)], "edge"), axis, 0
    )
    span = 1
    while 2 * span <= OPEN_CELLS:
        out, span = reduce(out[:-span], out[span:]), 2 * span
    if span < OPEN_CELLS:
        out = reduce(out[: span - OPEN_CELLS], out[OPEN_CELLS - span :])
    return np.moveaxis(out, 0, axis)


def _on_the_grid(cells: np.ndarray, h: int, w: int) -> np.ndarray:
    """One value a CELL-pixel cell, interpolated to [h, w] with each cell's value at its
    centre."""
    up = Image.fromarray(cells.astype(np.float32), "F").resize(
        (w, h), Image.Resampling.BILINEAR, box=(0, 0, w / CELL, h / CELL)
    )
    return np.asarray(up, dtype=np.float32)


def _in_the_shade(grey: np.ndarray, inverted: bool, inkiest: float) -> np.ndarray:
    """The background (ink high) of paper partly in shadow: the opened picture. Where it is
    inkier than `inkiest`, what the opening left of a wider stroke, the lightest paper within
    twice its reach, held at `inkiest`."""
    values = 1.0 - grey if inverted else grey
    paper = _opened(values)
    stroke = paper > inkiest
    if stroke.any():
        near = paper
        for axis in (0, 0, 1, 1):
            near = _rank(near, np.minimum, axis)
        paper = np.where(stroke, np.minimum(near, inkiest), paper)
    return _on_the_grid(paper, *grey.shape)


def _polarity_of_a_full_frame(grey: np.ndarray, mid: float) -> bool | None:
    """Polarity of an image that is about half ink, as a digit cropped to its own ink is: its
    sides are mostly paper, which the strokes only touch. A side that is dark all along may be
    the line of a box the picture is cut at: the first row within FRAME_DEPTH of it that is
    not (the paper inside the box) stands for it. None when every side is one tone: nothing
    touches them (a thick drawing on a canvas); then the median's verdict stands."""
    h, w = grey.shape
    d = min(max(1, round(FRAME_DEPTH * min(h, w))), (h - 1) // 2, (w - 1) // 2)
    bands = [  # each side's rows, from the edge inwards: light share of each
        (grey[: d + 1] > mid).mean(1),
        (grey[: -d - 2 : -1] > mid).mean(1),
        (grey[:, : d + 1] > mid).mean(0),
        (grey[:, : -d - 2 : -1] > mid).mean(0),
    ]
    light = []
    for band in bands:
        lit = np.flatnonzero(band >= 0.1)
        light.append(float(band[lit[0]] if lit.size else band[0]))
    if min(light) > 0.9 or max(light) < 0.1:
        return None
    return bool(sum(light) / 4 > 0.5)


@dataclass(frozen=True)
class InkMap:
    ink: np.ndarray  # float32 [H, W] in [0, 1]: 1 is full ink, 0 is paper
    inverted: bool  # the upload had dark ink on a light background
    noise: float  # standard deviation of the paper's grain, in ink units


def ink_map(grey: np.ndarray, inverted: bool | None = None) -> InkMap:
    """Ink is 1, paper 0, whatever the polarity, the lighting and the paper's colour.
    `inverted`, where known, says the polarity: dark ink on a light background."""
    lo, hi = float(grey.min()), float(grey.max())
    if hi - lo < MIN_CONTRAST:
        raise NoInk("No digit found: the image is blank.")
    # The background covers most of the image, so the median is a background value: the ink
    # is whichever extreme lies farther from it.
    step = (max(1, grey.shape[0] // 64), max(1, grey.shape[1] // 64))
    ordered = np.sort(grey[:: step[0], :: step[1]], axis=None)  # a sort, as in _kth
    n = ordered.size
    median = float(ordered[n // 2])
    known = inverted is not None
    if not known:
        inverted = median - lo > hi - median
    mid = 0.5 * (lo + hi)
    # Paper and ink, with little between them: what a digit is, and noise or a scene is not.
    third = (hi - lo) / 3
    between = int(np.searchsorted(ordered, hi - third)) - int(np.searchsorted(ordered, lo + third))
    two_toned = between < TWO_TONED * n
    strongest = None
    shadowed = None if known else _shadowed(grey, lo, hi)
    if (
        not known
        and shadowed is None
        and two_toned
        and ordered[int(n * (0.5 - BALANCED))] <= mid < ordered[int(n * (0.5 + BALANCED))]
    ):
        # Between 30 and 70 % of the image is lighter than halfway: about half of it is ink.
        touching = _polarity_of_a_full_frame(grey, mid)
        if touching is not None:
            inverted = touching
            strongest = 1.0 - lo if inverted else hi
    if shadowed is not None:
        inverted, inkiest = shadowed
        background = _in_the_shade(grey, inverted, inkiest)
    else:
        background = _block_background(grey, inverted, strongest)
    # Contrast relative to the local paper brightness, so shade and paper colour cancel out:
    # (ink-high value - background) / (1 - background), in as few passes as possible.
    scale = 1.0 / np.maximum(1.0 - background, 0.1)
    ink = ((1.0 - background) - grey) if inverted else (grey - background)
    ink *= scale
    sample = ink[:: step[0], :: step[1]]
    noise = 1.4826 * _median(np.abs(sample - _median(sample)))  # robust sigma
    if noise > NOISE_CHECK and two_toned:
        # The spread around the median is the paper's grain only while paper is most of the
        # image; a digit cropped to its ink covers half of it or more. Neighbours differ by
        # grain alone inside the paper and inside the strokes alike, edges being few. Not so
        # in smooth noise, whose neighbours differ little too: only for two-toned images.
        steps = np.abs(sample[:, 1:] - sample[:, :-1])
        if steps.size:
            noise = min(noise, 1.4826 / 1.4142 * _median(steps))
    return InkMap(np.clip(ink, 0.0, 1.0, out=ink), inverted, noise)


def _shrink(ink: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """The ink averaged over k x k blocks, the smallest whole k that brings the longer side
    to `size` or less (so between half of `size` and `size`), and 1 / k. Through an 8-bit
    image: Pillow reduces those by whole factors several times faster than it resizes by
    any other (a 280x280 canvas: 25 against 105 us), and the analysis only thresholds them."""
    h, w = ink.shape
    k = -(-max(h, w) // size)
    if k <= 1:
        return ink, 1.0
    small = _as_l(ink).reduce(k)
    return np.asarray(small, dtype=np.float32) / 255.0, 1.0 / k


def _as_l(values: np.ndarray) -> Image.Image:
    """Values in [0, 1] as an 8-bit Pillow image."""
    scaled = np.multiply(values, 255.0, dtype=np.float32)
    scaled += 0.5  # in place: one temporary image, not two
    return Image.fromarray(scaled.astype(np.uint8), "L")


def is_border(comps: components.Components, i: int, h: int, w: int) -> bool:
    """Page edges, shadows and frames: long thin strips along a side, or huge corner regions
    that are solid (a shadow, a table) or one piece of a texture. A digit cropped to its own
    ink also covers half the image and touches every side, but with its strokes: it fills
    well under 80 % of its box, and little else is marked."""
    top, left, bottom, right = comps.top[i], comps.left[i], comps.bottom[i], comps.right[i]
    ch, cw = bottom - top, right - left
    hugs_side = (left == 0 or right == w) and cw <= 0.12 * w and ch >= 0.3 * h
    hugs_top = (top == 0 or bottom == h) and ch <= 0.12 * h and cw >= 0.3 * w
    if hugs_side or hugs_top:
        return True
    area = comps.area[i]
    if area <= 0.5 * h * w or (top == 0) + (left == 0) + (bottom == h) + (right == w) < 2:
        return False
    return area >= 0.8 * ch * cw or len(comps) > TEXTURE_PIECES


def _at_a_side(comps: components.Components, i: int, h: int, w: int) -> bool:
    """Whether piece `i` touches a side of the [h, w] picture."""
    t, le, b, r = comps.top[i], comps.left[i], comps.bottom[i], comps.right[i]
    return t == 0 or le == 0 or b == h or r == w


def along_edges(comps: components.Components, i: int, h: int, w: int) -> bool:
    """Whether piece `i` lies along the picture's edges, as the desk beside a page or a
    sticky note does where the paper does not fill the frame: it touches a side, reaches
    across EDGE_SPAN of the picture or is a sliver from a corner, and EDGE_SHARE of its
    pixels lie within EDGE_BAND of the sides."""
    if not _at_a_side(comps, i, h, w):
        return False
    t, le, b, r = comps.top[i], comps.left[i], comps.bottom[i], comps.right[i]
    if b - t < EDGE_SPAN * h and r - le < EDGE_SPAN * w and not _sliver(t, le, b, r, h, w):
        return False
    runs = comps.run_component == i
    rows, start, end = comps.run_row[runs], comps.run_start[runs], comps.run_end[runs]
    dy, dx = EDGE_BAND * h, EDGE_BAND * w
    in_sides = np.clip(np.minimum(end, dx) - start, 0, None) + np.clip(
        end - np.maximum(start, w - dx), 0, None
    )
    length = end - start
    banded = np.where((rows < dy) | (rows >= h - dy), length, np.minimum(length, in_sides))
    return int(banded.sum()) >= EDGE_SHARE * comps.area[i]


def _sliver(t: int, le: int, b: int, r: int, h: int, w: int) -> bool:
    """Whether the box (t, le, b, r) is a sliver from one corner along a side: a thin strip
    of desk askew is ink only at its deep end. It reaches in SLIVER of the picture at most,
    and along the side twice as far or more but under half of it; a digit at a tight crop's
    edge reaches further along it, or touches both its ends."""
    ch, cw = b - t, r - le
    if (t == 0) == (b == h) or (le == 0) == (r == w):
        return False
    flat = ch <= SLIVER * h and 2 * ch <= cw < w / 2  # along the top or the bottom
    return flat or (cw <= SLIVER * w and 2 * cw <= ch < h / 2)


def off_the_edges(
    comps: components.Components, pieces: list[int], h: int, w: int, min_extent: int
) -> list[int]:
    """`pieces` without those along the picture's edges, when another piece, touching none
    of them, is large enough to be a digit. The strokes of a digit cropped to its own ink
    touch the edges too."""
    edge = [i for i in pieces if along_edges(comps, i, h, w)]
    if not edge or not any(
        not _at_a_side(comps, i, h, w)
        and max(comps.bottom[i] - comps.top[i], comps.right[i] - comps.left[i]) >= min_extent
        for i in pieces
    ):
        return pieces
    return [i for i in pieces if i not in edge]


def _is_noise(comps: components.Components, h: int, w: int) -> bool:
    """The largest mark reaches across the picture and is riddled with holes: noise or a
    grain, with nothing standing out of it. A digit, even one that fills the picture, has a
    hole or two (an 8), and the paper's grain is below the threshold."""
    if not len(comps) or comps.area[0] <= 0.05 * h * w:
        return False
    top, left, bottom, right = comps.top[0], comps.left[0], comps.bottom[0], comps.right[0]
    if (top == 0) + (left == 0) + (bottom == h) + (right == w) < 2:
        return False
    return comps.holes(0) > max(TEXTURE_HOLES, 0.02 * comps.area[0])


@dataclass(frozen=True)
class Found:
    crop: np.ndarray  # float32 ink cropped to the digit, everything else removed
    kept: int  # components kept as the digit
    dropped: int  # components dropped: specks, page edges, pieces of lines
    lines: int  # long straight lines removed (a form's box, comb, ruling, grid, underline)
    box: tuple[int, int, int, int]  # the crop's top, left, bottom, right in the ink map
    extent: float  # the largest piece's longer side, in pixels of the ink map
    strong: float  # the stroke contrast it was found at


def is_line_piece(
    comps: components.Components, i: int, main: int, found: lines.Lines | None
) -> bool:
    """What a removed line left of itself (a comb's tooth standing on its baseline, a scrap
    where the line met a stroke or another line), or an underline or overline at least as
    wide as the digit: pieces beside the digit, not of it."""
    t, le, b, r = comps.top[i], comps.left[i], comps.bottom[i], comps.right[i]
    short, long = sorted((b - t, r - le))
    straight = short <= max(2, found.thickness if found else 2) and long >= 3 * short
    if found is not None and found.mask[max(0, t - 2) : b + 2, max(0, le - 2) : r + 2].any():
        return straight or comps.area[i] < LINE_SCRAP * comps.area[main]
    if not straight:
        return False
    if b - t < r - le:  # an underline or overline
        return r - le >= 0.9 * (comps.right[main] - comps.left[main])
    # A comb's tooth whose baseline is too faint to be found: short beside the digit.
    return b - t < 0.6 * (comps.bottom[main] - comps.top[main])


def _run_on(on: np.ndarray, start: int, step: int) -> int:
    """The last index reached from `start` in `step`s over True values of `on`, a gap of
    two False ones bridged."""
    last, i = start, start + step
    while 0 <= i < on.size and (on[i] or (0 <= i + step < on.size and on[i + step])):
        if on[i]:
            last = i
        i += step
    return last


def _own_line(line: np.ndarray, rest: np.ndarray, along: int) -> bool:
    """Whether `line`, one straight stroke running along `along` (1: the rows), could be a
    stroke of the digit `rest` belongs to: clear of the picture's edges along its run (with
    any of it lines.find left out, where a crossing or its tilt broke it up), met near one
    of its ends by the ink beside it (within OWN_NEAR of its length), as a 7's bar is by its
    stem, and reaching beyond all of that digit by OWN_OVER of its length at most. A form's
    line under or through a digit runs on past it, and often to the edge."""
    span = np.flatnonzero(line.any(axis=1 - along))
    across = np.flatnonzero(line.any(axis=along))

    def band(lo: int, hi: int) -> np.ndarray:  # the rest's columns (rows) with ink in rows lo..hi
        part = rest[max(0, lo) : hi + 1] if along == 1 else rest[:, max(0, lo) : hi + 1]
        return part.any(axis=1 - along)

    on = band(across[0] - 3, across[-1] + 3) | line.any(axis=1 - along)
    size = line.shape[along]
    edge = max(1, round(OWN_EDGE * size))
    if _run_on(on, span[0], -1) < edge or _run_on(on, span[-1], 1) >= size - edge:
        return False
    length = span[-1] - span[0] + 1
    reach = np.flatnonzero(rest.any(axis=1 - along))
    if max(0, reach[0] - span[0]) + max(0, span[-1] - reach[-1]) > OWN_OVER * length:
        return False
    near = round(OWN_NEAR * length)
    met = np.flatnonzero(band(across[0] - near, across[-1] + near))
    if not met.size:
        return False
    end = OWN_END * length
    return span[0] >= met[0] - end or span[-1] <= met[-1] + end


def form_lines(found: lines.Lines, ink: np.ndarray) -> lines.Lines | None:
    """`found` without the lines that are a digit's own straight strokes: a 7's bar, a 4's
    stem or a 1 drawn ruler-straight with a pen thin beside the picture, which lines.find
    takes for a form's lines. A piece of `ink` holds its own strokes when its lines are one
    level and one upright at most, each a stroke of the rest of the piece (_own_line), that
    rest reaching across a level one OWN_DEPTH of its length (a comb's base has only its
    teeth); an upright line alone is a 1. A form's lines are several in a piece (a box, a
    grid, a ruled page), reach the picture's edge, run on past the digit they touch, or stand
    alone level (an empty field's underline), and go. None when no line is left."""
    labels = components.label(ink).labels(ink.shape)
    level_all = found.mask & ~found.upright
    keep = np.zeros_like(found.mask)
    for i in np.unique(labels[found.mask]).tolist():
        piece = labels == i
        level, upright = level_all & piece, found.upright & piece
        if lines.bands(level.any(1)) > 1 or lines.bands(upright.any(0)) > 1:
            continue
        rest = piece & ~found.mask
        if not rest.any():
            own = not level.any() and _own_line(upright, upright, 0)
        else:
            rows = np.flatnonzero(rest.any(1))
            own = (
                not level.any()
                or (
                    _own_line(level, rest, 1)
                    and np.ptp(rows) >= OWN_DEPTH * np.ptp(np.flatnonzero(level.any(0)))
                )
            ) and (not upright.any() or _own_line(upright, rest, 0))
        if own:
            keep |= piece & found.mask
    if not keep.any():
        return found
    mask = found.mask & ~keep
    if not mask.any():
        return None
    upright = found.upright & mask
    level = lines.bands((mask & ~upright).any(1))
    return dataclasses.replace(
        found, mask=mask, upright=upright, level=level, count=level + lines.bands(upright.any(0))
    )


def stroke_contrast(m: InkMap, least: int = 0) -> float:
    """How strong the strokes are, in ink units; NoInk when nothing stands out. `least`: the
    smallest digit's extent in pixels in a look finer than the working size, where the image
    holds many times the pixels a digit that small has: its strongest `least` pixels (about
    what a thin stroke of it holds) then set the contrast at least, if fewer than STRONG_FEW
    of the image, and the band left out along the edges is half as deep (a digit that small
    may lie closer to the edge of a page photographed whole than a twentieth of its side)."""
    ink = m.ink
    h, w = ink.shape
    # Stroke contrast, measured away from the edges, where page borders and shadows lie: the
    # 99th percentile of what is marked, or, for a digit too small to be a hundredth of that
    # (3 % of a large photo's side), the strongest few pixels.
    band = 40 if least else 20  # parts of each side
    inner = ink[h // band : h - h // band, w // band : w - w // band]
    marked = inner[inner > max(0.05, 3 * m.noise)]
    strong = 0.0
    if len(marked):
        # Ranks counted from the top: the 99th percentile's and the few strongest pixels'.
        ranks = (
            len(marked) - int(0.99 * (len(marked) - 1)),
            min(len(marked), max(1, round(STRONG_FEW * inner.size)), least or len(marked)),
        )
        if len(marked) < LEVELS:
            ordered = np.sort(marked, axis=None)  # a sort, as in _kth
            p99, top = (float(ordered[len(marked) - r]) for r in ranks)
        else:
            # From a histogram of 1,024 levels: a fraction of a full sort's cost on a
            # canvas's tens of thousands of inked pixels, and finer than the 8-bit input.
            counts = np.bincount((marked * (LEVELS - 1)).astype(np.int32), minlength=LEVELS)
            above = np.cumsum(counts[::-1])  # pixels at or above each level, from the top
            p99, top = ((LEVELS - 1 - int(np.searchsorted(above, r))) / (LEVELS - 1) for r in ranks)
        # The few strongest count only as a clear mark: a blank sheet's grain has such tails.
        strong = max(p99, top) if top >= FEW_MIN else p99
    if strong < max(MIN_INK, 8 * m.noise):
        raise NoInk("No digit found: nothing stands out from the background.")
    return strong


def find_digit(m: InkMap, lossy: bool = False, least: int = 0) -> Found:
    """The ink cropped to the digit, with specks, page edges and a form's lines removed.

    The crop keeps every trace of ink, as MNIST's box includes the faintest anti-aliased rim;
    for lossy formats (JPEG, WebP) the ringing around strokes is not ink, so traces below a
    tenth of the stroke contrast do not count. The smallest digit found at full size is `least`
    pixels, FINE_EXTENT of the longer side unless given.
    """
    strong = stroke_contrast(m, least)
    h, w = m.ink.shape
    side = max(h, w)
    fine = side > 1.25 * ANALYSIS_SIZE  # an analysis at full working size is possible
    try:
        found = _find_at(m, strong, lossy, ANALYSIS_SIZE, MIN_EXTENT)
    except NoInk:
        if not fine:
            raise
        found = None
    if fine and (found is None or found.extent < SMALL_EXTENT * side / ANALYSIS_SIZE):
        # A small digit (under a tenth of the side): found again at full working size,
        # where it is as many pixels as a speck at the coarse size is wide.
        least = least or max(MIN_EXTENT, round(FINE_EXTENT * side))
        found = _find_at(m, strong, lossy, side, least)
    return found


def ink_threshold(m: InkMap, strong: float) -> float:
    """The ink a pixel needs to count as part of a mark, given the stroke contrast."""
    return max(0.35 * strong, 4 * m.noise)


def dilated(mask: np.ndarray, by: int) -> np.ndarray:
    """`mask` grown by `by` pixels every way (a square's reach), within its own bounds; grey
    values take the largest within reach."""
    tall = mask.copy()
    for d in range(1, by + 1):
        np.maximum(tall[d:], mask[:-d], out=tall[d:])
        np.maximum(tall[:-d], mask[d:], out=tall[:-d])
    out = tall.copy()
    for d in range(1, by + 1):
        np.maximum(out[:, d:], tall[:, :-d], out=out[:, d:])
        np.maximum(out[:, :-d], tall[:, d:], out=out[:, :-d])
    return out


def _find_at(m: InkMap, strong: float, lossy: bool, size: int, min_extent: int) -> Found:
    """find_digit's analysis on the ink map shrunk to `size` on its longer side."""
    ink = m.ink
    h, w = ink.shape
    small, scale = _shrink(ink, size)
    threshold = ink_threshold(m, strong)
    binary = small > threshold
    # Lines are looked for at half the threshold: a thin or light one, averaged with the
    # paper beside it when shrunk, may not reach the digit's threshold, and its traces would
    # still stay beside the strokes in the crop.
    faint = small > 0.5 * threshold
    found = lines.find(faint)
    if found is not None:
        found = form_lines(found, faint)
    if found is not None:
        binary &= ~found.mask
        faint &= ~found.mask
    comps = components.label(binary)
    sh, sw = binary.shape
    if _is_noise(comps, sh, sw):
        raise NoInk("No digit found: the image is noise, with no mark standing out of it.")
    candidates = [i for i in range(len(comps)) if not is_border(comps, i, sh, sw)]
    if len(candidates) > 1:
        candidates = off_the_edges(comps, candidates, sh, sw, min_extent)
    if len(candidates) > 1:
        candidates = [
            i
            for i in candidates
            if i == candidates[0] or not is_line_piece(comps, i, candidates[0], found)
        ]
    candidates = strokes(comps, small, candidates)
    extent = [
        max(comps.bottom[i] - comps.top[i], comps.right[i] - comps.left[i]) for i in candidates
    ]
    if not candidates or max(extent) < min_extent:
        raise NoInk("No digit found: no mark is large enough to be a digit.")
    main = candidates[0]
    big = comps.area[main]
    t, le, b, r = comps.top[main], comps.left[main], comps.bottom[main], comps.right[main]
    near = (t - (b - t) / 4, le - (r - le) / 4, b + (b - t) / 4, r + (r - le) / 4)
    keep = [
        i
        for i in candidates
        if comps.area[i] >= FAR_PIECE * big
        or (
            comps.area[i] >= 0.01 * big
            and comps.top[i] >= near[0]
            and comps.left[i] >= near[1]
            and comps.bottom[i] <= near[2]
            and comps.right[i] <= near[3]
        )
    ]
    joined = None
    if len(candidates) > 1:
        keep, joined = _joined_by_faint_ink(comps, candidates, keep, faint)
    mask = binary if len(keep) == len(comps) else comps.mask(binary.shape, keep)
    # Grow the mask so the faint anti-aliased rims of the strokes stay: MNIST's own digits keep
    # theirs up to two pixels out at 28 px; on a smaller thumbnail two pixels would take in
    # the halo of a palette or of compression, so one. Only the kept pieces' box, widened by
    # the growth, can hold grown pixels: the rest of the image is left alone.
    grow = 2 if min(sh, sw) >= 21 else 1
    y0 = max(0, min(comps.top[i] for i in keep) - grow)
    x0 = max(0, min(comps.left[i] for i in keep) - grow)
    y1 = min(sh, max(comps.bottom[i] for i in keep) + grow)
    x1 = min(sw, max(comps.right[i] for i in keep) + grow)
    kept = mask[y0:y1, x0:x1]
    if joined is not None:
        kept = kept | joined[y0:y1, x0:x1]
    region = dilated(kept, grow)
    if scale != 1.0:
        # The mask at full size over the digit's box only, not over the whole image.
        grown = np.zeros(binary.shape, dtype=bool)
        grown[y0:y1, x0:x1] = region
        y0, y1 = int(y0 * h / sh), min(h, int(np.ceil(y1 * h / sh)))
        x0, x1 = int(x0 * w / sw), min(w, int(np.ceil(x1 * w / sw)))
        box = (x0 * sw / w, y0 * sh / h, x1 * sw / w, y1 * sh / h)
        region = np.asarray(
            Image.fromarray(grown).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST, box=box)
        )
    if found is not None:
        region = region & ~_line_pixels(found, (y0, x0, y1, x1), (sh, sw), (h, w))
    crop, (t, le, b, r) = tighten(ink[y0:y1, x0:x1] * region, strong, lossy)
    return Found(
        crop,
        len(keep),
        len(comps) - len(keep),
        found.count if found else 0,
        (y0 + t, x0 + le, y0 + b, x0 + r),
        max(comps.bottom[main] - comps.top[main], comps.right[main] - comps.left[main]) / scale,
        strong,
    )


def tighten(
    digit: np.ndarray, strong: float, lossy: bool
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A digit's ink (everything but its own strokes zeroed) cropped to its traces, and the
    crop's top, left, bottom, right in `digit`.

    The crop keeps every trace of ink, as MNIST's box includes the faintest anti-aliased rim;
    for lossy formats (JPEG, WebP) the ringing around strokes is not ink, so traces below a
    tenth of the stroke contrast do not count."""
    traces = digit > (0.1 * strong if lossy else 0.0)
    rows, cols = np.flatnonzero(traces.any(1)), np.flatnonzero(traces.any(0))
    if not rows.size:  # what was found at analysis size was all a form's line at full size
        raise NoInk("No digit found: no mark is large enough to be a digit.")
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # Strokes as dark as MNIST's: its cores are saturated, a pencil's are not.
    core = float(crop.max())
    if core < 0.9:
        crop = np.clip(crop / core, 0.0, 1.0)
    return crop, (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def strokes(comps: components.Components, values: np.ndarray, pieces: list[int]) -> list[int]:
    """The `pieces` that are strokes, not shade nor a finger. A stroke's ink comes near the
    strongest somewhere; shade that uneven light leaves past the background's estimate (a
    vignette's corners, a page's edge), or a trace of grime, stays under STROKE_PEAK of it
    everywhere, however large."""
    if len(pieces) < 2:
        return pieces
    peak = _peaks(comps, values)
    strongest = max(peak[i] for i in pieces)
    h, w = values.shape

    largest = max(comps.area[i] for i in pieces)
    clear = any(not _at_a_side(comps, i, h, w) and comps.area[i] >= CLEAR * largest for i in pieces)

    def finger(i: int) -> bool:
        t, le, b, r = comps.top[i], comps.left[i], comps.bottom[i], comps.right[i]
        if not (
            _at_a_side(comps, i, h, w)
            and peak[i] < FINGER_PEAK * strongest
            and comps.area[i] >= FINGER_FILL * (b - t) * (r - le)
        ):
            return False
        narrow = min(b - t, r - le) / min(h, w)
        if narrow >= FINGER_WIDTH:
            return True
        other = max(comps.area[j] for j in pieces if j != i)
        return clear and narrow >= THUMB_WIDTH and comps.area[i] >= THUMB_SHARE * other

    return [i for i in pieces if peak[i] >= STROKE_PEAK * strongest and not finger(i)]


def _peaks(comps: components.Components, values: np.ndarray) -> list[float]:
    """The highest of `values` in each component, from its runs."""
    flat = values.ravel()
    w = values.shape[1]
    bounds = np.empty(2 * len(comps.run_row), dtype=np.int64)
    bounds[0::2] = comps.run_row * w + comps.run_start
    bounds[1::2] = comps.run_row * w + comps.run_end
    # reduceat over [start, end) of each run, and over the gaps between runs, which are dropped.
    if bounds[-1] == flat.size:
        flat = np.append(flat, 0)
    run_peak = np.maximum.reduceat(flat, bounds)[0::2]
    peaks = np.zeros(len(comps), dtype=np.float32)
    np.maximum.at(peaks, comps.run_component, run_peak)
    return peaks.tolist()


def _joined_by_faint_ink(
    comps: components.Components, candidates: list[int], keep: list[int], faint: np.ndarray
) -> tuple[list[int], np.ndarray]:
    """(the pieces kept, with those that fainter ink joins to them; that fainter ink). A
    blurry or light stroke breaks into pieces at the digit's threshold where it thins (an
    upscaled thumbnail's 0 into arcs, a pencil 6 into its stem and a loop), and a piece away
    from the rest is dropped as dirt: at half the threshold the stroke is whole again."""
    weak = components.label(faint)
    # Each piece's place in the fainter image, from its first run's first pixel: the piece
    # lies inside one faint component, as everything above the threshold is above half of it.
    _, first = np.unique(comps.run_component, return_index=True)
    width = faint.shape[1] + 1
    starts = weak.run_row * width + weak.run_start
    pixel = comps.run_row[first] * width + comps.run_start[first]
    inside = weak.run_component[np.searchsorted(starts, pixel, side="right") - 1].tolist()
    whole = {inside[i] for i in keep}
    keep = [i for i in candidates if i in keep or inside[i] in whole]
    return keep, weak.mask(faint.shape, sorted(whole))


def _line_pixels(
    found: lines.Lines,
    box: tuple[int, int, int, int],
    small: tuple[int, int],
    full: tuple[int, int],
) -> np.ndarray:
    """The lines' pixels over `box` (top, left, bottom, right at full size), widened by a pixel
    at analysis size so that their soft, compressed edges go with them."""
    mask = found.mask
    wide = mask.copy()
    wide[1:] |= mask[:-1]
    wide[:-1] |= mask[1:]
    wide[:, 1:] |= mask[:, :-1]
    wide[:, :-1] |= mask[:, 1:]
    (sh, sw), (h, w) = small, full
    y0, x0, y1, x1 = box
    if (sh, sw) == (h, w):
        return wide[y0:y1, x0:x1]
    scaled = (x0 * sw / w, y0 * sh / h, x1 * sw / w, y1 * sh / h)
    return np.asarray(
        Image.fromarray(wide).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST, box=scaled)
    )


def stroke_width(ink: np.ndarray, side: int = 64) -> float:
    """The strokes' typical width in pixels: over the ink, the median of the shorter of the
    row's and the column's run through each pixel. Ink pixels are mostly the digit's where a
    form's thin lines or specks are left beside it, as the mean would not be. Measured at the
    pixels of every k-th row and column (k making them about `side` a side), whose runs are
    found along those rows and columns only: a fraction of the full size's time."""
    marked = ink > 0.5
    k = max(1, max(ink.shape) // side)
    rows = lines.run_lengths(marked[::k])[:, ::k]
    cols = lines.run_lengths(np.ascontiguousarray(marked[:, ::k].T)).T[::k]
    sampled = marked[::k, ::k]
    if not sampled.any():
        return 0.0
    return float(np.median(np.minimum(rows, cols)[sampled]))


def fit(crop: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The digit scaled into the box and centred by centre of mass, strokes too thin for the
    models widened first: uint8 [height, width]."""
    h, w = crop.shape
    scale = spec.digit_box / max(h, w)
    width = stroke_width(crop) * scale
    if 0 < width < THIN:
        by = math.ceil((STROKE - width) / scale / 2)
        crop = dilated(np.pad(crop, by), by)
        h, w = crop.shape
        scale = spec.digit_box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        crop = np.asarray(_as_l(crop).resize(size, resample), dtype=np.float32) / 255.0
    fh, fw = crop.shape
    mass = float(crop.sum())
    if mass <= 0:
        raise NoInk("No digit found.")
    cy = float((crop.sum(1) * np.arange(fh)).sum() / mass)
    cx = float((crop.sum(0) * np.arange(fw)).sum() / mass)
    # Plain min/max: np.clip on a scalar costs more than the rest of this function.
    top = min(max(round(spec.centre_of_mass[0] - cy), 0), spec.height - fh)
    left = min(max(round(spec.centre_of_mass[1] - cx), 0), spec.width - fw)
    out = np.zeros((spec.height, spec.width), dtype=np.float32)
    out[top : top + fh, left : left + fw] = crop
    return np.round(out * 255.0).astype(np.uint8)


def shape_of(pixels: np.ndarray, parts: int) -> Shape:
    """The fitted digit's shape; `parts` is how many pieces find_digit kept."""
    binary = pixels > 127
    inked = int(binary.sum())
    ink = int(pixels.sum()) / pixels.size / 255.0  # the mean, exactly, without np.mean's cost
    if not inked:
        return Shape(ink=ink, parts=parts, edge_ratio=1.0)
    p = np.zeros((binary.shape[0] + 2, binary.shape[1] + 2), dtype=bool)  # np.pad is slow
    p[1:-1, 1:-1] = binary
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return Shape(ink=ink, parts=parts, edge_ratio=(inked - int(interior.sum())) / inked)


def normalise(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    ink = pixels.astype(np.float32) / 255.0
    if not spec.ink_high:
        ink = 1.0 - ink
    return ((ink - spec.mean) / spec.std)[None].astype(np.float32)


def _zoom_in(image: Image.Image, m: InkMap, found: Found, lossy: bool) -> Found:
    """A small digit in a large image found again on the decoded pixels around it: at working
    size it has a few dozen pixels at most, and the upload more."""
    y0, x0, y1, x1 = found.box
    extent = max(y1 - y0, x1 - x0)
    if extent >= ZOOM_BELOW or max(image.size) / max(m.ink.shape) < 1.5:
        return found
    # One digit's size of paper each side: enough to see the paper, not the rest of the page.
    box = _in_image(image, m, found.box, extent)
    try:
        return find_digit(ink_map(to_grey(image.crop(box))), lossy)
    except NoInk:
        return found


def _in_image(
    image: Image.Image, m: InkMap, box: tuple[int, int, int, int], margin: int = 0
) -> tuple[int, int, int, int]:
    """`box` (top, left, bottom, right in the ink map), `margin` wider each way, as a crop box
    of the decoded image (left, top, right, bottom), within it."""
    ratio = max(image.size) / max(m.ink.shape)
    y0, x0, y1, x1 = box
    return (
        max(0, round((x0 - margin) * ratio)),
        max(0, round((y0 - margin) * ratio)),
        min(image.width, round((x1 + margin) * ratio)),
        min(image.height, round((y1 + margin) * ratio)),
    )


def on_the_paper(
    image: Image.Image, m: InkMap, found: Found, lossy: bool
) -> tuple[InkMap, Found, tuple[int, int, int, int]] | None:
    """The digit on a sheet or sticky note that fills about half a photo of a desk or less:
    the desk is then the background the ink map takes, and the paper, lighter, is found as
    a solid mark. Looked at alone, with dark ink, the paper is the background again, and
    the digit is what lies inside it. The paper's ink map, what was found on it, and the
    paper's crop box in `image`; None where what was found is no sheet, or nothing with
    strokes lies on it."""
    y0, x0, y1, x1 = found.box
    h, w = m.ink.shape
    if m.inverted or (y1 - y0) * (x1 - x0) < SHEET * h * w or float(found.crop.mean()) < FILLED:
        return None
    if _left_when_worn(m, found, SHEET_WORN) < SOLID:
        return None
    box = _in_image(image, m, found.box)
    try:
        paper = _off_the_desk(ink_map(to_grey(image.crop(box)), inverted=True), m, found)
        on_it = find_digit(paper, lossy)
    except NoInk:
        return None
    t, le, b, r = on_it.box
    ph, pw = paper.ink.shape
    if t == 0 or le == 0 or b == ph or r == pw or on_it.strong >= DRAWN:
        return None
    # A light digit's hole, seen so, is a solid blob too: the dark inside of a bold 0.
    if _left_when_worn(paper, on_it, STROKES_WORN) > STROKES_LEFT:
        return None
    return paper, on_it, box


def _off_the_desk(paper: InkMap, m: InkMap, found: Found) -> InkMap:
    """`paper`, the look at a sheet found as `found` in `m`, without the desk its box holds
    beyond the sheet's edges (the corners of a sticky note turned askew), a little widened:
    the sheet is what lies between its marks' ends along each row and along each column,
    so a digit on it, a hole in those marks, is on the sheet even where it nears an edge."""
    sheet = found.crop > ink_threshold(m, found.strong)

    def between(mask: np.ndarray) -> np.ndarray:
        n = mask.shape[1]
        first = mask.argmax(1)[:, None]
        last = n - 1 - mask[:, ::-1].argmax(1)[:, None]
        at = np.arange(n)[None, :]
        return (at >= first) & (at <= last) & mask.any(1)[:, None]

    desk = ~(between(sheet) & between(sheet.T).T)
    if not desk.any():
        return paper
    ph, pw = paper.ink.shape
    desk = np.asarray(Image.fromarray(desk).resize((pw, ph), Image.Resampling.NEAREST))
    ink = np.where(dilated(desk, max(1, round(DESK_RIM * max(ph, pw)))), 0.0, paper.ink)
    return InkMap(ink.astype(np.float32), paper.inverted, paper.noise)


def _left_when_worn(m: InkMap, found: Found, share: float) -> float:
    """The share of what was found's box still marked after its marks are worn away by
    `share` of the box's longer side each way: strokes go, solid regions stay."""
    mask = found.crop > ink_threshold(m, found.strong)
    return float((~dilated(~mask, max(1, round(share * max(mask.shape))))).mean())


# preprocess_many takes a batch step by step, each step over a group of uploads: the step's
# code then stays in the CPU's caches from one upload to the next (256 28x28 PNGs: about a
# fifth less CPU for the whole request than image after image). A group ends once its decoded
# pixels reach this, so a batch of large images holds a few at a time, as one large image.
GROUP_PIXELS = 1_000_000


@dataclass
class _Work:
    """An upload on its way through the steps; each step fills in its field."""

    data: bytes
    upload: Decoded
    spec: InputSpec
    max_pixels: int
    grey: np.ndarray | None = None
    m: InkMap | None = None
    blank: NoInk | None = None  # why the look at working size found no digit
    found: Found | None = None
    done: Preprocessed | None = None

    @property
    def lossy(self) -> bool:
        return self.upload.format in LOSSY_FORMATS


def as_fitted(image: Image.Image, spec: InputSpec) -> np.ndarray | None:
    """The image's pixels, ink high, when it already is a digit as the models take it: the
    input's size, one grey channel, ink as strong as a stroke, the background's exact value
    outside the ink's box, that box `digit_box` on its longer side, and the centre of mass
    within half a pixel of the input's (a whole-pixel shift moves it there). An MNIST digit as
    stored is one; fitting it again would only resample it. Otherwise None."""
    if image.mode != "L" or image.size != (spec.width, spec.height):
        return None
    pixels = np.asarray(image)
    if not spec.ink_high:
        pixels = 255 - pixels
    if pixels.max() < FITTED_INK:
        return None
    rows, cols = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
    if max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 != spec.digit_box:
        return None
    ink = pixels.astype(np.float32)
    mass = float(ink.sum())
    cy = float(ink.sum(1) @ np.arange(spec.height, dtype=np.float32)) / mass
    cx = float(ink.sum(0) @ np.arange(spec.width, dtype=np.float32)) / mass
    if abs(cy - spec.centre_of_mass[0]) > 0.5 or abs(cx - spec.centre_of_mass[1]) > 0.5:
        return None
    return pixels


def _as_given(w: _Work) -> None:
    pixels = as_fitted(w.upload.image, w.spec)
    if pixels is None:
        return
    w.done = _prepared(w, pixels, not w.spec.ink_high, len(components.label(pixels > 127)))


def _grey(w: _Work) -> None:
    w.grey = to_grey(w.upload.image)


def _ink(w: _Work) -> None:
    try:
        w.m = ink_map(w.grey)
    except NoInk as e:
        w.blank = as_value(e)  # _find looks again, wider
    w.grey = None  # the later steps need the ink map only: a group holds less


def _find(w: _Work) -> None:
    """The digit at working size; where there is none, or where what stands out there is no
    stronger than uneven light, look_at's second look, wider. A digit on a page photographed
    whole may be too small to see at working size, beside the shade of the page's corners:
    the wider look's find is kept when its strokes stand out WIDER_GAIN times as strongly."""
    if w.blank is None:
        try:
            w.found = find_digit(w.m, w.lossy)
        except NoInk as e:
            w.blank = as_value(e)
        if w.found is not None and w.found.strong >= SHADE:
            return

    def look(grey: np.ndarray, side: int) -> tuple[InkMap, Found]:
        m = ink_map(grey)
        return m, find_digit(m, w.lossy, least=round(FINE_EXTENT * side))

    try:
        wide = look_wide(w.data, w.upload, w.max_pixels, look)
    except NoInk:
        if w.found is None:
            raise
        wide = None
    if wide is not None:
        upload, _, (m, found) = wide
        if w.found is None or found.strong > WIDER_GAIN * w.found.strong:
            w.upload, w.m, w.found = upload, m, found
    if w.found is None:
        raise w.blank


def _zoom(w: _Work) -> None:
    """What was found looked at again on the decoded pixels: a sheet of paper, or a digit
    small at working size."""
    paper = on_the_paper(w.upload.image, w.m, w.found, w.lossy)
    if paper is not None:
        w.m, w.found, _ = paper
        return
    w.found = _zoom_in(w.upload.image, w.m, w.found, w.lossy)


def _fitted(w: _Work) -> None:
    f = w.found
    w.done = _prepared(w, fit(f.crop, w.spec), w.m.inverted, f.kept, f.dropped, f.lines)


def _prepared(
    w: _Work, pixels: np.ndarray, inverted: bool, kept: int, dropped: int = 0, lines: int = 0
) -> Preprocessed:
    """The fitted pixels of `w`'s upload as the models take them, with what was found."""
    return Preprocessed(
        pixels=pixels,
        tensor=normalise(pixels, w.spec),
        source_size=w.upload.size,
        inverted=inverted,
        components_kept=kept,
        components_dropped=dropped,
        lines_removed=lines,
        shape=shape_of(pixels, kept),
    )


# After decoding: an upload already fitted is done; the others go through the look at working
# size (a second one, wider, where it finds no ink or only shade), a sheet found as a mark
# looked at alone or a small digit found again on the decoded pixels, the fit.
STEPS = (_as_given, _grey, _ink, _find, _zoom, _fitted)


def preprocess(data: bytes, spec: InputSpec, max_pixels: int) -> Preprocessed:
    w = _Work(data, decode(data, max_pixels), spec, max_pixels)
    for step in STEPS:
        step(w)
        if w.done is not None:
            break
    return w.done


def preprocess_many(
    images: list[bytes], spec: InputSpec, max_pixels: int
) -> list[Preprocessed | ApiError]:
    """One Preprocessed per image, or the ApiError that image raised, in order: what
    preprocess gives each, step by step over groups of uploads (GROUP_PIXELS)."""
    out: list[Preprocessed | ApiError | None] = [None] * len(images)

    def finish(group: list[tuple[int, _Work]]) -> None:
        for step in STEPS:
            live = []
            for i, w in group:
                try:
                    step(w)
                except ApiError as e:
                    out[i] = as_value(e)
                    continue
                if w.done is None:
                    live.append((i, w))
                else:
                    out[i] = w.done
            group = live

    group: list[tuple[int, _Work]] = []
    pixels = 0
    for i, data in enumerate(images):
        try:
            w = _Work(data, decode(data, max_pixels), spec, max_pixels)
        except ApiError as e:
            out[i] = as_value(e)
            continue
        group.append((i, w))
        pixels += w.upload.image.width * w.upload.image.height
        if pixels >= GROUP_PIXELS:
            finish(group)
            group, pixels = [], 0
    finish(group)
    return out


def as_value(e: ApiError) -> ApiError:
    """The error without what raising it attached. Its traceback's frames hold this list (a
    reference cycle) and the decoded image, and its context the decoder's own error with more
    frames: kept as an answer, it held every refused image's pixels until a full collection."""
    e.__traceback__ = e.__context__ = e.__cause__ = None
    return e
