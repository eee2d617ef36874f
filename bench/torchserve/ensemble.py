"""The shipped ensemble as one TorchScript file, for TorchServe to load.

The weights come from the bundle's ONNX files (training/warmstart.py rebuilds each LeNet-5
from them), and the module around them is export's own `Ensemble`, the one traced into
ensemble.onnx: the same three models and the same vote, so TorchServe pays the model cost
our server pays and the comparison measures only the serving stack.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from export.to_onnx import Ensemble
from training.config import VARIANTS
from training.model import build
from training.train import normalise
from training.warmstart import load_onnx

# A batch size the trace does not specialise on: the batch dimension stays dynamic, and the
# test checks other sizes.
TRACE_BATCH = 3


def build_ensemble(artifacts: Path) -> torch.jit.ScriptModule:
    """The bundle's models and vote, traced and frozen: image [N, 1, 28, 28], normalised as
    the manifest says -> (label [N], votes [N, 10], tie_broken [N], probabilities [N, M, 10]),
    ensemble.onnx's outputs in its order."""
    manifest = json.loads((artifacts / "manifest.json").read_text())
    mean, std = manifest["input"]["mean"], manifest["input"]["std"]
    # load_onnx measures the rebuilt batch norms on real digits; in evaluation they reproduce
    # the folded layers whatever the digits, so the bundle's own golden digits serve.
    pixels = np.load(artifacts / manifest["golden"]["file"])["pixels"]
    x = normalise(torch.from_numpy(pixels).unsqueeze(1), mean, std)
    models = []
    for name in manifest["ensemble"]["members"]:
        # As training builds it: the 32x32 variants pad with the normalised background.
        model = build(dataclasses.replace(VARIANTS[name].model, pad_value=-mean / std))
        load_onnx(model, artifacts / f"{name}.onnx", x)
        models.append(model)
    ensemble = Ensemble(models).eval()
    # torch 2.14 marks TorchScript deprecated, but it is the model format TorchServe 0.12's
    # BaseHandler loads (a .pt serialized file); the warnings say nothing about this use.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(ensemble, x[:TRACE_BATCH])
        # Freezing folds the weights into the graph: TorchScript's advice for inference.
        return torch.jit.freeze(traced)


def save_ensemble(artifacts: Path, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(build_ensemble(artifacts), str(path))
    return path
