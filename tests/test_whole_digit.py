"""training/whole_digit.py: the whole-digit check's examples and its shipped form."""

from __future__ import annotations

import numpy as np
import torch

from export.spec import SPEC
from server import components
from training import whole_digit as wd


def test_examples_are_fitted_as_the_server_fits_a_digit_and_cover_every_kind(mnist_test):
    images, _ = mnist_test
    x, kinds = wd.examples(images[:200], 60, seed=0)
    assert x.dtype == np.uint8 and x.shape[1:] == (SPEC.height, SPEC.width)
    assert (kinds == wd.WHOLE).sum() == 60
    assert all((kinds == k).sum() >= 15 for k in (wd.PAIR, wd.PART, wd.SLIVER))
    off = []
    for img in x:
        rows, cols = np.flatnonzero(img.any(1)), np.flatnonzero(img.any(0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == SPEC.digit_box
        mass = img.astype(np.float64)
        cy = (mass.sum(1) * np.arange(28)).sum() / mass.sum()
        cx = (mass.sum(0) * np.arange(28)).sum() / mass.sum()
        off.append(np.hypot(cy - SPEC.centre_of_mass[0], cx - SPEC.centre_of_mass[1]))
    # Centred as MNIST is, but kept in the frame (a tall digit's mass may sit off centre).
    assert np.median(off) < 0.5 and max(off) < 2.0
    again, _ = wd.examples(images[:200], 60, seed=0)
    assert np.array_equal(x, again)  # export remakes its validation examples from the seed


def test_a_pair_touches_as_one_piece_of_ink_and_a_part_is_narrower_than_its_digit():
    rng = np.random.default_rng(0)
    one = np.ones((20, 2), np.float32)
    zero = np.ones((20, 12), np.float32)
    zero[3:17, 3:9] = 0.0
    for overlap in (0, 2):
        pair = wd._pair(one, zero, overlap, rng)
        assert 12 <= pair.shape[1] <= 14 - overlap  # no gap between them
        assert len(components.label(pair > 0.3)) == 1
    part = wd._part(zero, rng)
    assert part is not None and 2 <= part.shape[1] < zero.shape[1]


def test_the_shipped_graph_takes_the_bundles_normalisation_for_the_one_it_was_trained_with():
    torch.manual_seed(0)
    net = wd.WholeDigitNet().eval()
    trained, given = {"mean": 0.13, "std": 0.31}, {"mean": 0.1307, "std": 0.3082}
    pixels = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        want = torch.sigmoid(net((pixels - trained["mean"]) / trained["std"]))
        got = wd.Scored(net, trained, given)((pixels - given["mean"]) / given["std"])
    assert torch.allclose(got, want, atol=1e-6)
