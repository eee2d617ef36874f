import pytest
import torch

from training.config import VARIANTS
from training.model import LeNet5, ModelArgs, build, parameter_count, summary


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_is_a_lenet5_of_the_right_size(name):
    model = build(VARIANTS[name].model).eval()
    out = model(torch.randn(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert 40_000 <= parameter_count(model) <= 100_000
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 6, (5, 5)),
        (6, 16, (5, 5)),
    ]
    dense = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert dense == [120, 84, 10]


def test_variants_differ_in_architecture_optimiser_augmentation_and_seed():
    vs = list(VARIANTS.values())
    assert len(vs) == 3
    for field in ("activation", "pool", "norm", "pad", "dropout"):
        assert len({getattr(v.model, field) for v in vs}) > 1, field
    assert {v.optim.optimizer for v in vs} == {"adam", "sgd"}
    assert len({v.optim.schedule for v in vs}) > 1
    assert len({v.seed for v in vs}) == 3
    assert len({repr(v.augment) for v in vs}) == 3


def test_padding_uses_the_background_value_not_zero():
    args = ModelArgs(pad=2, pad_value=-0.42)
    model = LeNet5(args)
    seen = {}
    model.features[0].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    model(torch.full((1, 1, 28, 28), -0.42))
    assert seen["x"].shape == (1, 1, 32, 32)
    assert torch.all(seen["x"] == -0.42)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="activation"):
        ModelArgs(activation="softsign")
    with pytest.raises(ValueError, match="pool"):
        ModelArgs(pool="median")


def test_summary_names_the_layers():
    text = summary(ModelArgs(pad=2, norm="batch"))
    assert text.startswith("LeNet-5 32x32 in") and "+BN" in text
