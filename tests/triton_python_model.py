"""A Triton python-backend model that stands in for the onnxruntime backend in tests.

The tritonserver binary shipped in the nvidia-pytriton wheel has only the python backend, so
tests/test_triton.py copies this file next to each model.onnx of the generated repository.
At load it checks the model's config.pbtxt against the ONNX file (names, dims, types): a
mismatch makes Triton refuse the model, as the onnxruntime backend's own checks would. It
then runs the graph with onnxruntime, one batch for all the requests Triton's dynamic batcher
hands it at once.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

TYPES = {"TYPE_FP32": "tensor(float)", "TYPE_INT64": "tensor(int64)", "TYPE_BOOL": "tensor(bool)"}


def _check(kind, declared, actual, batched):
    if [d["name"] for d in declared] != [a.name for a in actual]:
        raise ValueError(
            f"{kind} names {[d['name'] for d in declared]} != ONNX {[a.name for a in actual]}"
        )
    for d, a in zip(declared, actual, strict=True):
        if TYPES[d["data_type"]] != a.type:
            raise ValueError(f"{kind} {a.name}: config {d['data_type']}, ONNX {a.type}")
        dims = d["reshape"]["shape"] if "reshape" in d else d["dims"]
        onnx_dims = a.shape[1:] if batched else a.shape
        expected = [x if isinstance(x, int) else -1 for x in onnx_dims]
        if [int(x) for x in dims] != expected:
            raise ValueError(f"{kind} {a.name}: config dims {dims}, ONNX {expected}")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        batched = int(config.get("max_batch_size", 0)) > 0
        _check("input", config["input"], self.session.get_inputs(), batched)
        _check("output", config["output"], self.session.get_outputs(), batched)
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        # What Triton's onnxruntime backend does with `reshape`: the graph's output shape is
        # handed to clients in the config's dims.
        self.dims = {o["name"]: [int(d) for d in o["dims"]] for o in config["output"]}

    def execute(self, requests):
        per_request = [
            [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs]
            for r in requests
        ]
        feeds = {
            n: np.concatenate([arrays[i] for arrays in per_request])
            for i, n in enumerate(self.inputs)
        }
        results = self.session.run(self.outputs, feeds)
        responses, start = [], 0
        for request, arrays in zip(requests, per_request, strict=True):
            n = len(arrays[0])
            # Only what was asked for, as the onnxruntime backend does: an ensemble step that
            # gets more outputs than it requested never completes.
            wanted = set(request.requested_output_names()) or set(self.outputs)
            tensors = [
                pb_utils.Tensor(
                    name,
                    np.ascontiguousarray(res[start : start + n].reshape([n, *self.dims[name]])),
                )
                for name, res in zip(self.outputs, results, strict=True)
                if name in wanted
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
