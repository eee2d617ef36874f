"""A number in an image: its digits, left to right, each fitted as a single digit is.

On the preprocessing's own ink map (polarity, lighting, paper colour and a form's lines already
dealt with, server/preprocess.py):

  pieces   connected pieces of ink above the digit threshold; page borders, shade (ink that
           peaks under half the strongest piece's), a form's lines and their scraps dropped,
           as for one digit
  groups   pieces that share columns (a 5's flag, a dot above, a 7's bar drawn apart) or a
           short piece close beside another (a 4 drawn in two strokes) make one digit;
           specks are attached to the digit they lie at, or dropped
  splits   a group that may be touching digits is cut along paths of least ink that start
           at minima of its column profile (and where a narrow digit would meet a wide one),
           and straight down from the same columns;
           the models read the group whole and cut, and the group's width, the cut's shape
           (through one stroke, into parts standing on one baseline) and the readings decide,
           the models' beside the bundle's whole-digit check (is it one whole digit?; a
           group it vouches for is cut only where the readings say so);
           a part as wide as a pair is looked at again, and so is a group that the models
           read unsure whole or that the check doubts, with its straight cuts (and if too
           narrow for a pair, its cuts that are not clean; as narrow as two 1s, its cuts
           that do not run along a stroke)
  fit      each digit's own ink (its neighbours' removed) through the single digit's steps:
           preprocess.tighten, fit, normalise

Every candidate of a round goes to the models in one batch, and the readings of the kept
candidates are the answer: an image costs one run of the models per round, a second when a cut
leaves a part as wide as a pair or a narrow group reads unsure. Digits under ZOOM_HEIGHT px
tall at working size are cut again from the upload's pixels (the number's region only) at up
to ZOOM_TARGET px, where touching strokes part more clearly; a JPEG that decoding reduced
(draft mode) is decoded again for them, less reduced, when they are under DETAIL px there.
A number too small for the first look (digits under FINE_EXTENT of a large upload's side, as
on a page photographed whole) is looked for at up to preprocess.WIDE times the working size.
python -m bench.numbers (bench/results/numbers.md) reads 94.5 % of its main set's numbers
exactly. Of the 22 it misses, 7 have a digit too many or too few; the others a digit read
wrong, often where touching digits were cut in the wrong place (a 6 losing its stem, a 4's arm
given to its neighbour), or one that MNIST's writer made look like another. Its digits read
alone are right 99.4 % of the time: about 97.6 % of its numbers at best.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from server import components, lines
from server.errors import NoInk, TooManyDigits
from server.manifest import InputSpec
from server.preprocess import (
    ANALYSIS_SIZE,
    FINE_EXTENT,
    LOSSY_FORMATS,
    MIN_EXTENT,
    Decoded,
    InkMap,
    Preprocessed,
    decode,
    dilated,
    find_digit,
    fit,
    ink_map,
    ink_threshold,
    is_border,
    is_line_piece,
    look_at,
    normalise,
    off_the_edges,
    on_the_paper,
    region,
    shape_of,
    stroke_contrast,
    strokes,
    tighten,
    to_grey,
)

if TYPE_CHECKING:  # the models' outputs; segmenting imports no runtime
    from server.ensemble import Outputs

MAX_DIGITS = 32
# Sizes relative to the number's digit height (the height most of its large pieces have).
SPECK = 0.3  # a piece shorter and narrower than this is a speck: attached to a digit or dropped
DIRT = 0.15  # of the largest digit's ink: a smaller mark under half the height is dirt
SHORT = 0.75  # a piece shorter than this is part of a digit (a 4's corner, a 5's flag, a 7's
# bar) when it lies close beside a taller one; MNIST's digits are 0.7 of their height or taller
# in 98.5 % of cases, and a wrongly joined short digit is cut apart again by the splits
BESIDE = 0.2  # the widest gap between a short piece and the piece it belongs to
ABOVE = 0.45  # the widest gap between a short piece above another and the piece it belongs to
# Widths (relative to the height) of one MNIST test digit's ink box: median 0.8, 99th
# percentile 1.43, 99.9th 1.67. Two digits side by side are at least about 1.0 wide.
ADDS = 0.95  # how sure of both parts the models must be for a narrow digit beside another
ADDS_LOOSE = 0.99  # the same through a cut that is not clean
MAY_SPLIT = 0.6  # a group this wide may hold a narrow digit (a 1) touching another
# A narrower group this wide may be two 1s touching: its cuts are read when the models are
# unsure of it whole, those that do not run along a stroke (through ink over more than ALONG of
# the height, as a cut down the length of one slanted 1 does).
TWO_ONES = 0.35
ALONG = 0.75
PAIR_WIDTH = 0.9  # this wide, any two touching digits; a part this wide is looked at again
SPLIT_IF_SURER = 1.2  # this wide: cut when the models are surer of the cut than of the whole
TALL = 0.75  # parts of a clean cut are at least this tall, of the digit height
LEVEL = 0.2  # the parts of a clean cut end this close to one baseline
ACROSS = 0.2  # a clean cut is in ink over this share of the digit height at most
SURE = 0.9  # the models' mean probability above which a narrow group read whole stays whole
NARROWEST = 0.15  # a cut leaves parts at least this wide
LOWEST = 0.5  # and at least this tall
CUTS = 3  # column profile minima tried as cuts per group
NEAR = 0.1  # of a group's ink: a straight cut whose parts differ less from a cut made is not
# Where else cuts start, of the group's width: where a narrow digit (a 1) or an even pair meet.
EVEN_CUTS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8)
# The weighing of a cut against the whole group, in log-likelihood terms (_choose).
CLEAN_BONUS = 0.5  # for a clean cut
CROSSING_COST = 0.25  # for each stroke the cut goes through beyond the first (touching
# digits may meet twice: a 5's bar and its bowl both on the 0 beside it)
WIDE_COST = 1.0  # against the whole, per unit of width over PAIR_WIDTH
MARGIN = 0.5  # by which the cut must win
# Of the log of the whole-digit check's score, in the likelihood of a part and of a whole.
CHECK_WEIGHT = 0.15
# Of the digit height: a narrower glyph goes without the check's say, which takes a 1 for a
# part of a digit (41 was read as 4).
CHECK_NARROW = 0.5
# The check's score from which a group is one digit unless the models' readings of a cut say
# otherwise: a 0 open at the bottom, cut through its top, leaves two clean parts the models
# read surely (1 and 7), and a 9 with an open loop two loose ones (6 and 1). Such a group keeps
# only the weighing of the readings, without the clean cut's bonus, and no loose cut.
WHOLE = 0.9
# The confidence a part as wide as SPLIT_IF_SURER counts with: it is cut again, and what the
# models make of it whole says nothing of this cut. A part still to be cut is a less likely
# digit than one read surely (bench.numbers reads the same at 0.5 to 0.7, less at SURE).
WIDE_PART = 0.7
BAND = 0.2  # how far a cut's path may wander from its starting column
PATH_ROWS = 64  # a cut's path through a taller group is found on pairs of its rows
STEM = 1.3  # of the digit height: an upright line no taller is a 1, not a form's line
ROUNDS = 4  # rounds of cutting: a group of five touching digits needs three
ZOOM_HEIGHT = 64  # px at working size: digits smaller are cut again from the upload's pixels
ZOOM_TARGET = 96  # px: the digit height that second look is made at
ZOOM_MAX_SIDE = 1024  # px: the largest working image of that second look
DETAIL = 40  # px in the decoded image: a digit smaller has lost strokes to a JPEG's draft mode


Reader = Callable[[np.ndarray], "Outputs"]  # normalised tensors [N, 1, H, W] -> the models' vote


@dataclass(frozen=True)
class Digit:
    """One digit of a number: what the models saw and said, and where it is."""

    prepared: Preprocessed
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the upload's pixels
    out: Outputs  # the models' reading of the round that kept this digit ...
    index: int  # ... at this index


@dataclass(frozen=True)
class Number:
    digits: list[Digit]  # left to right
    source_size: tuple[int, int]
    inverted: bool
    kept: int  # pieces of ink kept as digits
    dropped: int  # specks, page borders and line scraps dropped
    lines: int  # a form's long straight lines removed
    cuts: int  # cuts made between touching digits


@dataclass
class _Glyph:
    """A candidate digit at working size: its ink above the threshold, over its box."""

    mask: np.ndarray  # bool [bottom - top, right - left]
    top: int
    left: int
    pieces: int
    height_ref: float  # the number's digit height, for its width test
    prepared: Preprocessed | None = None
    crop_box: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right at work size
    reading: tuple[Outputs, int] | None = None
    cuts: list[_Cut] = field(default_factory=list)  # ways to cut it in two
    # A narrow group's cuts that are not clean, read in the next round only when the models are
    # unsure of it whole: a 1 leaning on its neighbour over many rows is cut through more than
    # one stroke's width, and reading such cuts of every narrow digit costs 30 % more reads.
    loose: list[_Cut] = field(default_factory=list)
    # The cuts that made it: (first row, each row's cut column, this part is left of it), all
    # at working size. Its faint rim stays on its side of them, its neighbour's on theirs.
    sides: list[tuple[int, np.ndarray, bool]] = field(default_factory=list)

    @property
    def bottom(self) -> int:
        return self.top + self.mask.shape[0]

    @property
    def right(self) -> int:
        return self.left + self.mask.shape[1]

    def width_ratio(self) -> float:
        h = max(self.mask.shape[0], 0.8 * self.height_ref)
        return self.mask.shape[1] / h

    def loose_unread(self) -> bool:
        """It has loose cuts the models have not read yet."""
        return bool(self.loose) and self.loose[0].left.reading is None


@dataclass(frozen=True)
class _Cut:
    left: _Glyph
    right: _Glyph
    crossings: int  # strokes the cut goes through
    inked: int  # rows where it goes through ink
    straight: bool = False  # straight down, not along a path of least ink

    def clean(self, height: float) -> bool:
        """Cut as touching digits are: across one stroke at most (not along it), into two
        parts as tall as digits (a cut through a 4's bar or a 7's leaves a short part)."""
        a, b = self.left, self.right
        tall = min(a.mask.shape[0], b.mask.shape[0]) >= TALL * height
        # Side by side on one baseline (give or take the drift of handwriting): the parts of
        # one digit are not (a 4's corner ends at its bar, above the foot of its stem).
        level = abs(a.bottom - b.bottom) <= LEVEL * height
        return self.crossings <= 1 and self.inked <= ACROSS * height and tall and level


@dataclass
class _Page:
    """One look at the upload: its ink map and what the number is made of there."""

    m: InkMap
    strong: float
    lossy: bool
    binary: np.ndarray  # the ink of every kept piece
    glyphs: list[_Glyph]
    height: float  # the digits' height
    kept: int
    dropped: int
    lines: int


class _Union:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def root(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = x = self.parent[self.parent[x]]
        return x

    def join(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


Box = tuple[int, int, int, int]  # top, left, bottom, right


def _box(c: components.Components, members: list[int]) -> Box:
    return (
        min(c.top[i] for i in members),
        min(c.left[i] for i in members),
        max(c.bottom[i] for i in members),
        max(c.right[i] for i in members),
    )


def _stacked(a: Box, b: Box, height: float) -> bool:
    """Two pieces of one digit in shared columns: one inside the other's columns (a 7's bar
    over its stem), or one above the other (a 5's flag, a loop drawn apart). Two tall pieces
    side by side are two digits, even when a slant makes their columns overlap a little."""
    wa, wb = a[3] - a[1], b[3] - b[1]
    ha, hb = a[2] - a[0], b[2] - b[0]
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    tall = min(ha, hb) >= SHORT * max(height, ha, hb)
    if overlap >= (0.8 if tall else 0.5) * min(wa, wb):
        return True
    rows = min(a[2], b[2]) - max(a[0], b[0])
    # A 5's flag drawn apart sits above its body, farther off than pieces side by side do.
    above = (ha < hb and a[2] <= b[0]) or (hb < ha and b[2] <= a[0])
    return not tall and overlap > 0 and -rows <= (ABOVE if above else BESIDE) * height


def _beside(a: Box, b: Box, height: float) -> float | None:
    """The gap between a short piece `a` and a piece `b` close beside it in the same rows
    (a 4's corner drawn apart from its stem), or None."""
    rows = min(a[2], b[2]) - max(a[0], b[0])
    gap = max(a[1], b[1]) - min(a[3], b[3])
    if rows <= 0 or gap > BESIDE * height:
        return None
    return gap


def _form_lines(m: InkMap, strong: float, height: float) -> lines.Lines | None:
    """A form's long straight lines, looked for as preprocess._find_at looks for them. Upright
    lines alone, none taller than STEM digit heights (`height`), are the number's 1s."""
    found = lines.find(m.ink > 0.5 * ink_threshold(m, strong))
    if found is None or found.level:
        return found
    upright = components.label(found.mask)
    if max(b - t for t, b in zip(upright.top, upright.bottom, strict=True)) <= STEM * height:
        return None
    return found


def _look(m: InkMap, lossy: bool, strong: float, found: lines.Lines | None, side: int = 0) -> _Page:
    """The pieces of ink of one look at the upload (`strong`: its stroke contrast), grouped
    into candidate digits; a form's lines, when `found`, removed first. The smallest digit is
    a share of `side`, the ink map's longer side unless given."""
    threshold = ink_threshold(m, strong)
    binary = m.ink > threshold
    h, w = binary.shape
    if found is not None:
        binary &= ~found.mask
    side = side or max(h, w)
    # The single digit's smallest mark: MIN_EXTENT at analysis size, FINE_EXTENT at full size.
    smallest = MIN_EXTENT * side / ANALYSIS_SIZE if side <= 1.25 * ANALYSIS_SIZE else 0
    smallest = max(MIN_EXTENT, min(smallest or FINE_EXTENT * side, FINE_EXTENT * side))
    comps = components.label(binary)
    pieces = [i for i in range(len(comps)) if not is_border(comps, i, h, w)]
    if len(pieces) > 1:
        pieces = off_the_edges(comps, pieces, h, w, round(smallest))
    if len(pieces) > 1:
        pieces = [
            i for i in pieces if i == pieces[0] or not is_line_piece(comps, i, pieces[0], found)
        ]
    pieces = strokes(comps, m.ink, pieces)  # shade dropped, as for one digit
    extent = [max(comps.bottom[i] - comps.top[i], comps.right[i] - comps.left[i]) for i in pieces]
    if not pieces or max(extent) < smallest:
        raise NoInk("No digit found: no mark is large enough to be a digit.")
    # The digits' height: of the pieces with a tenth of the largest one's ink, the height
    # three quarters of them reach (a digit broken in two lowers the median, not this).
    big = comps.area[pieces[0]]
    heights = sorted(comps.bottom[i] - comps.top[i] for i in pieces if comps.area[i] >= 0.1 * big)
    height = float(heights[round(0.75 * (len(heights) - 1))])
    large = [i for i, e in zip(pieces, extent, strict=True) if e >= SPECK * height]
    specks = [i for i, e in zip(pieces, extent, strict=True) if e < SPECK * height]
    large.sort(key=lambda i: comps.left[i])
    union = _Union(len(large))
    for a in range(len(large)):
        for b in range(a + 1, len(large)):
            if comps.left[large[b]] >= comps.right[large[a]]:
                break  # sorted by left edge: every later piece starts farther right
            if _stacked(_box(comps, [large[a]]), _box(comps, [large[b]]), height):
                union.join(a, b)
    groups: dict[int, list[int]] = {}
    for a, i in enumerate(large):
        groups.setdefault(union.root(a), []).append(i)
    members = list(groups.values())
    # A short group (beside the number's digits or its neighbour) joins the one nearest beside
    # it, that one only: joined to every neighbour, a stray stroke between two digits would
    # make them one.
    for g in sorted(members, key=lambda g: _box(comps, g)[2] - _box(comps, g)[0]):
        if not g:  # already joined to another
            continue
        a = _box(comps, g)
        near = []
        for k, other in enumerate(members):
            if other is g or not other:
                continue
            b = _box(comps, other)
            gap = _beside(a, b, height)
            if gap is not None and a[2] - a[0] < SHORT * max(height, b[2] - b[0]):
                near.append((gap, k))
        if near:
            members[min(near)[1]].extend(g)
            g.clear()
    members = [g for g in members if g]
    # A speck belongs to the digit whose box, widened by a quarter, holds it (a dot of a broken
    # stroke); elsewhere it is dirt. As preprocess._find_at keeps pieces near the digit.
    dropped = len(comps) - len(pieces)
    for s in specks:
        for g in members:
            t = min(comps.top[i] for i in g)
            b = max(comps.bottom[i] for i in g)
            le = min(comps.left[i] for i in g)
            r = max(comps.right[i] for i in g)
            dy, dx = (b - t) / 4, (r - le) / 4
            if (
                comps.top[s] >= t - dy
                and comps.bottom[s] <= b + dy
                and comps.left[s] >= le - dx
                and comps.right[s] <= r + dx
                and comps.area[s] >= 0.01 * sum(comps.area[i] for i in g)
            ):
                g.append(s)
                break
        else:
            dropped += 1
    # A mark under half the height with little ink, away from every digit, is dirt.
    area = [sum(comps.area[i] for i in g) for g in members]
    extent_of = {i: e for i, e in zip(pieces, extent, strict=True)}
    kept = [
        g
        for g, a in zip(members, area, strict=True)
        if a >= DIRT * max(area) or max(extent_of[i] for i in g) >= 0.5 * height
    ]
    dropped += sum(len(g) for g in members if g not in kept)
    members = kept
    if len(members) > MAX_DIGITS:
        raise TooManyDigits(
            f"{len(members)} separate marks found; a number has at most {MAX_DIGITS} digits."
        )
    lab = comps.labels((h, w))
    kept_ids = [i for g in members for i in g]
    keep = np.zeros(len(comps) + 1, dtype=bool)
    keep[kept_ids] = True
    all_ink = keep[lab]  # index -1 is the last entry, False
    glyphs = []
    for g in members:
        t = min(comps.top[i] for i in g)
        b = max(comps.bottom[i] for i in g)
        le = min(comps.left[i] for i in g)
        r = max(comps.right[i] for i in g)
        mask = np.isin(lab[t:b, le:r], g)
        glyphs.append(_Glyph(mask, t, le, len(g), height))
    return _Page(
        m,
        strong,
        lossy,
        all_ink,
        glyphs,
        height,
        len(kept_ids),
        dropped,
        found.count if found else 0,
    )


def _cut_paths(mask: np.ndarray, starts: list[int], band: int) -> list[np.ndarray]:
    """For each start, the column where each row is cut (pixels left of it go left): the
    path from top to bottom through the least ink, moving at most a pixel sideways per row,
    within `band` of its start, with a small cost for leaving it. All starts in one pass
    over the rows. A mask taller than PATH_ROWS is cut on pairs of its rows, each pair alike,
    halved again while still taller: the cost of a path is in its rows, and a touching pair's
    meeting leans far less than a pixel per row."""
    h, w = mask.shape
    if h > PATH_ROWS:
        pairs = mask[: h - h % 2 : 2] | mask[1 : h - h % 2 : 2]
        if h % 2:
            pairs = np.vstack([pairs, mask[-1:]])
        return [np.repeat(p, 2)[:h] for p in _cut_paths(pairs, starts, band)]
    cols = np.arange(w)[None, :]
    dist = np.abs(cols - np.array(starts)[:, None])
    inside = (dist <= band) & (cols >= 1) & (cols <= w - 2)
    extra = np.where(inside, 0.05 * dist / max(1, band), np.inf).astype(np.float32)
    # Each row's cost for each start at once; the loop over rows is the only Python loop.
    cost = mask.astype(np.float32)[:, None, :] + extra[None]
    acc = cost[0]
    back = np.zeros((h, *acc.shape), dtype=np.int8)
    side = np.full((acc.shape[0], w + 2), np.inf, dtype=np.float32)
    for y in range(1, h):
        side[:, 1:-1] = acc
        from_left = side[:, :-2] + 0.1  # arriving from column x - 1
        from_right = side[:, 2:] + 0.1
        # Ties go left, then straight on: the first of (left, straight, right) that is least.
        left = (from_left <= acc) & (from_left <= from_right)
        right = ~left & (from_right < acc)
        back[y] = right.view(np.int8) - left.view(np.int8)
        acc = np.where(left, from_left, np.where(right, from_right, acc)) + cost[y]
    paths = np.empty((len(starts), h), dtype=np.int64)
    x = acc.argmin(1)
    every = np.arange(len(starts))
    for y in range(h - 1, -1, -1):
        paths[:, y] = x
        x = x + back[y, every, x]
    return list(paths)


def _crossings(mask: np.ndarray, path: np.ndarray) -> tuple[int, int]:
    """Strokes a cut path goes through (runs of inked rows along it, a one-row gap closed),
    and the rows where it is in ink."""
    on = mask[np.arange(len(path)), np.minimum(path, mask.shape[1] - 1)]
    inked = int(on.sum())
    on[1:-1] |= on[:-2] & on[2:]
    return int(on[0]) + int(np.count_nonzero(on[1:] & ~on[:-1])), inked


def _cuts(g: _Glyph) -> list[_Cut]:
    """Ways to cut a group in two from minima of its column profile and where the digits of a
    pair would meet: along a path of least ink, and straight down."""
    mask = g.mask
    h, w = mask.shape
    height = max(h, 0.8 * g.height_ref)
    narrowest = max(1, round(NARROWEST * height))
    if w < 2 * narrowest + 1:
        return []
    profile = mask.sum(0).astype(np.float32)
    smooth = profile.copy()
    smooth[1:-1] = 0.25 * profile[:-2] + 0.5 * profile[1:-1] + 0.25 * profile[2:]
    xs = np.arange(narrowest, w - narrowest)
    values = smooth[xs]
    minima = [
        int(x)
        for x, v in zip(xs, values, strict=True)
        if v <= smooth[x - 1] and v <= smooth[min(w - 1, x + 1)]
    ]
    minima.sort(key=lambda x: (smooth[x], abs(x - w / 2)))
    # Where two digits of a touching pair would meet, whatever the profile says: a pair of
    # even widths, a narrow one (a 1) on either side.
    even = [round(w * f) for f in EVEN_CUTS]
    starts: list[int] = []
    for x in minima[:CUTS] + [x for x in even if narrowest <= x < w - narrowest]:
        if all(abs(x - s) >= 0.1 * height for s in starts):
            starts.append(x)
    band = max(1, round(BAND * height))
    # Each start is cut along its path of least ink, and straight down: a path may follow
    # the ink's valleys into a digit (where a 1 leans on its neighbour).
    paths = [(p, False) for p in _cut_paths(mask, starts, band)] if starts else []
    paths += [(np.full(h, x, dtype=np.int64), True) for x in starts]
    # A cut as each row's count of ink left of it: two cuts' parts differ by the sum of
    # their rows' differences.
    before = np.zeros((h, w + 1), dtype=np.int32)
    before[:, 1:] = mask.cumsum(1)
    near = NEAR * before[:, -1].sum()
    rows = np.arange(h)
    seen = set()
    made = np.empty((0, h), dtype=np.int32)
    out = []
    for path, straight in paths:
        counts = before[rows, path]
        key = counts.tobytes()
        if key in seen or (straight and len(made) and np.abs(made - counts).sum(1).min() < near):
            continue
        seen.add(key)
        left = mask & (np.arange(w)[None, :] < path[:, None])
        right = mask & ~left
        parts = [
            _sub_glyph(g, left, (g.top, g.left + path, True)),
            _sub_glyph(g, right, (g.top, g.left + path, False)),
        ]
        if any(p is None for p in parts):
            continue
        a, b = parts
        if min(a.mask.shape[1], b.mask.shape[1]) < narrowest:
            continue
        if min(a.mask.shape[0], b.mask.shape[0]) < LOWEST * g.height_ref:
            continue  # a part this short is a piece of one digit (a 3's arm, a 4's bar)
        made = np.vstack([made, counts])
        out.append(_Cut(a, b, *_crossings(mask, path), straight))
    return out


def _sub_glyph(g: _Glyph, mask: np.ndarray, side: tuple[int, np.ndarray, bool]) -> _Glyph | None:
    """The part of `g` that `mask` (over g's box) holds, cropped to it, on `side` of a cut."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size or mask.sum() < 0.1 * g.mask.sum():
        return None
    t, b, le, r = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    part = _Glyph(mask[t:b, le:r], g.top + t, g.left + le, g.pieces, g.height_ref)
    part.sides = [*g.sides, side]
    return part


def _prepare(page: _Page, g: _Glyph, spec: InputSpec, source_size: tuple[int, int]) -> None:
    """The glyph's own ink, with its faint rim and without its neighbours', through the single
    digit's tighten, fit and normalise."""
    h, w = page.binary.shape
    grow = max(2, round(0.05 * page.height))  # the anti-aliased rim MNIST's boxes include
    t, le = max(0, g.top - grow), max(0, g.left - grow)
    b, r = min(h, g.bottom + grow), min(w, g.right + grow)
    own = np.zeros((b - t, r - le), dtype=bool)
    own[g.top - t : g.bottom - t, g.left - le : g.right - le] = g.mask
    region = dilated(own, grow)
    region &= ~(page.binary[t:b, le:r] & ~own)  # not a neighbour's (or the other part's) ink
    cols = np.arange(le, r)[None, :]
    for first, path, left in g.sides:  # beyond a cut's path, rows past its ends as its ends
        at = path[np.clip(np.arange(t, b) - first, 0, len(path) - 1)][:, None]
        region &= (cols < at) if left else (cols >= at)
    crop, (ct, cl, cb, cr) = tighten(page.m.ink[t:b, le:r] * region, page.strong, page.lossy)
    pixels = fit(crop, spec)
    g.prepared = Preprocessed(
        pixels=pixels,
        tensor=normalise(pixels, spec),
        source_size=source_size,
        inverted=page.m.inverted,
        components_kept=g.pieces,
        components_dropped=0,
        shape=shape_of(pixels, g.pieces),
        lines_removed=page.lines,
    )
    g.crop_box = (t + ct, le + cl, t + cb, le + cr)


def _confidence(g: _Glyph) -> float:
    out, i = g.reading  # type: ignore[misc]
    probs = out.probabilities[i]
    return float(probs[:, int(out.label[i])].mean())


def _label(g: _Glyph) -> int:
    out, i = g.reading  # type: ignore[misc]
    return int(out.label[i])


def _read(glyphs: list[_Glyph], read: Reader) -> None:
    if not glyphs:
        return
    out = read(np.stack([g.prepared.tensor for g in glyphs]))  # type: ignore[union-attr]
    for i, g in enumerate(glyphs):
        g.reading = (out, i)


def _part_confidence(p: _Glyph) -> float:
    """The models' confidence in a part of a cut; WIDE_PART for a part too wide for one
    digit."""
    return _confidence(p) if p.width_ratio() < SPLIT_IF_SURER else WIDE_PART


def _surest(c: _Cut) -> float:
    """The models' confidence in the less certain part of a cut."""
    return min(_part_confidence(c.left), _part_confidence(c.right))


def _check_score(g: _Glyph) -> float | None:
    """The whole-digit check's score of the glyph: None without the check, or for a glyph
    narrower than CHECK_NARROW, which it is not asked about."""
    out, i = g.reading  # type: ignore[misc]
    if out.whole is None or g.width_ratio() < CHECK_NARROW:
        return None
    return float(out.whole[i])


def _wholeness(g: _Glyph) -> float:
    """The whole-digit check's say in how likely the glyph is one digit: CHECK_WEIGHT times
    the log of its score (0 where it has none)."""
    score = _check_score(g)
    return 0.0 if score is None else CHECK_WEIGHT * math.log(max(1e-4, score))


def _vouched(g: _Glyph) -> bool:
    """The whole-digit check scores the glyph WHOLE or more."""
    score = _check_score(g)
    return score is not None and score >= WHOLE


def _doubted(g: _Glyph, below: float) -> bool:
    """The whole-digit check scores the glyph under `below`: it may be two digits written into
    each other, which the models often read surely as one of them (31 as 3)."""
    score = _check_score(g)
    return score is not None and score < below


def _evidence(c: _Cut, height: float, shape: bool = True) -> float:
    """How likely the cut's parts are two digits: the log of the models' confidence in each
    part and the check's say, less for each stroke beyond the first it goes through, and (with
    `shape`) more for a clean cut."""
    logs = sum(math.log(max(1e-4, _part_confidence(p))) + _wholeness(p) for p in (c.left, c.right))
    bonus = CLEAN_BONUS * c.clean(height) if shape else 0.0
    return logs + bonus - CROSSING_COST * max(0, c.crossings - 1)


def _wider(c: _Cut) -> _Glyph:
    return max((c.left, c.right), key=lambda p: p.mask.shape[1])


def _whole_evidence(g: _Glyph) -> float:
    """How likely the group is one digit, as _evidence weighs a cut's parts: the log of the
    models' confidence and the check's say, lowered for every bit of width beyond a pair's."""
    wide = WIDE_COST * max(0.0, g.width_ratio() - PAIR_WIDTH)
    return math.log(max(1e-4, _confidence(g))) + _wholeness(g) - wide


def _choose(g: _Glyph) -> list[_Glyph] | None:
    """The cut to make in a group, if its width, the cut's shape and the models' readings call
    for one.

    The models alone cannot decide: two touching digits are often read whole as one of them
    with full confidence (41 as 4), and so are parts of one wide digit. A clean cut (through
    one stroke, into two parts as tall as digits) is what touching digits look like. Failing
    the rules for those cases, a cut is made when its parts are likelier digits than the whole
    is, by MARGIN in log terms, the whole's likelihood lowered for every bit of width beyond
    a pair's. Either way the cut made is the likeliest: the cleanest that decided for a cut may
    cut the wrong digit (a 0 and a 4 as 0 and 1, the 4's arm left with the 0). A group the
    whole-digit check vouches for (WHOLE) is cut only by that weighing, without the clean
    cut's bonus."""
    if not g.cuts:
        return None
    height = g.height_ref
    if _vouched(g):
        return _likelier(g, g.cuts, shape=False)
    best = max(g.cuts, key=lambda c: (c.clean(height), _surest(c)))
    likeliest = max(g.cuts, key=lambda c: _evidence(c, height))
    sure, clean = _surest(best), best.clean(height)
    surest = max(_surest(c) for c in g.cuts)  # of any cut, clean or not
    whole = _confidence(g)
    ratio = g.width_ratio()
    # A narrow digit touching another (61, 91) is read whole as the other, with full
    # confidence: a clean cut whose wider part the models read as they read the whole, and
    # whose narrower part they read as surely, adds that digit; so does a cut through one
    # stroke that is not clean when they read both parts surer still.
    adds_one = clean and sure >= ADDS and _label(_wider(best)) == _label(g)
    if not adds_one:
        for c in g.cuts:
            if c.crossings <= 1 and _surest(c) >= ADDS_LOOSE and _label(_wider(c)) == _label(g):
                return [c.left, c.right]
    if adds_one or (
        ratio >= PAIR_WIDTH
        and (
            (ratio >= SPLIT_IF_SURER and (sure > whole or (clean and sure >= 0.5 and whole < SURE)))
            or (clean and sure >= SURE and sure >= whole)
            or (whole < SURE and surest > whole + 0.1)
        )
    ):
        return [likeliest.left, likeliest.right]
    return _likelier(g, g.cuts)


def _likelier(g: _Glyph, cuts: list[_Cut], shape: bool = True) -> list[_Glyph] | None:
    """The parts of the likeliest of `cuts` (_evidence, with or without the clean cut's bonus),
    if they are likelier digits than the whole group by MARGIN."""
    likeliest = max(cuts, key=lambda c: _evidence(c, g.height_ref, shape))
    if _evidence(likeliest, g.height_ref, shape) > _whole_evidence(g) + MARGIN:
        return [likeliest.left, likeliest.right]
    return None


def _choose_loose(g: _Glyph) -> list[_Glyph] | None:
    """The likeliest of a group's loose cuts (straight ones; a narrow group's cuts that are not
    clean), once read, if its parts are likelier digits than the whole by MARGIN."""
    if not g.loose or g.loose_unread():
        return None
    return _likelier(g, g.loose)


def _digits(
    page: _Page, spec: InputSpec, source_size, read: Reader, doubt: float
) -> tuple[list[_Glyph], int]:
    """The page's glyphs with touching digits cut apart, each prepared and read. `doubt`: the
    whole-digit check's score under which a glyph read surely whole has its loose cuts read."""
    final: list[_Glyph] = []
    pending = page.glyphs
    cuts = 0
    for _ in range(ROUNDS):
        batch = []
        for g in pending:
            if g.prepared is None:
                _prepare(page, g, spec, source_size)
                batch.append(g)
            if g.loose:  # read whole, unsure: its loose cuts now
                todo = g.loose
            elif g.width_ratio() >= MAY_SPLIT:
                ways = _cuts(g)
                # Straight cuts are loose: read only when the models are unsure of the whole.
                g.cuts = [c for c in ways if not c.straight]
                g.loose = [c for c in ways if c.straight]
                if g.width_ratio() < PAIR_WIDTH:  # a clean cut adds a narrow digit, a loose one
                    # only when the models are unsure of the whole
                    g.loose = [c for c in g.cuts if not c.clean(g.height_ref)] + g.loose
                    g.cuts = [c for c in g.cuts if c.clean(g.height_ref)]
                todo = g.cuts
            else:
                todo = []
            for c in todo:
                _prepare(page, c.left, spec, source_size)
                _prepare(page, c.right, spec, source_size)
                batch += [c.left, c.right]
        _read(batch, read)
        again = []
        for g in pending:
            chosen = _choose(g) or _choose_loose(g)
            if chosen is None:
                unsure = _confidence(g) < SURE
                if unsure and not g.loose and TWO_ONES <= g.width_ratio() < MAY_SPLIT:
                    g.loose = [c for c in _cuts(g) if c.inked <= ALONG * g.height_ref]
                if g.loose_unread() and (unsure or _doubted(g, doubt)) and not _vouched(g):
                    again.append(g)  # a group the models are unsure of: its loose cuts
                else:
                    final.append(g)
                continue
            cuts += 1
            for part in chosen:
                part.cuts = []
                (again if part.width_ratio() >= PAIR_WIDTH else final).append(part)
        if len(final) + len(again) > MAX_DIGITS:
            raise TooManyDigits(
                f"More than {MAX_DIGITS} digits found; a number has at most {MAX_DIGITS}."
            )
        pending = again
        if not pending:
            break
    final += pending
    final.sort(key=lambda g: (g.left + g.right) / 2)
    return final, cuts


def _upright_size(upload: Decoded) -> tuple[float, float]:
    """The upright image's size in the upload's pixels (a JPEG may decode reduced)."""
    w, h = upload.image.size
    f = max(upload.size) / max(w, h)
    return w * f, h * f


def _on_a_sheet(
    upload: Decoded, m: InkMap, lossy: bool
) -> tuple[InkMap, float, _Page, tuple[int, int, int, int]] | None:
    """The look at the sheet or sticky note the number is written on, where the first look
    took the desk around it for the paper (preprocess.on_the_paper): its ink map, stroke
    contrast and page, and the sheet's crop box in upload.image; None elsewhere."""
    if m.inverted:
        return None
    try:
        sheet = on_the_paper(upload.image, m, find_digit(m, lossy), lossy)
        if sheet is None:
            return None
        paper, on_it, box = sheet
        return paper, on_it.strong, _look(paper, lossy, on_it.strong, None), box
    except NoInk:
        return None


def segment(data: bytes, spec: InputSpec, max_pixels: int, read: Reader, doubt: float) -> Number:
    """The digits of the number in `data`, read by `read`, left to right; `doubt`: the
    whole-digit check's threshold (the manifest's; 0 when `read` does not run it). Raises the
    errors preprocessing raises, NoInk when no mark is a digit, TooManyDigits beyond MAX_DIGITS."""
    upload = decode(data, max_pixels)
    lossy = upload.format in LOSSY_FORMATS

    # Finding lines costs more than the rest of a look: this first look only places the
    # number and measures its digits. Without a second look it stands, unless the page holds
    # lines: then it is made again without them.
    def look(grey: np.ndarray, side: int) -> tuple[InkMap, float, int, _Page]:
        m = ink_map(grey)
        strong = stroke_contrast(m, round(FINE_EXTENT * side) if side else 0)
        return m, strong, side, _look(m, lossy, strong, None, side)

    upload, grey, (m, strong, side, page) = look_at(data, upload, max_pixels, look)
    full_w, full_h = _upright_size(upload)
    # Work-size pixels to the decoded image's and to the upload's.
    to_image = upload.image.width / grey.shape[1]
    origin = (0.0, 0.0)  # the look's top-left corner in the decoded image
    ratio = to_image
    zoomed = None
    sheet = _on_a_sheet(upload, m, lossy)
    if sheet is not None:
        m, strong, page, box = sheet
        side, origin, ratio = 0, (box[0], box[1]), (box[2] - box[0]) / m.ink.shape[1]
    elif page.height < ZOOM_HEIGHT and max(upload.size) / max(grey.shape) > 1.25:
        t = min(g.top for g in page.glyphs)
        b = max(g.bottom for g in page.glyphs)
        le = min(g.left for g in page.glyphs)
        r = max(g.right for g in page.glyphs)
        margin = page.height
        box = (
            max(0, round((le - margin) * to_image)),
            max(0, round((t - margin) * to_image)),
            min(upload.image.width, round((r + margin) * to_image)),
            min(upload.image.height, round((b + margin) * to_image)),
        )
        digit = page.height * to_image  # the digits' height in upload.image's pixels
        # Digits this small in a JPEG decoded reduced are decoded again at a finer scale.
        finer = ZOOM_TARGET / digit if digit < DETAIL else 1.0
        crop, scale = region(data, upload, max_pixels, box, finer)
        size = min(
            ZOOM_MAX_SIDE, max(crop.size), round(max(crop.size) * ZOOM_TARGET / (digit * scale))
        )
        if size > 1.25 * max(crop.size) / (to_image * scale):  # finer than the first look
            grey = to_grey(crop, size)
            zoom = crop.width / grey.shape[1]
            try:
                zm = ink_map(grey)
                zs = stroke_contrast(zm)
                zoomed = _look(zm, lossy, zs, _form_lines(zm, zs, digit * scale / zoom))
                origin = (box[0], box[1])
                ratio = zoom / scale  # upload.image's pixels per pixel of this look
            except NoInk:
                zoomed = None  # the first look stands
    if zoomed is not None:
        page = zoomed
    elif (found := _form_lines(m, strong, page.height)) is not None:
        page = _look(m, lossy, strong, found, side)  # again, without the form's lines
    glyphs, cuts = _digits(page, spec, upload.size, read, doubt)
    sx = full_w / upload.image.width
    sy = full_h / upload.image.height
    digits = []
    for g in glyphs:
        t, le, b, r = g.crop_box
        box = (
            int((origin[0] + le * ratio) * sx),
            int((origin[1] + t * ratio) * sy),
            min(round(full_w), int(np.ceil((origin[0] + r * ratio) * sx))),
            min(round(full_h), int(np.ceil((origin[1] + b * ratio) * sy))),
        )
        out, i = g.reading  # type: ignore[misc]
        digits.append(Digit(g.prepared, box, out, i))  # type: ignore[arg-type]
    return Number(
        digits,
        upload.size,
        page.m.inverted,
        page.kept,
        page.dropped,
        page.lines,
        cuts,
    )
