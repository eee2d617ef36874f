"""Drop-in layers for the ops whose stock CPU kernels dominate a LeNet-5 training step.

In torch 2.14's CPU build three ops of our models run an order of magnitude slower than
their arithmetic needs (2 threads, a [128, 6, 24, 24] batch, forward + backward): `elu`
2.5 ms (`expm1` is not vectorised; `exp` is), 2x2 `max_pool2d` 1.4 ms and 2x2 `avg_pool2d`
0.9 ms. The layers below compute the same values from strided views and vectorised
element-wise ops, several times faster. They replace the stock kernel only while training on
the CPU; evaluation, CUDA and ONNX export run the stock ops, so exported graphs and
checkpoints do not change.
"""

from __future__ import annotations

import torch
from torch import nn


def _quadrants(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The four corners of every 2x2 window, each [N, C, H/2, W/2] (strided views, no copy)."""
    return x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]


def _spread(parts: tuple[torch.Tensor, ...], like: torch.Tensor) -> torch.Tensor:
    """Inverse of _quadrants: writes four [N, C, H/2, W/2] tensors into one [N, C, H, W]."""
    out = torch.empty_like(like)
    for view, part in zip(_quadrants(out), parts, strict=True):
        view.copy_(part)
    return out


class _Elu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        # elu(x) = max(x, 0) + exp(min(x, 0)) - 1, and its derivative is exp(min(x, 0)).
        slope = x.clamp_max(0).exp_()
        ctx.save_for_backward(slope)
        return x.clamp_min(0).add_(slope).sub_(1)

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        return grad * slope


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        a, b, c, d = _quadrants(x)
        out = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        # Ties (rare after a convolution, except all-zero windows after a ReLU, whose
        # gradient the ReLU then drops) pass the gradient to every maximum, not just the first.
        x, out = ctx.saved_tensors
        return _spread(tuple(grad * (q == out) for q in _quadrants(x)), x)


class _AvgPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        a, b, c, d = _quadrants(x)
        ctx.shape = x.shape
        return (a + b).add_(c).add_(d).mul_(0.25)

    @staticmethod
    def backward(ctx, grad):
        quarter = grad * 0.25
        return _spread((quarter,) * 4, grad.new_empty(ctx.shape))


def _fast(module: nn.Module, x: torch.Tensor) -> bool:
    return module.training and x.device.type == "cpu"


def _plain_2x2(pool: nn.Module, x: torch.Tensor) -> bool:
    even = x.dim() == 4 and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
    return even and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2), None)


class ELU(nn.ELU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast(self, x) and self.alpha == 1.0 and not self.inplace:
            return _Elu.apply(x)
        return super().forward(x)


class MaxPool2d(nn.MaxPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = self.padding == 0 and self.dilation == 1 and not self.ceil_mode
        if _fast(self, x) and plain and _plain_2x2(self, x) and not self.return_indices:
            return _MaxPool2x2.apply(x)
        return super().forward(x)


class AvgPool2d(nn.AvgPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = self.padding == 0 and not self.ceil_mode and self.divisor_override is None
        if _fast(self, x) and plain and _plain_2x2(self, x):
            return _AvgPool2x2.apply(x)
        return super().forward(x)
