"""HTTP routes. Each one parses, calls, answers; the work happens in predictor.py."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server import multipart
from server.errors import ApiError, BatchTooLarge, MissingImage, UnsupportedMediaType
from server.openapi import spec as openapi_spec

api = Blueprint("api", __name__)


def state():
    """The app's State (server/__init__.py), for every blueprint."""
    return current_app.extensions["digits"]


def read_images() -> list[bytes]:
    """The uploaded images: every multipart field `image`, or a raw image/* body."""
    limit = state().config.max_batch
    ctype = request.mimetype
    if ctype == "multipart/form-data":
        # Cached, so that werkzeug can still parse what the fast reader leaves to it.
        body = request.get_data(cache=True)
        boundary = request.mimetype_params.get("boundary", "")
        images = multipart.image_parts(body, boundary, current_app.config["MAX_FORM_PARTS"])
        if images is None:
            images = [f.read() for f in request.files.getlist("image")]
        if not images:
            others = sorted(set(request.files) | set(request.form))
            hint = f" (got {', '.join(repr(o) for o in others[:5])})" if others else ""
            raise MissingImage(f"No image: send the file in a multipart field named 'image'{hint}.")
        if len(images) > limit:
            raise BatchTooLarge(f"{len(images)} images in one request; the limit is {limit}.")
        return images
    if ctype.startswith("image/"):
        return [request.get_data(cache=False)]
    if not ctype:
        raise UnsupportedMediaType(
            "No Content-Type: send multipart/form-data with a field 'image', or an image/* body."
        )
    raise UnsupportedMediaType(
        f"Content-Type {ctype} is not accepted: send multipart/form-data with a field 'image', "
        "or the image itself with an image/* Content-Type."
    )


def _flag(name: str) -> bool:
    # Parsing the query string costs a /predict request 5 us; most have none.
    return bool(request.query_string) and request.args.get(name, "").lower() in ("1", "true", "yes")


@api.post("/predict")
def predict():
    s = state()
    images = read_images()
    s.metrics.images.inc(len(images))
    s.metrics.batch.observe(len(images))
    answers = s.predictor.predict(images, include_image=_flag("include_image"))
    s.metrics.record(answers)
    if len(images) == 1:
        if isinstance(answers[0], ApiError):
            raise answers[0]
        return jsonify(answers[0])
    return jsonify(
        {
            "results": [
                {**a.body(), "status": a.status} if isinstance(a, ApiError) else a for a in answers
            ]
        }
    )


@api.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz():
    s = state()
    body = {
        "ready": s.ready,
        "device": s.ensemble.device,
        "providers": s.ensemble.providers,
        "models": s.manifest.model_names,
        "self_test": s.self_test,
    }
    return jsonify(body), 200 if s.ready else 503


@api.get("/metrics")
def metrics():
    return Response(generate_latest(state().metrics.registry), mimetype=CONTENT_TYPE_LATEST)


@api.get("/models")
def models():
    s = state()
    return jsonify({**s.manifest.summary, "uncertainty": s.predictor.rule.describe()})


@api.get("/openapi.json")
def openapi():
    s = state()
    return jsonify(openapi_spec(s.config.max_batch, s.config.max_body, s.config.max_pixels))
