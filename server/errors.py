"""Every way a request can fail, as types, and the one place that maps any exception to one.

Each error type carries its HTTP status and a stable `code`; its docstring says when it is
raised (the OpenAPI document is built from them). `ApiError.body()` is the one JSON shape
clients see, `classify` the one function that turns whatever a request raised into an ApiError.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.wrappers import Request

from server.config import MAX_FORM_MEMORY

log = logging.getLogger("server")


class ApiError(Exception):
    """The request cannot be answered as asked; `error` says why."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or []

    def body(self) -> dict:
        return {"error": self.message, "code": self.code}


class ImageError(ApiError):
    """One image of a request cannot be read as a digit. In a batch, only that image's entry
    is this error (with its status); the others are answered."""


class MissingImage(ApiError):
    """No image in the request: no multipart field `image`, or an empty one on the page."""

    status, code = 400, "missing_image"


class UndecodableImage(ImageError):
    """The image is empty, truncated or corrupt."""

    status, code = 400, "undecodable_image"


class BadRequest(ApiError):
    """The request is malformed."""

    status, code = 400, "bad_request"


class NotFound(ApiError):
    """No such endpoint, model or version."""

    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    """The endpoint does not take this method; `Allow` lists those it takes."""

    status, code = 405, "method_not_allowed"


class BodyTooLarge(ApiError):
    """The request body is over the server's limit (refused before it is read)."""

    status, code = 413, "body_too_large"


class TooManyPixels(ImageError):
    """The image has more pixels than the limit (read from its header, before decoding)."""

    status, code = 413, "too_many_pixels"


class DecodeTooLarge(ImageError):
    """Decoding the image would take more memory than the limit (read from its header)."""

    status, code = 413, "decode_too_large"


class DecodeTooComplex(ImageError):
    """The image's structure (scans, chunks, blocks, strips) would take too long to decode."""

    status, code = 422, "decode_too_complex"


class BatchTooLarge(ApiError):
    """More images (or multipart parts) in one request than the limit."""

    status, code = 413, "batch_too_large"


class UnsupportedFormat(ImageError):
    """The file is not an image in an accepted format."""

    status, code = 415, "unsupported_format"


class UnsupportedMediaType(ApiError):
    """The Content-Type is neither multipart/form-data nor image/*."""

    status, code = 415, "unsupported_media_type"


class NoInk(ImageError):
    """No digit found: the image is blank, or nothing in it stands out as a mark."""

    status, code = 422, "no_ink"


class TooManyDigits(ImageError):
    """With `mode=number`: more digits (or separate marks) in the image than a number may have."""

    status, code = 422, "too_many_digits"


class UnknownMode(ApiError):
    """The `mode` query parameter names no mode: `digit` (the default) or `number`."""

    status, code = 400, "unknown_mode"


class InferenceFailed(ApiError):
    """The models could not run; the request was fine: retry later. Logged with its cause."""

    status, code = 503, "inference_failed"


class InternalError(ApiError):
    """A bug, not the client's fault: logged with its traceback, answered without it."""

    status, code = 500, "internal"

    def __init__(self, message: str = "Internal error; it has been logged."):
        super().__init__(message)


def kinds(base: type[ApiError] = ApiError) -> Iterator[type[ApiError]]:
    """`base` and every error type below it, each once, parents first."""
    yield base
    for sub in base.__subclasses__():
        yield from kinds(sub)


def from_http_exception(
    e: HTTPException, request: Request, max_body: int, max_batch: int
) -> ApiError:
    """werkzeug's errors (routing, body and multipart limits) as ours."""
    too_large = isinstance(e, RequestEntityTooLarge)
    if too_large and (request.content_length or 0) <= max_body:
        # werkzeug's multipart caps (max form parts, max form memory) raise the same error as
        # the body-size cap; a body within the size limit hit one of those.
        return BatchTooLarge(
            f"Too many parts in the multipart body: at most {max_batch} images per request "
            f"(and no text field over {MAX_FORM_MEMORY // 2**20} MiB)."
        )
    if too_large:
        return BodyTooLarge(f"The request body is over the limit of {max_body:,} bytes.")
    if e.code == 404:
        return NotFound(f"No such endpoint: {request.path}")
    if isinstance(e, WerkzeugMethodNotAllowed):
        allow = [("Allow", ", ".join(sorted(e.valid_methods or ())))]
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}.", allow)
    err = ApiError(e.description or e.name)
    err.status, err.code = e.code or 400, e.name.lower().replace(" ", "_")
    return err


def classify(e: BaseException, request: Request, max_body: int, max_batch: int) -> ApiError:
    """Whatever a request raised, as the ApiError its client is answered with."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, HTTPException):
        return from_http_exception(e, request, max_body, max_batch)
    # A bug, not the client's fault: log it with its traceback, answer without it.
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=e)
    return InternalError()


def protocol_error(status: int, reason: str, detail: str) -> ApiError:
    """An error the HTTP server answers before the app sees the request (malformed HTTP, a
    body over the limit). An unsupported Transfer-Encoding is 501 in RFC 9112's suggestion,
    but the request is the client's to fix, and nothing a client sends gets a 5xx from us."""
    if status == 501:
        status, reason = 400, "Bad Request"
    err = ApiError(f"{reason}: {detail}")
    err.status, err.code = status, reason.lower().replace(" ", "_")
    return err
