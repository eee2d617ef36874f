"""The API's Flask routes besides /predict (server/predict_app.py serves that one, in front of
Flask). Each one parses, calls, answers."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from server.openapi import spec as openapi_spec

api = Blueprint("api", __name__)


def state():
    """The app's State (server/__init__.py), for every blueprint."""
    return current_app.extensions["digits"]


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
    return jsonify(openapi_spec(s.config.max_batch, s.config.max_body, s.config.max_pixels))
