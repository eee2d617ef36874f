"""The Open Inference Protocol (KServe v2) REST subset, as Triton Inference Server speaks it.

Clients written for Triton (tritonclient.http, KServe SDKs) work against this server
unchanged: server and model metadata, readiness, and inference on preprocessed digits
(FP32 [N, 1, 28, 28]) for each model and for the ensemble graph. Tensors travel as JSON or,
with Triton's binary tensor data extension, as raw little-endian bytes after the JSON header.

Every model name that `python -m export.triton` writes into a Triton repository is served,
so a client does not change when the backend does; `lenet5-vote` (Triton's pipeline of the
three models and the vote) is one run of the ensemble graph here. Where Triton answers a
malformed request with a 500, this answers 400 and says why: each field is checked for its
type before it is used, and a tensor must hold finite numbers on the way in and out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from flask import Blueprint, Response, current_app, jsonify, request

from server.errors import BadRequest, InferenceFailed, NotFound
from server.state import state

v2 = Blueprint("v2", __name__, url_prefix="/v2")

# v2 datatype <-> numpy, for the types our graphs use.
DTYPES = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}
ONNX_TO_V2 = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(bool)": "BOOL"}
HEADER = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]  # -1 where the graph is dynamic (the batch)


@dataclass
class Model:
    name: str
    session: ort.InferenceSession
    inputs: list[Tensor]
    outputs: list[Tensor]
    platform: str = "onnxruntime_onnx"

    def run(self, names: list[str], feeds: dict) -> list[np.ndarray]:
        return self.session.run(names, feeds)

    @classmethod
    def of(cls, name: str, session: ort.InferenceSession) -> Model:
        def tensors(args) -> list[Tensor]:
            out = []
            for a in args:
                shape = [d if isinstance(d, int) else -1 for d in a.shape]
                if len(shape) == 1:
                    # Triton cannot declare a per-item scalar: its configs say [1], so clients
                    # see [N, 1] where the graph has [N]. We answer as Triton does.
                    shape.append(1)
                out.append(Tensor(a.name, ONNX_TO_V2[a.type], shape))
            return out

        return cls(name, session, tensors(session.get_inputs()), tensors(session.get_outputs()))

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": self.platform,
            "inputs": [t.__dict__ for t in self.inputs],
            "outputs": [t.__dict__ for t in self.outputs],
        }


class Pipeline(Model):
    """`lenet5-vote` as export/triton.py writes it: each model, then the vote, with the
    vote's outputs and each model's probabilities (`probabilities_<i>`, in the manifest's
    order). Here it is one run of the ensemble graph, whose [N, models, 10] probabilities are
    the same numbers."""

    @classmethod
    def of_ensemble(cls, name: str, ensemble: Model, members: int) -> Pipeline:
        probs = next(t for t in ensemble.outputs if t.name == "probabilities")
        split = [
            Tensor(f"probabilities_{i}", probs.datatype, [probs.shape[0], probs.shape[2]])
            for i in range(members)
        ]
        kept = [t for t in ensemble.outputs if t.name != "probabilities"]
        return cls(name, ensemble.session, ensemble.inputs, kept + split, "ensemble")

    def run(self, names: list[str], feeds: dict) -> list[np.ndarray]:
        kept = [t.name for t in self.outputs if not t.name.startswith("probabilities_")]
        *outputs, probs = self.session.run([*kept, "probabilities"], feeds)
        values = dict(zip(kept, outputs, strict=True))
        values.update({f"probabilities_{i}": probs[:, i] for i in range(probs.shape[1])})
        return [values[n] for n in names]


def models(
    members: dict[str, ort.InferenceSession],
    ensemble: ort.InferenceSession,
    vote: ort.InferenceSession,
) -> dict:
    """Every model the v2 routes serve, by the names of the Triton repository that
    export/triton.py writes: each member, the ensemble graph, the vote and the pipeline."""
    served = {n: Model.of(n, session) for n, session in members.items()}
    served["ensemble"] = Model.of("ensemble", ensemble)
    served["vote"] = Model.of("vote", vote)
    served["lenet5-vote"] = Pipeline.of_ensemble("lenet5-vote", served["ensemble"], len(members))
    return served


def _model(name: str, version: str | None) -> Model:
    model = state().v2_models.get(name)
    if model is None:
        raise NotFound(f"Unknown model {name!r}; known: {', '.join(state().v2_models)}.")
    if version not in (None, "1"):
        raise NotFound(f"Model {name!r} has only version 1.")
    return model


def _parse_body() -> tuple[dict, bytes]:
    """(JSON header, binary tail) of a request, binary tensor extension included."""
    body = request.get_data(cache=False)
    length = request.headers.get(HEADER)
    if length is None:
        head, tail = body, b""
    else:
        # ASCII digits only: str.isdigit() also passes "²", which int() refuses.
        if not (length.isascii() and length.isdigit()) or int(length) > len(body):
            raise BadRequest(f"{HEADER} {length!r} does not fit a body of {len(body)} bytes.")
        head, tail = body[: int(length)], body[int(length) :]
    try:
        payload = json.loads(head)
    except RecursionError:
        raise BadRequest("The request is not valid JSON (nested too deeply).") from None
    except ValueError as e:  # UnicodeDecodeError included
        raise BadRequest(f"The request is not valid JSON ({e}).") from None
    if not isinstance(payload, dict):
        raise BadRequest("The request must be a JSON object with 'inputs'.")
    return payload, tail


def _parameters(item: dict, what: str) -> dict:
    """An object's `parameters`: a JSON object, or absent."""
    params = item.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"'parameters' of {what} must be a JSON object.")
    return params


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BadRequest(f"{what} holds NaN or infinity.")
    return array


def _read_input(
    spec: Tensor, given: dict, tail: bytes, offset: int, max_batch: int
) -> tuple[np.ndarray, int]:
    datatype, shape = given.get("datatype"), given.get("shape")
    if datatype != spec.datatype:
        raise BadRequest(
            f"Input {spec.name!r} must have datatype {spec.datatype}, got {datatype!r}."
        )
    if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
        raise BadRequest(f"Input {spec.name!r} needs a shape: a list of non-negative integers.")
    if len(shape) != len(spec.shape) or any(
        s != -1 and s != d for s, d in zip(spec.shape, shape, strict=True)
    ):
        raise BadRequest(
            f"Input {spec.name!r} must have shape {spec.shape} (-1: any batch), got {shape}."
        )
    if shape[0] < 1 or shape[0] > max_batch:
        raise BadRequest(f"Batch size {shape[0]} is outside 1..{max_batch}.")
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    count = math.prod(shape)
    size = _parameters(given, f"input {spec.name!r}").get("binary_data_size")
    if size is not None:
        if not _is_int(size) or size != count * dtype.itemsize:
            raise BadRequest(
                f"Input {spec.name!r}: binary_data_size {size!r} is not "
                f"{count} x {dtype.itemsize} bytes."
            )
        if offset + size > len(tail):
            raise BadRequest(f"Input {spec.name!r}: the body ends before its binary data.")
        array = np.frombuffer(tail, dtype=dtype, count=count, offset=offset).reshape(shape)
        array = array.astype(dtype.newbyteorder("="), copy=False)
        return _finite(array, f"Input {spec.name!r}"), offset + size
    if "data" not in given:
        raise BadRequest(f"Input {spec.name!r} has neither 'data' nor binary_data_size.")
    # numpy's own reading of the JSON values first: numbers only (an integer too large for
    # int64 becomes an object, strings and booleans their own kinds), then the tensor's type.
    kinds = "b" if datatype == "BOOL" else "iuf"
    try:
        values = np.asarray(given["data"])
    except (TypeError, ValueError, OverflowError, RecursionError):
        values = None
    if values is None or values.dtype.kind not in kinds:
        raise BadRequest(f"Input {spec.name!r}: 'data' is not a list of numbers.")
    if values.size != count:
        raise BadRequest(f"Input {spec.name!r}: {values.size} values for shape {shape}.")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: refused
        array = values.astype(DTYPES[datatype])
    return _finite(array, f"Input {spec.name!r}").reshape(shape), offset


@v2.get("")
def server_metadata():
    return jsonify(
        {
            "name": "digits",
            "version": "1",
            "extensions": ["binary_tensor_data", "model_repository(read-only)"],
        }
    )


@v2.get("/health/live")
def live():
    return Response(status=200)


@v2.get("/health/ready")
def ready():
    return Response(status=200 if state().ready else 503)


@v2.get("/models/<name>")
@v2.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None):
    return jsonify(_model(name, version).metadata())


@v2.get("/models/<name>/ready")
@v2.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    _model(name, version)
    return Response(status=200 if state().ready else 503)


@v2.post("/models/<name>/infer")
@v2.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None):
    model = _model(name, version)
    payload, tail = _parse_body()
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise BadRequest("'inputs' must be a list of tensors.")
    if not all(isinstance(i.get("name"), str) for i in inputs):
        raise BadRequest("Each input needs a 'name' that is a string.")
    if "id" in payload and not isinstance(payload["id"], str):
        raise BadRequest("'id' must be a string.")
    given = {i["name"]: i for i in inputs}
    wanted = {t.name for t in model.inputs}
    if set(given) != wanted or len(inputs) != len(wanted):
        raise BadRequest(
            f"Model {name!r} takes inputs {sorted(wanted)}, got {[i.get('name') for i in inputs]}."
        )
    feeds, offset = {}, 0
    # Binary data follows the JSON in the order the inputs are listed.
    for item in inputs:
        spec = next(t for t in model.inputs if t.name == item["name"])
        feeds[spec.name], offset = _read_input(spec, item, tail, offset, state().config.max_batch)
    if offset != len(tail):
        raise BadRequest(f"{len(tail) - offset} bytes of binary data belong to no input.")

    requested = payload.get("outputs")
    binary_default = bool(_parameters(payload, "the request").get("binary_data_output", False))
    names = [t.name for t in model.outputs]
    if requested is None:
        selected = [(n, binary_default) for n in names]
    else:
        if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
            raise BadRequest("'outputs' must be a list of {name, parameters} objects.")
        unknown = [o.get("name") for o in requested if o.get("name") not in names]
        if unknown or not all(isinstance(o["name"], str) for o in requested):
            raise BadRequest(f"Model {name!r} has no output {unknown}; outputs: {names}.")
        selected = [
            (
                o["name"],
                bool(_parameters(o, f"output {o['name']!r}").get("binary_data", binary_default)),
            )
            for o in requested
        ]
    try:
        results = model.run([n for n, _ in selected], feeds)
    except Exception as e:  # a runtime fault, not the request's: logged, 503
        current_app.logger.exception("v2 inference failed for %s", name)
        raise InferenceFailed(f"The model could not run: {type(e).__name__}.") from e

    outputs, blobs = [], []
    for (out_name, binary), array in zip(selected, results, strict=True):
        # Finite inputs far beyond a digit's range (1e38) overflow inside the models.
        _finite(array, f"Output {out_name!r} for these inputs (values far out of range?)")
        spec = next(t for t in model.outputs if t.name == out_name)
        array = array.reshape(-1, 1) if array.ndim == 1 else array
        entry = {"name": out_name, "datatype": spec.datatype, "shape": list(array.shape)}
        if binary:
            blob = np.ascontiguousarray(
                array, dtype=np.dtype(DTYPES[spec.datatype]).newbyteorder("<")
            ).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    answer = {"model_name": name, "model_version": "1", "outputs": outputs}
    if "id" in payload:
        answer["id"] = payload["id"]
    head = json.dumps(answer).encode()
    if not blobs:
        return Response(head, mimetype="application/json")
    response = Response(head + b"".join(blobs), mimetype="application/octet-stream")
    response.headers[HEADER] = str(len(head))
    return response
