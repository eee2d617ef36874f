"""How server/batch_pool.py cuts a batch into slices."""

import pytest

from server.batch_pool import MIN_SLICE, plan


@pytest.mark.parametrize("n", [1, 2, MIN_SLICE, 2 * MIN_SLICE - 1, 2 * MIN_SLICE, 100, 256, 1000])
@pytest.mark.parametrize("helpers", [0, 1, 2, 7])
def test_slices_cover_the_batch_and_are_never_tiny(n, helpers):
    sizes = plan(n, helpers)
    assert sum(sizes) == n
    assert len(sizes) <= helpers + 1
    if len(sizes) > 1:
        assert min(sizes) >= MIN_SLICE


def test_a_large_batch_uses_every_helper_and_a_small_one_none():
    assert len(plan(256, 1)) == 2 and len(plan(256, 3)) == 4
    assert plan(MIN_SLICE, 3) == [MIN_SLICE]
    assert plan(5, 0) == [5]
