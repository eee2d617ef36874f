import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from server import components
from server.components import label

EIGHT = np.ones((3, 3), dtype=int)


def _check_against_scipy(binary: np.ndarray) -> None:
    comps = label(binary)
    reference, n = ndimage.label(binary, structure=EIGHT)
    assert len(comps) == n
    sizes = np.bincount(reference.ravel())[1:]
    assert comps.area == sorted(sizes.tolist(), reverse=True)
    for i in range(len(comps)):
        mask = comps.mask(binary.shape, np.array([i]))
        ids = np.unique(reference[mask])
        assert len(ids) == 1 and ids[0] > 0
        assert np.array_equal(mask, reference == ids[0])
        rows, cols = np.nonzero(mask)
        assert (comps.top[i], comps.left[i]) == (rows.min(), cols.min())
        assert (comps.bottom[i], comps.right[i]) == (rows.max() + 1, cols.max() + 1)


@settings(max_examples=300, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_labels_match_scipy_on_any_binary_image(binary):
    _check_against_scipy(binary)


def test_diagonal_neighbours_are_connected():
    binary = np.eye(5, dtype=bool)
    assert len(label(binary)) == 1
    assert len(label(np.fliplr(binary))) == 1


def test_spiral_is_one_component():
    # A long winding stroke is the worst case for label propagation.
    size = 61
    spiral = np.zeros((size, size), dtype=bool)
    top, left, bottom, right = 0, 0, size - 1, size - 1
    while top <= bottom and left <= right:
        spiral[top, left : right + 1] = True
        spiral[top : bottom + 1, right] = True
        spiral[bottom, left : right + 1] = True
        spiral[top + 2 : bottom + 1, left] = True
        if top + 2 <= bottom:
            spiral[top + 2, left : right - 1] = True
        top, left, bottom, right = top + 4, left + 4, bottom - 4, right - 4
    _check_against_scipy(spiral)


def test_empty_and_full_images():
    assert len(label(np.zeros((4, 7), dtype=bool))) == 0
    full = label(np.ones((4, 7), dtype=bool))
    assert len(full) == 1 and full.area == [28]


def test_both_union_strategies_match_scipy(monkeypatch):
    # label() joins the runs of small images in Python and those of large ones vectorised;
    # force each on the same images, small and large, sparse and dense.
    rng = np.random.default_rng(0)
    images = [rng.random((h, w)) < p for h, w, p in [(28, 28, 0.2), (40, 90, 0.5), (128, 96, 0.3)]]
    for threshold in (0, 10**9):
        monkeypatch.setattr(components, "SMALL_RUNS", threshold)
        for binary in images:
            _check_against_scipy(binary)


@settings(max_examples=200, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 30), st.integers(1, 30))))
def test_holes_match_scipy_on_any_binary_image(binary):
    comps = label(binary)
    for i in range(len(comps)):
        mask = np.pad(comps.mask(binary.shape, [i]), 1)
        _, regions = ndimage.label(~mask)  # 4-connected background: the outside and holes
        assert comps.holes(i) == regions - 1


def test_an_eight_has_two_holes_and_noise_hundreds():
    eight = np.zeros((30, 20), bool)
    eight[2:28, 3:17] = True
    eight[5:12, 7:13] = eight[17:25, 7:13] = False
    comps = label(eight)
    assert comps.holes(0) == 2
    noise = np.random.default_rng(0).random((100, 100)) < 0.6
    assert label(noise).holes(0) > 300
