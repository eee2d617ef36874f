"""`python -m training --init DIR` starts from a bundle's ONNX weights (training/warmstart.py)."""

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.config import VARIANTS
from training.model import build
from training.train import normalise
from training.warmstart import WarmStartError, load_onnx


@pytest.mark.parametrize("name", list(VARIANTS))
def test_loaded_model_gives_the_onnx_models_probabilities(bundle, mnist_test, name):
    images = torch.from_numpy(mnist_test[0][:512]).unsqueeze(1)
    import json

    spec = json.loads((bundle / "manifest.json").read_text())["input"]
    mean, std = spec["mean"], spec["std"]
    x = normalise(images, mean, std)
    model = build(dataclasses.replace(VARIANTS[name].model, pad_value=-mean / std))
    load_onnx(model, bundle / f"{name}.onnx", x)
    with torch.no_grad():
        ours = model(x).softmax(1).numpy()
    sess = ort.InferenceSession(str(bundle / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    theirs = sess.run(["probabilities"], {"image": x.numpy()})[0]
    assert np.abs(ours - theirs).max() < 1e-4


def test_onnx_of_another_architecture_is_refused(bundle):
    model = build(VARIANTS["lenet5-relu-adam"].model)  # 32x32 input: other dense sizes
    with pytest.raises(WarmStartError, match="no weight"):
        load_onnx(model, bundle / "lenet5-classic-sgd.onnx", torch.zeros(8, 1, 28, 28))
