"""Long straight lines in a binary ink image: a form's box, comb, ruling, grid or underline.

A line is ink that runs straight for a long way and stays thin across its run: a pixel belongs
to a horizontal line when the horizontal run through it is long (at least `LINE_LENGTH` of the
image's width) and the vertical run through it is short (at most `thickness` pixels). Where a
stroke crosses or touches a line, the vertical run through the line is the stroke's, long, so
the line's pixels there stay: the digit keeps its strokes. Vertical lines alike, by columns.
Pure numpy on booleans, a few passes over the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINE_LENGTH = 0.45  # of the image's side along the line: a digit's own straight strokes are
# shorter than this unless the digit fills the picture, and then they are thick
LINE_SPAN = 0.25  # of the image's longer side, at least
LINE_THICKNESS = 0.03  # of the image's longer side: thicker runs are strokes or regions
MIN_LINE = 16  # pixels: the shortest line
MIN_IMAGE = 40  # pixels on the longer side: on a smaller image nothing is told apart as a line


@dataclass(frozen=True)
class Lines:
    mask: np.ndarray  # bool, the lines' pixels (strokes that cross them excluded)
    count: int  # separate lines: bands of rows with horizontal, of columns with vertical ones
    thickness: int  # the thickest run across a line that counted as line, in pixels


def _run_lengths(binary: np.ndarray) -> np.ndarray:
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


def _bands(rows: np.ndarray) -> int:
    """Groups of consecutive True values."""
    if not rows.size:
        return 0
    return int(rows[0]) + int(np.count_nonzero(rows[1:] & ~rows[:-1]))


def _standing(counts: np.ndarray, long: float, thickness: int) -> np.ndarray:
    """Rows (by their ink counts) that may hold a line: enough ink for a long run, and more
    than the rows `thickness` + 1 away on both sides, which a thick stroke's inner rows do
    not have; that alone passes over a canvas's fat strokes cheaply."""
    h = len(counts)
    padded = np.zeros(h + 2 * (thickness + 1), dtype=np.int64)
    padded[thickness + 1 : thickness + 1 + h] = counts
    beside = np.maximum(padded[:h], padded[2 * (thickness + 1) :])
    return np.flatnonzero((counts >= long) & (counts - beside >= 0.5 * long))


def _along(
    binary: np.ndarray, rows: np.ndarray, long: float, thickness: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(pixels on long runs along the rows, their lines' pixels, the lines' thickness), the
    masks empty when there are none. Only `rows` are searched, and runs across are measured
    only in a window reaching `thickness` + 1 rows beyond the rows with long runs: a run
    across that leaves the window is thicker than a line."""
    h, w = binary.shape
    along = np.zeros((h, w), dtype=bool)
    if not rows.size:
        return along, along, 0
    along[rows] = _run_lengths(_bridged(binary[rows])) >= long
    along &= binary
    rows = np.flatnonzero(along.any(1))
    if not rows.size:
        return along, along, 0
    top, bottom = max(0, int(rows[0]) - thickness - 1), min(h, int(rows[-1]) + thickness + 2)
    across = np.zeros((h, w), dtype=np.int32)
    across[top:bottom] = _run_lengths(np.ascontiguousarray(binary[top:bottom].T)).T
    # How thick the lines are: the commonest run across their long runs, plus a pixel for a
    # soft edge. A stroke that crosses is longer across, even a thin pen's on a wide form.
    typical = _typical(across[along], thickness)
    thin = along & (across <= typical)
    # Most of a line is thin, even where strokes cross it; a thick stroke's tapering end is
    # not: a row keeps its thin pixels only when they add up to half a long run.
    thin[np.count_nonzero(thin, axis=1) < 0.5 * long] = False
    return along, thin, typical


def find(binary: np.ndarray) -> Lines | None:
    """The long straight lines of `binary`, or None when it has none."""
    h, w = binary.shape
    if max(h, w) < MIN_IMAGE:
        return None
    thickness = max(2, round(LINE_THICKNESS * max(h, w)))
    # On a wide strip (a comb field) a digit's stem spans most of the height, and on a tall
    # one a bar most of the width: a line is also long against the longer side.
    long_h = max(MIN_LINE, LINE_LENGTH * w, LINE_SPAN * max(h, w))
    long_v = max(MIN_LINE, LINE_LENGTH * h, LINE_SPAN * max(h, w))
    rows = _standing(np.count_nonzero(binary, axis=1), long_h, thickness)
    cols = _standing(np.count_nonzero(binary, axis=0), long_v, thickness)
    if not rows.size and not cols.size:  # most uploads: no allocation, no transposed copy
        return None
    along, horizontal, thick_h = _along(binary, rows, long_h, thickness)
    if cols.size:
        down, vertical, thick_v = _along(np.ascontiguousarray(binary.T), cols, long_v, thickness)
        down, vertical = down.T, vertical.T
    else:
        down, vertical, thick_v = horizontal & False, horizontal & False, 0
    rows, cols = horizontal.any(1), vertical.any(0)
    count = _bands(rows) + _bands(cols)
    if not count:
        return None
    # Where a horizontal line meets a vertical one (a box's corner, a grid's crossing) each
    # is the other's long run across: both are lines there. A thick stroke along a line's run
    # is no line: the crossing must lie on a row of horizontal and a column of vertical line.
    crossing = along & down & rows[:, None] & cols[None, :]
    return Lines(horizontal | vertical | crossing, count, max(thick_h, thick_v))
