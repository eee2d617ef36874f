"""The weight average that gets validated and shipped."""

import torch

from training.ema import EMA
from training.model import ModelArgs, build


def _reference(model, decay):
    """torch's AveragedModel with the warm-up average the recipes used before `EMA`."""

    def avg_fn(avg, new, n):
        d = torch.clamp((1 + n) / (10 + n), max=decay).to(avg.dtype)
        return avg + (new - avg) * (1 - d)

    return torch.optim.swa_utils.AveragedModel(model, avg_fn=avg_fn, use_buffers=True)


def test_same_weights_bit_for_bit_as_torchs_averaged_model():
    torch.manual_seed(0)
    model = build(ModelArgs(activation="gelu", pool="avg", norm="batch", pad=2))
    ema, ref = EMA(model, 0.99), _reference(model, 0.99)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):  # past the warm-up, where the decay reaches its cap
        loss = model(torch.randn(8, 1, 28, 28)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        ref.update_parameters(model)
    mine, theirs = ema.module.state_dict(), ref.module.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key
    assert mine["features.1.num_batches_tracked"] == 30  # integer buffers are copied


def test_state_round_trip_keeps_the_warm_up_position():
    model = build(ModelArgs())
    ema = EMA(model, 0.999)
    for _ in range(5):
        ema.update(model)
    again = EMA(model, 0.999)
    again.load_state_dict(ema.state_dict())
    assert again.updates == 5
