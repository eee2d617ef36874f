import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training import cpu_kernels
from training.config import VARIANTS
from training.model import build

# (fast layer, stock twin, input shape). 24x24 and 10x10 are what LeNet-5's layers see.
PAIRS = [
    (cpu_kernels.ELU(), nn.ELU(), (16, 6, 24, 24)),
    (cpu_kernels.MaxPool2d(2), nn.MaxPool2d(2), (16, 6, 28, 28)),
    (cpu_kernels.MaxPool2d(2), nn.MaxPool2d(2), (16, 16, 10, 10)),
    (cpu_kernels.AvgPool2d(2), nn.AvgPool2d(2), (16, 6, 24, 24)),
]


def _value_and_grad(layer: nn.Module, x: torch.Tensor, weights: torch.Tensor):
    x = x.detach().requires_grad_()
    out = layer(x)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    return out, grad


@pytest.mark.parametrize("fast, stock, shape", PAIRS, ids=lambda p: str(p))
def test_fast_layer_matches_the_stock_op_in_value_and_gradient(fast, stock, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3
    weights = torch.randn_like(stock(x))
    fast_out, fast_grad = _value_and_grad(fast.train(), x, weights)
    stock_out, stock_grad = _value_and_grad(stock.train(), x, weights)
    torch.testing.assert_close(fast_out, stock_out)
    torch.testing.assert_close(fast_grad, stock_grad)


def test_max_pool_after_relu_matches_despite_all_zero_windows():
    # Ties at zero are everywhere after a ReLU; the ReLU drops their gradient either way.
    x = torch.randn(16, 6, 28, 28, generator=torch.Generator().manual_seed(1)) - 1
    weights = torch.randn(16, 6, 14, 14)
    fast = nn.Sequential(nn.ReLU(), cpu_kernels.MaxPool2d(2)).train()
    stock = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)).train()
    for got, want in zip(
        _value_and_grad(fast, x, weights), _value_and_grad(stock, x, weights), strict=True
    ):
        torch.testing.assert_close(got, want)


STOCK = {
    cpu_kernels.ELU: nn.ELU,
    cpu_kernels.MaxPool2d: lambda: nn.MaxPool2d(2),
    cpu_kernels.AvgPool2d: lambda: nn.AvgPool2d(2),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_model_trains_the_same_as_with_stock_layers(name, monkeypatch):
    torch.manual_seed(0)
    model = build(VARIANTS[name].model)
    stock = build(VARIANTS[name].model)
    stock.load_state_dict(model.state_dict())
    for seq in (stock.features, stock.classifier):
        for i, layer in enumerate(seq):
            if type(layer) in STOCK:
                seq[i] = STOCK[type(layer)]()
    calls = []

    def counted(kernel):
        apply = kernel.apply
        return lambda x: calls.append(kernel) or apply(x)

    for kernel in (cpu_kernels._Elu, cpu_kernels._MaxPool2x2, cpu_kernels._AvgPool2x2):
        monkeypatch.setattr(kernel, "apply", counted(kernel))
    x = torch.randn(32, 1, 28, 28)
    y = torch.randint(0, 10, (32,))
    grads = []
    for m in (model, stock):
        m.train()
        torch.manual_seed(1)  # the same dropout masks
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
        grads.append([p.grad for p in m.parameters()])
    assert len(calls) >= 2  # the fast kernels ran (every recipe has at least its two pools)
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_evaluation_runs_the_stock_kernels(monkeypatch):
    # Export traces the model in eval mode: its graph must hold the stock ops.
    def refuse(*args):
        raise AssertionError("fast kernel used outside training")

    for fn in (cpu_kernels._Elu, cpu_kernels._MaxPool2x2, cpu_kernels._AvgPool2x2):
        monkeypatch.setattr(fn, "apply", refuse)
    for name in VARIANTS:
        build(VARIANTS[name].model).eval()(torch.randn(2, 1, 28, 28))


def test_odd_sizes_fall_back_to_the_stock_kernel():
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(cpu_kernels.MaxPool2d(2).train()(x), F.max_pool2d(x, 2))
    torch.testing.assert_close(cpu_kernels.AvgPool2d(2).train()(x), F.avg_pool2d(x, 2))
