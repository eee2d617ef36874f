"""TorchServe handler for the digit ensemble. Runs in TorchServe's Python worker, from the
TorchServe virtualenv: it imports nothing from this repository but digit_codec, which the
archive carries beside it.

BaseHandler's documented hooks only: initialize loads the archive's TorchScript file (its own
code), preprocess and postprocess are digit_codec's, inference is BaseHandler's.
"""

from __future__ import annotations

import json
from pathlib import Path

import digit_codec  # beside this file in the archive; TorchServe puts that folder on sys.path
import torch
from ts.torch_handler.base_handler import BaseHandler


class DigitEnsembleHandler(BaseHandler):
    def initialize(self, context) -> None:
        # One thread per worker (the baseline is 2 workers x 1 thread); the runner also sets
        # OMP_NUM_THREADS=1 so that no thread pool starts wider before this line.
        torch.set_num_threads(1)
        super().initialize(context)
        manifest = Path(context.system_properties["model_dir"]) / "manifest.json"
        self.spec = digit_codec.InputSpec.from_manifest(json.loads(manifest.read_text()))

    def preprocess(self, data: list[dict]) -> torch.Tensor:
        return digit_codec.to_batch(data, self.spec)

    def postprocess(self, data: tuple[torch.Tensor, ...]) -> list[str]:
        # Compact JSON with its content type: TorchServe would otherwise serialise a dict
        # itself, indented, which only makes its answers longer than ours.
        for i in range(len(data[0])):
            self.context.set_response_content_type(i, "application/json")
        return [json.dumps(a) for a in digit_codec.answers(*data)]
