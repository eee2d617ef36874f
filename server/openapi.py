"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json."""

from __future__ import annotations

JSON = "application/json"

ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "What was wrong, in a sentence"},
        "code": {"type": "string", "description": "A short stable identifier"},
    },
}

ITEM_ERROR = {
    "type": "object",
    "required": ["error", "code", "status"],
    "properties": {**ERROR["properties"], "status": {"type": "integer"}},
}

MODEL_OPINION = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "label": {"type": "integer"},
        "confidence": {"type": "number"},
        "probabilities": {"type": "array", "items": {"type": "number"}},
    },
}

PREDICTION = {
    "type": "object",
    "required": ["label", "confidence", "votes", "agreement", "tie_broken", "uncertain", "models"],
    "properties": {
        "label": {"type": "integer", "minimum": 0, "maximum": 9},
        "confidence": {"type": "number", "description": "Mean probability the models give label"},
        "votes": {"type": "array", "items": {"type": "integer"}, "minItems": 10, "maxItems": 10},
        "agreement": {"type": "integer", "description": "Votes for label"},
        "tie_broken": {
            "type": "boolean",
            "description": "All models disagreed; the highest summed probability decided",
        },
        "uncertain": {"type": "boolean", "description": "Probably not a digit, or a doubtful one"},
        "uncertain_reasons": {"type": "array", "items": {"type": "string"}},
        "models": {"type": "array", "items": {"$ref": "#/components/schemas/ModelOpinion"}},
        "preprocessing": {"type": "object"},
        "image": {"type": "string", "description": "data:image/png;base64 of the 28x28 input"},
    },
}

BATCH = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Prediction"},
                    {"$ref": "#/components/schemas/ItemError"},
                ]
            },
        }
    },
}


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _get(summary: str, description: str = "OK", media: str = JSON) -> dict:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": description, "content": {media: {"schema": {}}}}},
        }
    }


def v2_paths() -> dict:
    """The Open Inference Protocol (KServe v2) routes; their schemas are the protocol's own."""
    doc = "https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/"
    status = {"responses": {"200": {"description": "yes"}, "503": {"description": "no"}}}
    model = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "lenet5-... (one model) or ensemble (the three and the vote)",
    }
    version = {"name": "version", "in": "path", "required": True, "schema": {"const": "1"}}
    infer = {
        "post": {
            "summary": f"Inference on FP32 [N,1,28,28] preprocessed digits ({doc})",
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": {"type": "object"}},
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"},
                        "description": "Triton binary tensor extension",
                    },
                },
            },
            "responses": {
                "200": {"description": "outputs"},
                "400": _error("Malformed request: the reason is in `error`"),
                "404": _error("Unknown model or version"),
            },
        }
    }
    paths = {
        "/v2": _get("Server metadata"),
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
                "responses": {"200": {"description": "metadata"}},
            }
        }
        paths[base + "/ready"] = {"get": {"summary": "Model ready", "parameters": params, **status}}
        paths[base + "/infer"] = {"post": {**infer["post"], "parameters": params}}
    return paths


def spec(max_batch: int, max_body: int, max_pixels: int) -> dict:
    upload = {
        "required": True,
        "description": (
            f"PNG, JPEG, GIF, BMP, WebP or TIFF; at most {max_body:,} bytes in all and "
            f"{max_pixels:,} pixels per image. Either multipart with one or more fields `image` "
            f"(up to {max_batch}), or the image itself as the body with its image/* Content-Type."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "array",
                            "maxItems": max_batch,
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    predict = {
        "summary": "Recognise the digit in one image, or in a batch of images",
        "parameters": [
            {
                "name": "include_image",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
                "description": "Add the 28x28 image the models saw, as a PNG data URL.",
            }
        ],
        "requestBody": upload,
        "responses": {
            "200": {
                "description": (
                    "One image: its prediction. Several: `results`, one entry per image in "
                    "order, each a prediction or an error with its HTTP status."
                ),
                "content": {
                    JSON: {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/Prediction"},
                                {"$ref": "#/components/schemas/Batch"},
                            ]
                        }
                    }
                },
            },
            "400": _error("No field `image`, or an image that cannot be decoded"),
            "413": _error("Body, pixel count or batch over its limit"),
            "415": _error("Not an accepted image format or Content-Type"),
            "422": _error("No ink found: the image is blank"),
            "503": _error("The models could not run; retry later"),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Handwritten digit recogniser",
            "version": "1",
            "description": (
                "Three LeNet-5 models on onnxruntime and their vote. Upload a photo, scan, "
                "screenshot or drawing of one digit; the server makes it look like an MNIST "
                "digit and answers with the voted digit and each model's opinion."
            ),
        },
        "paths": {
            "/predict": {"post": predict},
            "/healthz": _get("The process is alive"),
            "/readyz": {
                "get": {
                    "summary": "Models loaded, self-test passed, providers active",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
            "/metrics": _get("Prometheus metrics", "Prometheus text format", "text/plain"),
            "/models": _get("The models, their accuracy, the vote and uncertainty rules"),
            "/openapi.json": _get("This document"),
            **v2_paths(),
        },
        "components": {
            "schemas": {
                "Error": ERROR,
                "ItemError": ITEM_ERROR,
                "ModelOpinion": MODEL_OPINION,
                "Prediction": PREDICTION,
                "Batch": BATCH,
            }
        },
    }
