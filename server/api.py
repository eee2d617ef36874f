"""The HTTP API's routes (the v2 protocol's are in server/v2.py). Each one parses, calls,
answers; a refusal is raised as an ApiError and answered by the app's one error handler.

POST /predict, the hot path, is also served by `PredictFastPath` in front of Flask: the same
function (`predict_response`), request class, limits, error handler and metrics, without
Flask's per-request machinery (contexts, URL matching, hooks). `python -m bench.request_path`
(CPU time in process, 28x28 PNG, five interleaved rounds): 758 us per request here against
886 us through Flask's route; with the models and preprocessing stubbed out, 39 against 104 us.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Request, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from server import predict
from server.answers import to_json
from server.openapi import spec as openapi_spec
from server.state import State, state

api = Blueprint("api", __name__)
PREDICT = "/predict"


def predict_response(s: State, req: Request) -> Response:
    """POST /predict: decode -> predict -> encode."""
    mode = predict.mode(req)
    images = predict.read_images(req, s.config.max_batch)
    include_image = predict.flag(req, "include_image")
    answer = predict.answer(s.predictor, images, include_image, s.metrics, mode)
    return Response(to_json(answer), mimetype="application/json")


@api.post(PREDICT)
def predict_route():
    return predict_response(state(), request)


class PredictFastPath:
    """WSGI: POST /predict through `predict_response` directly, everything else (OPTIONS and
    other methods on /predict included) to the Flask app."""

    def __init__(self, app: Flask, wsgi, error_response):
        self.app = app
        self.wsgi = wsgi
        self.error_response = error_response  # the app's one error handler
        self.state: State = app.extensions["digits"]
        config = app.config
        self.limits = (
            config["MAX_CONTENT_LENGTH"],
            config["MAX_FORM_MEMORY_SIZE"],
            config["MAX_FORM_PARTS"],
        )

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != PREDICT or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi(environ, start_response)
        t0 = time.perf_counter()
        req = self.app.request_class(environ)
        # Outside an app context Flask's request reads no config: the app's limits, set here.
        req.max_content_length, req.max_form_memory_size, req.max_form_parts = self.limits
        try:
            response = predict_response(self.state, req)
        except Exception as e:
            response = self.error_response(e, req)
        self.state.finished(
            PREDICT, PREDICT, "POST", response.status_code, time.perf_counter() - t0
        )
        return response(environ, start_response)


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
    return jsonify(openapi_spec(s.config, s.manifest, list(s.v2_models)))
