"""The HTTP API's routes (the v2 protocol's are in server/v2.py). Each one parses, calls,
answers; a refusal is raised as an ApiError and answered by the app's one error handler."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from server import predict
from server.openapi import spec as openapi_spec
from server.state import state

api = Blueprint("api", __name__)


@api.post("/predict")
def predict_route():
    s = state()
    images = predict.read_images(request, s.config.max_batch)
    include_image = predict.flag(request, "include_image")
    return jsonify(predict.answer(s.predictor, images, include_image, s.metrics))


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
    return Response(state().metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)


@api.get("/models")
def models():
    s = state()
    return jsonify({**s.manifest.summary, "uncertainty": s.predictor.rule.describe()})


@api.get("/openapi.json")
def openapi():
    s = state()
    return jsonify(openapi_spec(s.config, s.manifest))
