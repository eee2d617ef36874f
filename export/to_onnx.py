"""PyTorch -> ONNX: one graph per model, and one graph holding all three models and the vote.

Graphs are written with the torch.export-based exporter at a fixed opset, then stripped of the
exporter's per-node metadata (it embeds source paths and stack traces of the build machine).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export.spec import SPEC
from training.model import LeNet5
from training.vote import vote
from training.whole_digit import Scored, WholeDigitNet

# 21 is the newest opset that onnxruntime 1.19+ runs, which covers Triton 2.51's backend.
OPSET = 21
INPUT = SPEC.input_name  # float32 [N, 1, H, W], normalised as the manifest says
MODEL_OUTPUTS = ("probabilities", "logits")  # float32 [N, 10] each
ENSEMBLE_OUTPUTS = ("label", "votes", "tie_broken", "probabilities")
# label int64 [N]; votes int64 [N, 10]; tie_broken bool [N]; probabilities float32 [N, M, 10]
WHOLE_OUTPUT = "whole"  # float32 [N]: the whole-digit check's probability of one whole digit


class _WithProbabilities(nn.Module):
    def __init__(self, model: LeNet5):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        logits = self.model(image)
        return logits.softmax(dim=1), logits


class Ensemble(nn.Module):
    """All models side by side plus the vote of training/vote.py, as one graph."""

    def __init__(self, models: list[LeNet5]):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, image: torch.Tensor):
        probs = torch.stack([m(image).softmax(dim=1) for m in self.models])  # [M, N, 10]
        label, votes, tie_broken = vote(probs)
        return label, votes, tie_broken, probs.transpose(0, 1)


def _strip(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drops exporter metadata and doc strings: they hold this machine's paths."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        del value.metadata_props[:]
        value.doc_string = ""
    model.graph.doc_string = ""
    model.doc_string = ""
    del model.metadata_props[:]
    return model


def _export(module: nn.Module, output_names: tuple[str, ...], doc: str) -> onnx.ModelProto:
    module = module.eval()
    example = torch.zeros(2, 1, SPEC.height, SPEC.width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's chatter is not for our users
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[INPUT],
            output_names=list(output_names),
            dynamic_shapes={INPUT: {0: torch.export.Dim("batch", min=1)}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    buffer = io.BytesIO()
    program.save(buffer)
    model = _strip(onnx.load_from_string(buffer.getvalue()))
    model.doc_string = doc
    model.producer_name = "mnist-lenet-ensemble export"
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def export_model(model: LeNet5, path: Path, doc: str) -> onnx.ModelProto:
    onnx_model = _export(_WithProbabilities(model), MODEL_OUTPUTS, doc)
    onnx.save(onnx_model, path)
    return onnx_model


def export_ensemble(models: list[LeNet5], path: Path, doc: str) -> onnx.ModelProto:
    onnx_model = _export(Ensemble(models), ENSEMBLE_OUTPUTS, doc)
    onnx.save(onnx_model, path)
    return onnx_model


def export_whole_digit(
    net: WholeDigitNet, trained: dict, given: dict, path: Path, doc: str
) -> onnx.ModelProto:
    """The check taking the bundle's input (normalised as `given`) and answering its score."""
    onnx_model = _export(Scored(net, trained, given), (WHOLE_OUTPUT,), doc)
    onnx.save(onnx_model, path)
    return onnx_model


class VoteOnly(nn.Module):
    """training/vote.py over three probability tensors: the bundle's vote.onnx, which v2's
    `vote` model serves and the Triton pipeline `lenet5-vote` ends with."""

    def forward(self, p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor):
        label, votes, tie_broken = vote(torch.stack([p0, p1, p2]))
        return label, votes, tie_broken


def export_vote(path: Path) -> None:
    example = tuple(torch.softmax(torch.randn(2, 10), 1) for _ in range(3))
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        VoteOnly(),
        example,
        input_names=["p0", "p1", "p2"],
        output_names=["label", "votes", "tie_broken"],
        dynamic_shapes={name: {0: batch} for name in ("p0", "p1", "p2")},
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    model = _strip(program.model_proto)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
