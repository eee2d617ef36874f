"""The non-digits made for outlier exposure (training/nondigits.py)."""

import numpy as np

from training import nondigits


def test_every_kind_is_made_and_fitted_as_mnist_fits_a_digit():
    made = nondigits.generate(240, seed=0)
    counts = made.counts()
    # scripts/test.sh installs the fonts and Fashion-MNIST: every kind, not only those that
    # nondigits' own readers happened to find (a reader that misses them must fail here).
    assert {k for k, n in counts.items() if n} == set(nondigits.KINDS), made.missing
    assert len(made.images) == 240 and made.images.dtype == np.uint8
    for img in made.images:
        rows, cols = np.flatnonzero(img.max(1)), np.flatnonzero(img.max(0))
        # The longer side of the ink is 20 pixels (21 with the resampling's faint rim).
        assert 19 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21
        yy, xx = np.mgrid[0:28, 0:28]
        w = img.astype(np.float64)
        centre = ((yy * w).sum() / w.sum(), (xx * w).sum() / w.sum())
        assert abs(centre[0] - 14) < 1.5 and abs(centre[1] - 14) < 1.5, centre


def test_held_out_part_shares_no_font_with_training():
    found = nondigits.fonts()
    train, held = nondigits.split(found, "train"), nondigits.split(found, "held")
    assert train and held  # two empty parts share nothing either
    assert not set(train) & set(held) and len(train) + len(held) == len(found)


def test_without_fonts_or_fashion_mnist_it_says_so_and_draws_the_rest(tmp_path):
    made = nondigits.generate(90, seed=0, font_dirs=(tmp_path,), fashion_dirs=(tmp_path,))
    assert {k for k, n in made.counts().items() if n} == {"shape", "frame", "scribble"}
    assert len(made.images) == 90
    assert any("fonts" in line for line in made.missing)
    assert any("dataset-fashion-mnist" in line for line in made.missing)


def test_same_seed_same_images():
    a, b = nondigits.generate(30, seed=3), nondigits.generate(30, seed=3)
    assert np.array_equal(a.images, b.images)
