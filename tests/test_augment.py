import dataclasses

import pytest
import torch
import torch.nn.functional as F

from training.augment import AugmentConfig, _elastic_field, _max_filter3, augment
from training.config import VARIANTS
from training.data import load_split


@pytest.fixture(scope="module")
def digits(mnist_dir):
    test = load_split(mnist_dir, "test")
    return torch.from_numpy(test.images[:256]).unsqueeze(1).float() / 255.0


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-9)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_recipe_keeps_shape_range_and_ink(digits, name):
    out = augment(digits, VARIANTS[name].augment, torch.Generator().manual_seed(0))
    assert out.shape == digits.shape and out.dtype == digits.dtype
    assert out.min() >= 0 and out.max() <= 1
    ink_ratio = out.sum((1, 2, 3)) / digits.sum((1, 2, 3))
    assert ink_ratio.min() > 0.5 and ink_ratio.max() < 2.0, (ink_ratio.min(), ink_ratio.max())
    assert not torch.equal(out, digits)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_augmented_digit_resembles_its_original_not_its_mirror(digits, name):
    # Without translation, so that pixel correlation measures shape, not position.
    cfg = dataclasses.replace(VARIANTS[name].augment, translate=0.0)
    out = augment(digits, cfg, torch.Generator().manual_seed(1))
    to_original = _corr(out, digits)
    to_mirror = _corr(out, digits.flip(3))
    asymmetric = _corr(digits, digits.flip(3)) < 0.5  # a 0 or an 8 looks like its mirror
    assert (to_original[asymmetric] > to_mirror[asymmetric]).float().mean() > 0.95
    assert to_original.median() > 0.6


def test_disabled_augmentation_is_identity(digits):
    assert torch.equal(augment(digits, AugmentConfig(strength=0.0), torch.Generator()), digits)


def test_same_seed_same_draw_and_different_seeds_differ(digits):
    cfg = VARIANTS["lenet5-relu-adam"].augment
    a = augment(digits[:8], cfg, torch.Generator().manual_seed(5))
    b = augment(digits[:8], cfg, torch.Generator().manual_seed(5))
    c = augment(digits[:8], cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_translation_moves_the_centre_of_mass_by_at_most_its_limit(digits):
    cfg = AugmentConfig(rotate=0, scale=0, shear=0, translate=3.0)
    out = augment(digits, cfg, torch.Generator().manual_seed(2))
    cols = torch.arange(28.0)

    def centre_x(x):
        m = x.sum(2).squeeze(1)
        return (m * cols).sum(1) / m.sum(1)

    shift = (centre_x(out) - centre_x(digits)).abs()
    assert shift.max() < 3.6 and shift.mean() > 0.8  # uniform in [-3, 3]: mean |shift| is 1.5


def test_thicker_strokes_add_ink():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 6:22, 13:15] = 1.0
    cfg = AugmentConfig(rotate=0, scale=0, shear=0, translate=0, stroke=1.0)
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    changed = out.sum((1, 2, 3)) - x.sum((1, 2, 3))
    assert (changed.abs() > 1).all()  # every draw thickened or thinned the bar


def test_max_filter_equals_a_3x3_max_pool():
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(3)) - 0.5
    assert torch.equal(_max_filter3(x), F.max_pool2d(x, 3, stride=1, padding=1))


def test_elastic_field_is_the_bicubic_upsampling_of_its_knots():
    cfg = AugmentConfig(elastic_alpha=1.0, elastic_sigma=4.0)
    field = _elastic_field(4, 28, cfg, torch.Generator().manual_seed(4), "cpu")
    coarse = torch.rand(4, 2, 5, 5, generator=torch.Generator().manual_seed(4)) * 2 - 1
    want = F.interpolate(coarse, size=(28, 28), mode="bicubic", align_corners=True)
    want = want / want.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    torch.testing.assert_close(field, (want * 2.0 / 28).permute(0, 2, 3, 1))
    rms_pixels_per_axis = field.pow(2).mean().sqrt() * 28 / 2
    assert abs(rms_pixels_per_axis.item() - 1.0) < 1e-4


def test_edge_fragments_stay_in_the_outer_pixels():
    from training.augment import _fragments

    ink = _fragments(512, 28, 28, torch.Generator().manual_seed(0), "cpu")
    assert (ink.flatten(1).amax(1) > 0.4).all()  # every image got its stroke
    # Starts within 3 px of the edge and runs at most 8 px (plus the pen's width) inwards.
    assert ink[:, :, 12:16, 12:16].max() == 0


def test_blur_low_resolution_and_fragments_keep_shape_and_range(digits):
    cfg = AugmentConfig(
        rotate=0, scale=0, shear=0, translate=0, blur=1.0, lowres=1.0, fragments=1.0
    )
    assert cfg.enabled
    out = augment(digits, cfg, torch.Generator().manual_seed(0))
    assert out.shape == digits.shape and out.min() >= 0 and out.max() <= 1
    # Changed, yet still the same digits (a digit scaled down to 10 pixels keeps 0.45).
    corr = _corr(out, digits)
    assert not torch.equal(out, digits) and corr.min() > 0.3 and corr.mean() > 0.75
