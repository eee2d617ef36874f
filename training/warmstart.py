"""Starting a recipe from the weights of a shipped ONNX model (`python -m training --init DIR`).

Hendrycks et al. (2019) added outlier exposure to trained models by fine-tuning them for a
few epochs; this does the same from a bundle's ONNX files, the only form in which shipped
weights are kept. The ONNX initialisers carry the PyTorch parameter names. The export folds a
batch norm into the convolution before it (a weight and a `weight_bias`); the norm is
rebuilt so that it reproduces the folded layer exactly in evaluation and nearly in training:
its statistics are measured on training images, its scale and shift undo them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.model import LeNet5


class WarmStartError(Exception):
    """An ONNX file that does not fit the recipe. One line."""


def _weights(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise WarmStartError(f"{path}: not found (--init needs a bundle with this recipe)")
    graph = onnx.load(str(path)).graph
    return {i.name.removeprefix("model."): numpy_helper.to_array(i) for i in graph.initializer}


def load_onnx(model: LeNet5, path: Path, images: torch.Tensor) -> None:
    """Sets `model`'s weights from `path`; `images` [N, 1, 28, 28], normalised as the model
    expects, measure the statistics of its batch norms. Leaves the model in eval mode."""
    found = _weights(path)
    state = model.state_dict()
    norms = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    folded = {name: None for name, _ in norms}
    for key, value in state.items():
        module = key.rsplit(".", 1)[0]
        if module in folded:
            continue  # set below, from the folded bias and measured statistics
        if key.endswith("num_batches_tracked"):
            continue
        if key not in found or tuple(found[key].shape) != tuple(value.shape):
            raise WarmStartError(f"{path}: no weight {key} of shape {tuple(value.shape)}")
        state[key] = torch.from_numpy(found[key].copy())
    model.load_state_dict(state)
    model.eval()
    for name, norm in norms:
        index = int(name.rsplit(".", 1)[1])
        conv = f"{name.rsplit('.', 1)[0]}.{index - 1}.weight_bias"
        if conv not in found:
            raise WarmStartError(f"{path}: no folded bias {conv} for the batch norm {name}")
        bias = torch.from_numpy(found[conv].copy())
        captured: list[torch.Tensor] = []
        hook = norm.register_forward_pre_hook(lambda _m, args, out=captured: out.append(args[0]))
        with torch.no_grad():
            # Identity for the measurement, so the layers after it see the folded network.
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
            norm.weight.fill_(1.0)
            norm.bias.copy_(bias)
            model(images)
            hook.remove()
            z = captured[0].transpose(0, 1).flatten(1)
            mean, var = z.mean(1), z.var(1, unbiased=False)
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.weight.copy_((var + norm.eps).sqrt())
            norm.bias.copy_(mean + bias)
