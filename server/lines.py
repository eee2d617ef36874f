"""Long straight lines in a binary ink image: a form's box, comb, ruling, grid or underline.

A line is ink that runs straight for a long way and stays thin across its run: a pixel belongs
to a horizontal line when the horizontal run through it is long (at least `LINE_LENGTH` of the
image's width) and the vertical run through it is short (at most `thickness` pixels). Where a
stroke crosses or touches a line, the vertical run through the line is the stroke's, long, so
the line's pixels there stay: the digit keeps its strokes. Vertical lines alike, by columns.
A line tilted by a few degrees is found the same way in the image sheared level: columns
shifted up or down, which keeps every vertical run whole. Pure numpy on booleans, a few
passes over the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINE_LENGTH = 0.45  # of the image's side along the line: a digit's own straight strokes are
# shorter than this unless the digit fills much of the picture; preprocess.form_lines gives
# such strokes back to their digit
LINE_SPAN = 0.25  # of the image's longer side, at least
LINE_THICKNESS = 0.03  # of the image's longer side: thicker runs are strokes or regions
MIN_LINE = 16  # pixels: the shortest line
MIN_IMAGE = 40  # pixels on the longer side: on a smaller image nothing is told apart as a line
# Tilts, in degrees, at which lines are looked for when none is level: a page photographed or
# scanned a little askew. Steps of one degree: a line half a degree off its step still runs
# 115 pixels before it changes row, and a one-pixel bridge joins the pieces.
TILTS = np.array([t for t in range(-6, 7) if t], dtype=np.float64)
BANDS = 8  # column bands whose row counts, shifted, give a tilt's profile


@dataclass(frozen=True)
class Lines:
    mask: np.ndarray  # bool, the lines' pixels (strokes that cross them excluded)
    count: int  # separate lines: bands of rows with horizontal, of columns with vertical ones
    thickness: int  # the thickest run across a line that counted as line, in pixels
    level: int  # how many of them run along the rows (the rest run down the columns)
    upright: np.ndarray  # bool, the pixels of those that run down the columns, crossings included


def run_lengths(binary: np.ndarray) -> np.ndarray:
    """For every pixel, the length of the horizontal run of ink it belongs to (0 off ink)."""
    h, w = binary.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = binary
    cols = np.nonzero(np.diff(padded, axis=1))[1]
    lengths = cols[1::2] - cols[::2]
    out = np.zeros(h * w, dtype=np.int32)
    # Runs come in row-major order, as do the pixels np.flatnonzero lists.
    out[np.flatnonzero(binary)] = np.repeat(lengths, lengths)
    return out.reshape(h, w)


def _bridged(binary: np.ndarray) -> np.ndarray:
    """One-pixel gaps along rows closed: a faint or compressed line breaks up at places."""
    out = binary.copy()
    out[:, 1:-1] |= binary[:, :-2] & binary[:, 2:]
    return out


def _typical(across: np.ndarray, thickness: int) -> int:
    """The thickness up to which runs across long runs count as line: the median of the
    thin ones, plus one, at most `thickness`."""
    thin = across[(across > 0) & (across <= thickness)]
    if not thin.size:
        return 0
    return min(thickness, int(np.sort(thin)[thin.size // 2]) + 1)


def bands(rows: np.ndarray) -> int:
    """Groups of consecutive True values."""
    if not rows.size:
        return 0
    return int(rows[0]) + int(np.count_nonzero(rows[1:] & ~rows[:-1]))


def _beside(counts: np.ndarray, reach: int) -> np.ndarray:
    """For each row (along the last axis), the ink beside it: on each side the emptiest of the
    `reach` rows next to it (rows beyond the picture empty), and of the two sides the fuller.
    The emptiest, not the row `reach` away: on squared paper that row may lie on the next line
    of the grid."""
    n = counts.shape[-1]
    padded = np.zeros((*counts.shape[:-1], n + 2 * reach), dtype=counts.dtype)
    padded[..., reach : reach + n] = counts
    emptiest = np.lib.stride_tricks.sliding_window_view(padded, reach, axis=-1).min(axis=-1)
    return np.maximum(emptiest[..., :n], emptiest[..., reach + 1 : reach + 1 + n])


def _standing(counts: np.ndarray, long: float, thickness: int) -> np.ndarray:
    """Rows (by their ink counts) that may hold a line: enough ink for a long run, and more
    than some row within `thickness` + 1 on both sides, which a thick stroke's inner rows do
    not have; that alone passes over a canvas's fat strokes cheaply."""
    beside = _beside(counts, thickness + 1)
    return np.flatnonzero((counts >= long) & (counts - beside >= 0.5 * long))


def _along(
    binary: np.ndarray, rows: np.ndarray, long: float, thickness: int, slack: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """(pixels on long runs along the rows, their lines' pixels, the lines' thickness), the
    masks empty when there are none. Only `rows` are searched, and runs across are measured
    only in a window reaching `thickness` + 1 rows beyond the rows with long runs: a run
    across that leaves the window is thicker than a line. With `slack`, a run may step to
    the row above or below: a line sheared level from a tilt it is not exactly at does."""
    h, w = binary.shape
    along = np.zeros((h, w), dtype=bool)
    if not rows.size:
        return along, along, 0
    if slack:  # and the rows beside, which hold the line's pixels where it steps
        rows = np.unique(np.clip(np.concatenate([rows - 1, rows, rows + 1]), 0, h - 1))
        source = (
            binary[rows] | binary[np.maximum(rows - 1, 0)] | binary[np.minimum(rows + 1, h - 1)]
        )
    else:
        source = binary[rows]
    along[rows] = run_lengths(_bridged(source)) >= long
    along &= binary
    rows = np.flatnonzero(along.any(1))
    if not rows.size:
        return along, along, 0
    top, bottom = max(0, int(rows[0]) - thickness - 1), min(h, int(rows[-1]) + thickness + 2)
    across = np.zeros((h, w), dtype=np.int32)
    across[top:bottom] = run_lengths(np.ascontiguousarray(binary[top:bottom].T)).T
    # How thick the lines are: the commonest run across their long runs, plus a pixel for a
    # soft edge. A stroke that crosses is longer across, even a thin pen's on a wide form.
    typical = _typical(across[along], thickness)
    thin = along & (across <= typical)
    # Most of a line is thin, even where strokes cross it; a thick stroke's tapering end is
    # not: a row keeps its thin pixels only when they add up to half a long run.
    thin[np.count_nonzero(thin, axis=1) < 0.5 * long] = False
    return along, thin, typical


def _profiles(binary: np.ndarray) -> np.ndarray:
    """Ink counts of rows sheared by each of TILTS, from counts in BANDS column bands: each
    band's counts shifted by the shear at its middle. float32 [len(TILTS), rows]; a tilted
    line is as standing a row in its tilt's profile as a level line is in the plain counts."""
    h, w = binary.shape
    edges = np.linspace(0, w, BANDS + 1).astype(np.int64)
    counts = np.add.reduceat(binary, edges[:-1], axis=1, dtype=np.int32)
    middles = (edges[:-1] + edges[1:]) / 2 - w / 2
    shifts = np.round(np.tan(np.radians(TILTS))[:, None] * middles[None, :]).astype(np.int64)
    reach = int(np.abs(shifts).max()) + 1
    padded = np.zeros((h + 2 * reach, BANDS), dtype=np.int32)
    padded[reach : reach + h] = counts
    rows = np.arange(h)[None, None, :] + reach + shifts[:, :, None]  # [tilt, band, row]
    summed = padded[rows, np.arange(BANDS)[None, :, None]].sum(axis=1)
    # A band's part of a tilted line spreads over a row or two: sum three rows.
    out = summed.astype(np.float32)
    out[:, 1:] += summed[:, :-1]
    out[:, :-1] += summed[:, 1:]
    return out


def _tilt(binary: np.ndarray, long: float, thickness: int) -> float:
    """The tilt (degrees, from TILTS) whose sheared rows hold the most standing line ink,
    or 0 when none holds a line: `_standing`'s test, on every tilt's profile at once."""
    profiles = _profiles(binary)
    h = profiles.shape[1]
    gap = thickness + 3  # three rows summed: the line's own rows reach one further
    padded = np.zeros((len(TILTS), h + 2 * gap), dtype=np.float32)
    padded[:, gap : gap + h] = profiles
    standing = (profiles >= long) & (profiles - _beside(profiles, gap) >= 0.5 * long)
    if not standing.any():
        return 0.0
    # The tilt with the most line ink in all: each line counted once, at its peak row. A
    # form's lines share one tilt; a long straight stroke of the digit may stand at another.
    window = np.lib.stride_tricks.sliding_window_view(padded, 2 * gap + 1, axis=1)
    peak = profiles >= window.max(axis=2)  # the highest within the rows `beside` looks at
    peak[:, :-1] &= profiles[:, :-1] > profiles[:, 1:]  # a flat top counted once
    total = np.where(standing & peak, profiles, 0).sum(axis=1)
    return float(TILTS[int(np.argmax(total))])


def _shear(h: int, w: int, tilt: float) -> np.ndarray:
    """int64 [h, w]: the row of the unsheared image that each pixel of the sheared one shows,
    so that a line at `tilt` degrees (down to the right) becomes level."""
    shift = np.round(np.tan(np.radians(tilt)) * (np.arange(w) - w / 2)).astype(np.int64)
    return np.arange(h)[:, None] + shift[None, :]


def _could_hold(binary: np.ndarray, long: float, thickness: int) -> bool:
    """Whether a line along the rows, level or tilted, could be there at all. One needs
    `long` consecutive columns with ink (a one-column gap bridged, as `_bridged` does), and
    half of `long` columns with a pixel whose run across is at most `thickness` (a line's row
    keeps only that many thin pixels). A shear moves whole columns, so neither changes with
    the tilt, except that it cuts runs across at the top and bottom edges: there, within the
    largest shift, any ink may be thin. Most digits fail one test and cost no more than this."""
    h, w = binary.shape
    cols = binary.any(axis=0)
    cols[1:-1] |= cols[:-2] & cols[2:]
    if run_lengths(cols[None, :]).max(initial=0) < long:
        return False
    across = run_lengths(np.ascontiguousarray(binary.T)).T
    thin = (across > 0) & (across <= thickness)
    edge = int(np.abs(_shear(1, w, float(np.abs(TILTS).max()))).max()) + 1
    thin[:edge] |= binary[:edge]
    thin[h - edge :] |= binary[h - edge :]
    return np.count_nonzero(thin.any(axis=0)) >= 0.5 * long


def _level(
    binary: np.ndarray, long: float, thickness: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(pixels on long runs along the rows, their lines' pixels, the lines' thickness, how
    many lines), for lines level or tilted by a few degrees (a photographed or skewed page)."""
    h, w = binary.shape
    if not _could_hold(binary, long, thickness):
        empty = np.zeros((h, w), dtype=bool)
        return empty, empty, 0, 0
    rows = _standing(np.count_nonzero(binary, axis=1), long, thickness)
    if rows.size:
        along, thin, typical = _along(binary, rows, long, thickness)
        count = bands(thin.any(1))
        if count:
            return along, thin, typical, count
    tilt = _tilt(binary, long, thickness) if w >= MIN_LINE else 0.0
    if not tilt:
        empty = np.zeros((h, w), dtype=bool)
        return empty, empty, 0, 0
    # The picture padded with empty rows above and below, so that every sheared pixel has
    # a source (an empty one beyond the picture's edge).
    source = _shear(h, w, tilt)
    reach = max(0, -int(source.min()), int(source.max()) - h + 1)
    padded = np.zeros((h + 2 * reach, w), dtype=bool)
    padded[reach : reach + h] = binary
    cols = np.arange(w)[None, :]
    sheared = padded[source + reach, cols]
    rows = _standing(np.count_nonzero(sheared, axis=1), long, thickness)
    along, thin, typical = _along(sheared, rows, long, thickness, slack=True)
    if not along.any():  # no long run: nothing to map back
        return along, along, 0, 0
    count = bands(thin.any(1))
    # Back to the picture's own rows: each sheared pixel is one of the picture's.
    back = np.zeros((2, h + 2 * reach, w), dtype=bool)
    back[0, source + reach, cols] = along
    back[1, source + reach, cols] = thin
    return back[0, reach : reach + h], back[1, reach : reach + h], typical, count


def find(binary: np.ndarray) -> Lines | None:
    """The long straight lines of `binary`, level, upright or a few degrees off, or None."""
    h, w = binary.shape
    if max(h, w) < MIN_IMAGE:
        return None
    thickness = max(2, round(LINE_THICKNESS * max(h, w)))
    # On a wide strip (a comb field) a digit's stem spans most of its height, and on a tall
    # one a bar most of the width: a line is also long against the longer side.
    long_h = max(MIN_LINE, LINE_LENGTH * w, LINE_SPAN * max(h, w))
    long_v = max(MIN_LINE, LINE_LENGTH * h, LINE_SPAN * max(h, w))
    if np.count_nonzero(binary) < min(long_h, long_v):  # too little ink for any line
        return None
    along, horizontal, thick_h, count_h = _level(binary, long_h, thickness)
    down, vertical, thick_v, count_v = _level(np.ascontiguousarray(binary.T), long_v, thickness)
    down, vertical = down.T, vertical.T
    count = count_h + count_v
    if not count:
        return None
    # Where a horizontal line meets a vertical one (a box's corner, a grid's crossing) each
    # is the other's long run across: both are lines there. A thick stroke along a line's run
    # is no line: the crossing must lie on a row of horizontal and a column of vertical line.
    rows, cols = horizontal.any(1), vertical.any(0)
    crossing = along & down & rows[:, None] & cols[None, :]
    # The thickness of the lines found: a direction without any says nothing of them.
    thickness = max(thick_h if count_h else 0, thick_v if count_v else 0)
    return Lines(horizontal | vertical | crossing, count, thickness, count_h, vertical | crossing)
