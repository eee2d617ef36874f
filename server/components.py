"""Connected components of a binary image, from its horizontal runs.

numpy and Pillow have no labelling and scipy would double the server's install, so this labels
runs of ink instead of pixels, vectorised: a digit at analysis size has a few hundred runs,
and even an image of pure noise (thousands of specks) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Components:
    """Per-component statistics, largest component first."""

    area: np.ndarray  # pixels
    top: np.ndarray
    left: np.ndarray
    bottom: np.ndarray  # exclusive
    right: np.ndarray  # exclusive
    run_component: np.ndarray  # the component index of each run
    run_row: np.ndarray
    run_start: np.ndarray
    run_end: np.ndarray  # exclusive

    def __len__(self) -> int:
        return len(self.area)

    def mask(self, shape: tuple[int, int], keep: np.ndarray) -> np.ndarray:
        """A boolean image of the components whose indices are in `keep`."""
        sel = np.isin(self.run_component, keep)
        edges = np.zeros((shape[0], shape[1] + 1), dtype=np.int32)
        edges[self.run_row[sel], self.run_start[sel]] += 1
        edges[self.run_row[sel], self.run_end[sel]] -= 1
        return np.cumsum(edges[:, :-1], axis=1) > 0


def label(binary: np.ndarray) -> Components:
    """8-connected components of a boolean image."""
    h, w = binary.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = binary
    edges = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past where it ends
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    n = len(rows)
    # Runs a (row r) and b (row r + 1) touch, diagonals included, when b.start <= a.end and
    # b.end >= a.start (ends exclusive). Runs are sorted row-major, so for every run the
    # touching runs of the next row are one contiguous slice, found by binary search.
    stride = w + 2
    key_start, key_end = rows * stride + starts, rows * stride + ends
    lo = np.searchsorted(key_end, (rows + 1) * stride + starts, side="left")
    hi = np.searchsorted(key_start, (rows + 1) * stride + ends, side="right")
    count = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), count)
    b = lo[a] + np.arange(len(a)) - np.repeat(np.cumsum(count) - count, count)
    # Min-label propagation with pointer jumping: a few passes even for long strokes.
    roots = np.arange(n)
    while len(a):
        low = np.minimum(roots[a], roots[b])
        new = roots.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]
        if np.array_equal(new, roots):
            break
        roots = new
    _, comp = np.unique(roots, return_inverse=True)
    k = int(comp.max()) + 1 if n else 0
    area = np.bincount(comp, weights=ends - starts, minlength=k).astype(np.int64)
    top, left = np.full(k, h), np.full(k, w)
    bottom, right = np.zeros(k, np.int64), np.zeros(k, np.int64)
    np.minimum.at(top, comp, rows)
    np.minimum.at(left, comp, starts)
    np.maximum.at(bottom, comp, rows + 1)
    np.maximum.at(right, comp, ends)
    order = np.argsort(-area, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return Components(
        area[order],
        top[order],
        left[order],
        bottom[order],
        right[order],
        rank[comp],
        rows,
        starts,
        ends,
    )
