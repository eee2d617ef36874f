"""`create_app(config)`: the digit server as a Flask app, for any WSGI server.

Start-up checks every file of the bundle against the manifest's sha256 and runs the golden
self-test; a bundle that fails either never serves.

onnxruntime's telemetry (on by default in its Linux wheels) is turned off by
ORT_DISABLE_TELEMETRY=1 in the environment before onnxruntime is imported (onnxruntime's
Privacy.md): `python -m server`, `python -m server.predict`, the container and scripts/serve.sh
set it; under another WSGI server, set it in that server's environment.
"""

from __future__ import annotations

import io
import logging
import time

from flask import Flask, Request, Response, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.routing import RequestRedirect

from server import manifest as manifest_mod
from server import memory, v2
from server.answers import to_json
from server.api import PredictFastPath, api
from server.batch_pool import BatchPool
from server.config import MAX_FORM_MEMORY, ServerConfig
from server.ensemble import Ensemble
from server.errors import ApiError, classify
from server.metrics import Metrics
from server.pages import pages
from server.predictor import Predictor
from server.state import State

log = logging.getLogger("server")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders:
    """WSGI wrapper: the security headers, and `Cache-Control: no-store` unless a response sets
    its own, added to the plain header list of every response: a response with its headers
    built in 4.5 us instead of 12.3 through werkzeug's Headers (measured in process)."""

    def __init__(self, app):
        self.app = app
        self.headers = list(SECURITY_HEADERS.items())

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            if not any(name.lower() == "cache-control" for name, _ in headers):
                headers.append(("Cache-Control", "no-store"))
            headers.extend(self.headers)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


class FastJSON(DefaultJSONProvider):
    """Every JSON answer written by server.answers.to_json (orjson)."""

    def dumps(self, obj, **kwargs) -> str:
        return to_json(obj, newline=False, default=self.default).decode()

    def response(self, *args, **kwargs) -> Response:
        # jsonify's arguments: one value as it is, several as a list, keywords as an object.
        if args and kwargs:
            raise TypeError("jsonify takes positional or keyword arguments, not both")
        obj = kwargs or (args[0] if len(args) == 1 else list(args))
        body = to_json(obj, default=self.default)
        return current_app.response_class(body, mimetype="application/json")


class InMemoryRequest(Request):
    """Multipart files stay in memory: uploads are never written to disk (the body is already
    capped by the maximum content length, so memory is bounded). `_get_file_stream` is
    werkzeug's documented hook for where uploads go."""

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        return io.BytesIO()


def error_response(err: ApiError) -> Response:
    response = Response(to_json(err.body()), err.status, mimetype="application/json")
    response.headers.extend(err.headers)
    return response


def error_handler(config: ServerConfig):
    """The app's one error handler: any exception a request raised (ours, werkzeug's routing
    and body limits, a bug) classified into an ApiError and answered as JSON."""

    def handle(e: Exception, req: Request) -> Response:
        return error_response(classify(e, req, config.max_body, config.max_batch))

    return handle


def route_of(app: Flask) -> str:
    """The route a request is counted under: its rule, also when the rule refused its method
    (so that a 405 on /predict counts as /predict); "unmatched" for an unknown path."""
    if request.url_rule is not None:
        return request.url_rule.rule
    e = request.routing_exception
    if isinstance(e, WerkzeugMethodNotAllowed) and e.valid_methods:
        adapter = app.url_map.bind_to_environ(request.environ)
        try:
            rule, _ = adapter.match(method=e.valid_methods[0], return_rule=True)
            return rule.rule
        except (WerkzeugMethodNotAllowed, RequestRedirect):
            pass
    return "unmatched"


def create_app(config: ServerConfig | None = None) -> Flask:
    """Loads and checks the bundle, then returns the app. Raises ManifestError, DeviceError or
    SelfTestError when the bundle or the device cannot be used."""
    config = config or ServerConfig()
    # Every worker builds its app: from here on, a large image's buffers leave the process
    # when its request ends (server/memory.py).
    memory.return_large_buffers()
    t0 = time.perf_counter()
    manifest = manifest_mod.load(config.artifacts)
    ensemble = Ensemble(manifest, device=config.device, threads=config.threads)
    self_test = ensemble.self_test(manifest)
    log.info(
        "loaded %s (%s) on %s; onnxruntime providers active: %s; self-test passed on %d images "
        "(max diff %.1e) in %.0f ms",
        manifest.ensemble_file.name,
        ", ".join(manifest.model_names),
        ensemble.device,
        ", ".join(ensemble.providers),
        self_test["images"],
        self_test["max_abs_diff"],
        1000 * (time.perf_counter() - t0),
    )

    app = Flask(__name__)
    # werkzeug would answer a path with '//' by a redirect to an absolute URL built from the
    # client's Host header; such a path is a 404 like any other unknown one.
    app.url_map.merge_slashes = False
    app.request_class = InMemoryRequest
    app.config.update(
        MAX_CONTENT_LENGTH=config.max_body,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_MEMORY,
        MAX_FORM_PARTS=config.max_batch + 16,  # room for a few text fields beside the images
    )
    app.json = FastJSON(app)
    state = State(
        config=config,
        manifest=manifest,
        ensemble=ensemble,
        predictor=Predictor(
            manifest,
            ensemble,
            config.max_pixels,
            helpers=BatchPool(config.batch_helpers, manifest.input, config.max_pixels)
            if config.batch_helpers
            else None,
        ),
        metrics=Metrics(manifest.model_names, ensemble.device, manifest.classes),
        self_test=self_test,
        # The Open Inference Protocol serves each model, the ensemble graph, the vote and the
        # Triton repository's pipeline by name.
        v2_models=v2.models(
            {n: ensemble.open(p) for n, p in manifest.model_files.items()},
            ensemble.session,
            ensemble.open(manifest.vote_file),
        ),
        ready=True,
    )
    app.extensions["digits"] = state
    handle_error = error_handler(config)

    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.register_blueprint(v2.v2)

    @app.before_request
    def start_timer():
        g.t0 = time.perf_counter()

    @app.after_request
    def finish(response):
        elapsed = time.perf_counter() - g.get("t0", time.perf_counter())
        state.finished(route_of(app), request.path, request.method, response.status_code, elapsed)
        return response

    @app.errorhandler(Exception)
    def any_error(e: Exception):
        return handle_error(e, request)

    # POST /predict in front of Flask (server/api.py); every answer gets the security headers.
    app.wsgi_app = SecurityHeaders(PredictFastPath(app, app.wsgi_app, handle_error))
    return app
