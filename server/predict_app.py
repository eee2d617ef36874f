"""/predict as a plain WSGI app in front of the Flask app, which serves every other route.

/predict is the hot path, and Flask's machinery around a request (application and request
contexts, URL routing, hooks, a Response object and its headers) is most of its HTTP cost:
in process, the HTTP side of a /predict request with the models stubbed out took
65 us through Flask and 15 us here (a hello-world Flask app: 49 us). Under `wrk` at c=8 on
the 28x28 PNG, the server rose from 1,859 to 2,192 req/s (0.99 -> 0.83 ms of CPU per request;
three 5 s runs each, interleaved). The request is still parsed by werkzeug, and the answers,
errors and metrics are the ones the Flask route gave: same predictor, same ApiError bodies,
same counters.
"""

from __future__ import annotations

import io
import logging
import time
from http import HTTPStatus

import orjson
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from server import multipart
from server.config import MAX_FORM_MEMORY
from server.errors import (
    ApiError,
    BatchTooLarge,
    InternalError,
    MethodNotAllowed,
    MissingImage,
    UnsupportedMediaType,
    from_http_exception,
)

log = logging.getLogger("server")
ROUTE = "/predict"
ALLOW = ("Allow", "OPTIONS, POST")


def max_form_parts(max_batch: int) -> int:
    return max_batch + 16  # room for a few text fields beside the images


class InMemoryFiles:
    """Multipart files stay in memory: uploads are never written to disk (the body is already
    capped by the maximum content length, so memory is bounded)."""

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        return io.BytesIO()


class UploadRequest(InMemoryFiles, Request):
    """werkzeug's Request with the limits the Flask app sets in its config."""

    def __init__(self, environ: dict, max_body: int, max_parts: int):
        super().__init__(environ)
        self.max_content_length = max_body
        self.max_form_memory_size = MAX_FORM_MEMORY
        self.max_form_parts = max_parts


def read_images(request: Request, max_batch: int, max_parts: int) -> list[bytes]:
    """The uploaded images: every multipart field `image`, or a raw image/* body."""
    ctype = request.mimetype
    if ctype == "multipart/form-data":
        # Cached, so that werkzeug can still parse what the fast reader leaves to it.
        body = request.get_data(cache=True)
        boundary = request.mimetype_params.get("boundary", "")
        images = multipart.image_parts(body, boundary, max_parts)
        if images is None:
            images = [f.read() for f in request.files.getlist("image")]
        if not images:
            others = sorted(set(request.files) | set(request.form))
            hint = f" (got {', '.join(repr(o) for o in others[:5])})" if others else ""
            raise MissingImage(f"No image: send the file in a multipart field named 'image'{hint}.")
        if len(images) > max_batch:
            raise BatchTooLarge(f"{len(images)} images in one request; the limit is {max_batch}.")
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


def _flag(request: Request, name: str) -> bool:
    # Parsing the query string costs a request 5 us; most have none.
    return bool(request.query_string) and request.args.get(name, "").lower() in ("1", "true", "yes")


class PredictApp:
    """WSGI: POST /predict here, everything else to `app` (the Flask app)."""

    def __init__(self, state, app):
        self.state = state  # server.State
        self.app = app
        self.max_parts = max_form_parts(state.config.max_batch)

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != ROUTE:
            return self.app(environ, start_response)
        t0 = time.perf_counter()
        request = UploadRequest(environ, self.state.config.max_body, self.max_parts)
        status, headers, data = self.answer(request)
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        self.state.finished(ROUTE, ROUTE, request.method, status, time.perf_counter() - t0)
        return [data]

    def answer(self, request: UploadRequest) -> tuple[int, list, bytes]:
        """Status, headers and body for any method."""
        if request.method == "OPTIONS":
            return 200, [ALLOW, ("Content-Length", "0")], b""
        headers = [("Content-Type", "application/json")]
        config = self.state.config
        try:
            status, body = 200, self.predict(request)
        except ApiError as e:
            status, body = e.status, e.body()
            if isinstance(e, MethodNotAllowed):
                headers.append(ALLOW)
        except HTTPException as e:  # werkzeug's limits while parsing a multipart body
            err = from_http_exception(e, request, config.max_body, config.max_batch)
            status, body = err.status, err.body()
        except Exception:
            # A bug, not the client's fault: log it with its traceback, answer without it.
            log.exception("unhandled error on %s %s", request.method, ROUTE)
            status, body = InternalError.status, InternalError().body()
        data = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
        headers.append(("Content-Length", str(len(data))))
        return status, headers, data

    def predict(self, request: UploadRequest) -> dict:
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.method} is not allowed on {ROUTE}.")
        s = self.state
        images = read_images(request, s.config.max_batch, self.max_parts)
        s.metrics.images.inc(len(images))
        s.metrics.batch.observe(len(images))
        answers = s.predictor.predict(images, include_image=_flag(request, "include_image"))
        s.metrics.record(answers)
        if len(images) == 1:
            if isinstance(answers[0], ApiError):
                # Popped, not indexed: raised, the error's traceback holds this frame, and a
                # frame holding `answers` would make a cycle that keeps the request's bodies.
                raise answers.pop()
            return answers[0]
        return {
            "results": [
                {**a.body(), "status": a.status} if isinstance(a, ApiError) else a for a in answers
            ]
        }
