"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json.

Generated, not written beside the code: the answers' schemas from their dataclasses
(server/answers.py), each route's error responses from the error types (server/errors.py),
the limits from the server's config and the input's size and classes from the manifest.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections import defaultdict

from server import answers, errors, predict, segment
from server.config import ServerConfig
from server.manifest import Manifest

JSON = "application/json"
SCALARS = {int: "integer", float: "number", bool: "boolean", str: "string"}
ANSWER_TYPES = (
    answers.Prediction,
    answers.PredictionWithImage,
    answers.ModelOpinion,
    answers.Preprocessing,
    answers.Digit,
    answers.DigitWithImage,
    answers.DigitShape,
    answers.NumberPreprocessing,
    answers.NumberReading,
    answers.ItemError,
    answers.Batch,
)


def ref(cls: type) -> dict:
    return {"$ref": f"#/components/schemas/{cls.__name__}"}


def _type_schema(t, classes: int) -> dict:
    if t in SCALARS:
        return {"type": SCALARS[t]}
    if dataclasses.is_dataclass(t):
        return ref(t)
    args = typing.get_args(t)
    if typing.get_origin(t) is list:
        return {"type": "array", "items": _type_schema(args[0], classes)}
    if isinstance(t, types.UnionType):
        return {"oneOf": [_type_schema(a, classes) for a in args]}
    raise TypeError(f"no JSON schema for {t!r}")


def _schema(cls: type, classes: int) -> dict:
    """A dataclass's fields as a JSON object: every field required, no other."""
    hints = typing.get_type_hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        s = _type_schema(hints[f.name], classes)
        if meta.pop("per_class", False):
            s.update(minItems=classes, maxItems=classes)
        if meta.pop("class_index", False):
            s.update(minimum=0, maximum=classes - 1)
        props[f.name] = {**s, **meta}
    return {
        "type": "object",
        "description": (cls.__doc__ or "").strip(),
        "required": list(props),
        "properties": props,
        "additionalProperties": False,
    }


def error_responses(*kinds: type[errors.ApiError]) -> dict:
    """One response per status, listing each error type's code and when it is raised."""
    by_status = defaultdict(list)
    for k in kinds:
        by_status[k.status].append(k)
    out = {}
    for status, group in sorted(by_status.items()):
        lines = [f"`{k.code}`: {(k.__doc__ or '').strip().splitlines()[0]}" for k in group]
        schema = {
            "allOf": [ref(errors.ApiError)],
            "properties": {"code": {"enum": [k.code for k in group]}},
        }
        out[str(status)] = {
            "description": "\n\n".join(lines),
            "content": {JSON: {"schema": schema}},
        }
    return out


def _ok(summary: str, description: str = "OK", media: str = JSON) -> dict:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": description, "content": {media: {"schema": {}}}}},
        }
    }


def v2_paths(manifest: Manifest, names: list[str]) -> dict:
    """The Open Inference Protocol (KServe v2) routes; their schemas are the protocol's own."""
    doc = "https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/"
    status = {"responses": {"200": {"description": "yes"}, "503": {"description": "no"}}}
    model = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": names},
        "description": "One model, or `ensemble` (the models and their vote in one graph)",
    }
    version = {"name": "version", "in": "path", "required": True, "schema": {"const": "1"}}
    spec = manifest.input
    infer = {
        "summary": (
            f"Inference on FP32 [N, 1, {spec.height}, {spec.width}] preprocessed digits ({doc})"
        ),
        "requestBody": {
            "required": True,
            "description": "JSON, or JSON followed by tensors (Triton's binary tensor extension)",
            "content": {
                JSON: {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": {"description": "outputs"},
            **error_responses(errors.BadRequest, errors.NotFound, errors.InferenceFailed),
        },
    }
    paths = {
        "/v2": _ok("Server metadata"),
        "/v2/health/live": {"get": {"summary": "Live", **status}},
        "/v2/health/ready": {"get": {"summary": "Ready", **status}},
    }
    for base, params in (
        ("/v2/models/{name}", [model]),
        ("/v2/models/{name}/versions/{version}", [model, version]),
    ):
        paths[base] = {
            "get": {
                "summary": "Model metadata",
                "parameters": params,
                "responses": {
                    "200": {"description": "metadata"},
                    **error_responses(errors.NotFound),
                },
            }
        }
        paths[base + "/ready"] = {"get": {"summary": "Model ready", "parameters": params, **status}}
        paths[base + "/infer"] = {"post": {**infer, "parameters": params}}
    return paths


def image_errors() -> list[type[errors.ApiError]]:
    return [k for k in errors.kinds(errors.ImageError) if k is not errors.ImageError]


def predict_errors() -> list[type[errors.ApiError]]:
    """What POST /predict can refuse with: each image's errors, and the request's."""
    return [
        *image_errors(),
        errors.MissingImage,
        errors.UnknownMode,
        errors.BodyTooLarge,
        errors.BatchTooLarge,
        errors.UnsupportedMediaType,
        errors.InferenceFailed,
        errors.InternalError,
    ]


def spec(config: ServerConfig, manifest: Manifest, v2_models: list[str]) -> dict:
    classes = len(manifest.classes)
    size = f"{manifest.input.width}x{manifest.input.height}"
    upload = {
        "required": True,
        "description": (
            f"{predict.accepted_formats()}; at most {config.max_body:,} bytes in all and "
            f"{config.max_pixels:,} pixels per image. Either multipart with one or more fields "
            f"`{predict.FIELD}` (up to {config.max_batch}), or the image itself as the body "
            "with its image/* Content-Type."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [predict.FIELD],
                    "properties": {
                        predict.FIELD: {
                            "type": "array",
                            "maxItems": config.max_batch,
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                }
            },
            # Any image/* type: the format is read from the bytes, not from the header.
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    predict_op = {
        "summary": "Recognise the digit (or the number) in one image, or in a batch of images",
        "parameters": [
            {
                "name": "mode",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(predict.MODES), "default": "digit"},
                "description": (
                    "`digit`: each image is one digit. `number`: each image is a number of 1 to "
                    f"{segment.MAX_DIGITS} digits, answered as a NumberReading: the digits left "
                    "to right, each read by the models and their vote as a single digit, with "
                    "its box in the upload's pixels."
                ),
            },
            {
                "name": "include_image",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
                "description": f"Add the {size} image the models saw, as a PNG data URL.",
            },
        ],
        "requestBody": upload,
        "responses": {
            "200": {
                "description": (
                    "One image: its prediction (with `mode=number`, its number). Several: "
                    "`results`, one entry per image in order, each a prediction (a number) or "
                    "an error with its HTTP status."
                ),
                "content": {
                    JSON: {
                        "schema": {
                            "oneOf": [
                                ref(answers.Prediction),
                                ref(answers.PredictionWithImage),
                                ref(answers.NumberReading),
                                ref(answers.Batch),
                            ]
                        }
                    }
                },
            },
            **error_responses(*predict_errors()),
        },
    }
    schemas = {cls.__name__: _schema(cls, classes) for cls in ANSWER_TYPES}
    schemas["NumberReading"]["properties"]["digits"]["maxItems"] = segment.MAX_DIGITS
    # An entry of a batch is refused for one of the image errors only.
    item = schemas["ItemError"]["properties"]
    item["code"]["enum"] = sorted({k.code for k in image_errors()})
    item["status"]["enum"] = sorted({k.status for k in image_errors()})
    schemas["ApiError"] = {
        "type": "object",
        "description": "Every refusal: what was wrong and its stable code",
        "required": ["error", "code"],
        "properties": {
            "error": {"type": "string", "description": "What was wrong, in a sentence"},
            "code": {
                "type": "string",
                "description": "A short stable identifier",
                "enum": sorted({k.code for k in errors.kinds()}),
            },
        },
        "additionalProperties": False,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Handwritten digit recogniser",
            "version": "1",
            "description": (
                f"{len(manifest.model_names)} LeNet-5 models on onnxruntime and their vote. "
                "Upload a photo, scan, screenshot or drawing of one digit; the server makes it "
                "look like an MNIST digit and answers with the voted digit and each model's "
                "opinion."
            ),
        },
        "paths": {
            "/predict": {"post": predict_op},
            "/healthz": _ok("The process is alive"),
            "/readyz": {
                "get": {
                    "summary": "Models loaded, self-test passed, providers active",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
            "/metrics": _ok("Prometheus metrics", "Prometheus text format", "text/plain"),
            "/models": _ok("The models, their accuracy, the vote and uncertainty rules"),
            "/openapi.json": _ok("This document"),
            "/docs": _ok("This document as a web page", "HTML", "text/html"),
            **v2_paths(manifest, v2_models),
        },
        "components": {"schemas": schemas},
    }
