"""Connected components of a binary image, from its horizontal runs.

numpy and Pillow have no labelling and scipy would double the server's install, so this labels
runs of ink instead of pixels: the runs and which of them touch are found vectorised, then
joined by a union-find (small graphs) or vectorised propagation (large ones). A digit has tens
to a few hundred runs, and even an image of pure noise (thousands of specks) stays cheap.
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
        wanted = np.zeros(len(self.area), dtype=bool)
        wanted[keep] = True
        sel = wanted[self.run_component]
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
    ends = np.nonzero(edges == -1)[1]
    n = len(rows)
    # Runs a (row r) and b (row r + 1) touch, diagonals included, when b.start <= a.end and
    # b.end >= a.start (ends exclusive). Runs are sorted row-major, so for every run the
    # touching runs of the next row are one contiguous slice, found by binary search.
    stride = w + 2
    base = rows * stride
    lo = np.searchsorted(base + ends, base + stride + starts, side="left")
    hi = np.searchsorted(base + starts, base + stride + ends, side="right")
    count = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), count)
    b = lo[a] + np.arange(len(a)) - np.repeat(np.cumsum(count) - count, count)
    roots = _python_roots(n, a, b) if len(a) <= SMALL_GRAPH else _vector_roots(n, a, b)
    # A root is the component's first run; number the roots in order of appearance.
    is_root = roots == np.arange(n)
    comp = (np.cumsum(is_root) - 1)[roots]
    k = int(is_root.sum())
    area = np.bincount(comp, weights=ends - starts, minlength=k).astype(np.int64)
    top = rows[is_root]  # runs are row-major: a component's first run is on its top row
    order = np.argsort(comp, kind="stable")
    first = np.searchsorted(comp[order], np.arange(k))
    bottom = np.maximum.reduceat(rows[order], first) + 1 if n else np.zeros(0, np.int64)
    left = np.minimum.reduceat(starts[order], first) if n else np.zeros(0, np.int64)
    right = np.maximum.reduceat(ends[order], first) if n else np.zeros(0, np.int64)
    by_size = np.argsort(-area, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[by_size] = np.arange(k)
    return Components(
        area[by_size],
        top[by_size],
        left[by_size],
        bottom[by_size],
        right[by_size],
        rank[comp],
        rows,
        starts,
        ends,
    )


# Touching pairs. Measured: labelling 200 MNIST digits sent as PNGs, 54 -> 36 us each with the
# union-find; a 127 px spiral 0.39 ms against 1.72; on dense 128x128 noise with thousands of pairs
# the propagation is up to 1.8x faster (checkerboard 1.36 ms against 2.39).
SMALL_GRAPH = 512


def _python_roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each run's root, the smallest run index in its component (union-find on lists)."""
    parent = list(range(n))
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        while parent[x] != x:  # path halving keeps chains short
            parent[x] = x = parent[parent[x]]
        while parent[y] != y:
            parent[y] = y = parent[parent[y]]
        if x < y:
            parent[y] = x
        elif y < x:
            parent[x] = y
    for i in range(n):  # parents have smaller indices, so one forward pass resolves all
        parent[i] = parent[parent[i]]
    return np.array(parent, dtype=np.int64)


def _vector_roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same, vectorised: min-label propagation with pointer jumping, a few passes even for
    long strokes. Labels only ever decrease, so an unchanged sum means nothing changed."""
    roots = np.arange(n)
    total = roots.sum()
    while True:
        low = np.minimum(roots[a], roots[b])
        np.minimum.at(roots, a, low)
        np.minimum.at(roots, b, low)
        roots = roots[roots]
        new_total = roots.sum()
        if new_total == total:
            return roots
        total = new_total
