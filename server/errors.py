"""Every way a request can fail, as types. `ApiError.body()` is the one JSON shape clients see."""

from __future__ import annotations

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request

from server.config import MAX_FORM_MEMORY


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def body(self) -> dict:
        return {"error": self.message, "code": self.code}


class MissingImage(ApiError):
    status, code = 400, "missing_image"


class UndecodableImage(ApiError):
    status, code = 400, "undecodable_image"


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class NotFound(ApiError):
    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"


class BodyTooLarge(ApiError):
    status, code = 413, "body_too_large"


class TooManyPixels(ApiError):
    status, code = 413, "too_many_pixels"


class DecodeTooLarge(ApiError):
    """Decoding the image would take more memory than the limit (read from its header)."""

    status, code = 413, "decode_too_large"


class DecodeTooComplex(ApiError):
    """The image's structure (scans, chunks, blocks, strips) would take too long to decode."""

    status, code = 422, "decode_too_complex"


class BatchTooLarge(ApiError):
    status, code = 413, "batch_too_large"


class UnsupportedFormat(ApiError):
    status, code = 415, "unsupported_format"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class NoInk(ApiError):
    status, code = 422, "no_ink"


class InferenceFailed(ApiError):
    """The models could not run; the request was fine. Logged with its cause."""

    status, code = 503, "inference_failed"


class InternalError(ApiError):
    """A bug, not the client's fault: logged with its traceback, answered without it."""

    status, code = 500, "internal"

    def __init__(self, message: str = "Internal error; it has been logged."):
        super().__init__(message)


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
    if e.code == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
    err = ApiError(e.description or e.name)
    err.status, err.code = e.code or 400, e.name.lower().replace(" ", "_")
    return err
