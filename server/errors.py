"""Every way a request can fail, as types. `ApiError.body()` is the one JSON shape clients see."""

from __future__ import annotations


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
