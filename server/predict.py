"""The one request path of every route that predicts: decode -> predict -> encode.

    read_images(request, max_images)   the HTTP request -> the uploaded images' bytes
    answer(predictor, images, ...)     images -> a Prediction (one) or a Batch (several)
    answers.to_json(answer)            the answer -> JSON

/predict (raw body, multipart, batches) and the page's form post take this path; so does the
offline command, which answers each file exactly as POST /predict with the file as its body:

    python -m server.predict [--artifacts DIR] [--include-image] [--mode number] FILE...

One JSON answer per file, one per line, in order; exit status 0 when every file got a
prediction, 1 when any got an error (its line is the error /predict would answer), 2 when the
bundle cannot be used.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from werkzeug.wrappers import Request

from server import multipart
from server.answers import Answer, Batch, ItemError, NumberReading, Prediction, to_json
from server.errors import (
    ApiError,
    BatchTooLarge,
    BodyTooLarge,
    MissingImage,
    UnknownMode,
    UnsupportedMediaType,
)
from server.preprocess import ACCEPTED_FORMATS

if TYPE_CHECKING:  # imported by main(), once the command's environment is set
    from server.metrics import Metrics
    from server.predictor import Predictor

FIELD = "image"  # the multipart field that carries images


def accepted_formats() -> str:
    """The accepted formats, as users read them: 'PNG, JPEG, ... or TIFF'."""
    *names, last = ACCEPTED_FORMATS.values()
    return ", ".join(names) + " or " + last


def accepted_media_types() -> list[str]:
    """The accepted formats' media types, for a file picker's `accept`."""
    Image.init()  # loads every format plugin, so that each has registered its media type
    return [Image.MIME[f] for f in ACCEPTED_FORMATS]


def read_images(request: Request, max_images: int) -> list[bytes]:
    """The uploaded images: every multipart field `image`, or a raw image/* body."""
    ctype = request.mimetype
    if ctype == "multipart/form-data":
        # Cached, so that werkzeug can still parse what the fast reader leaves to it.
        body = request.get_data(cache=True)
        boundary = request.mimetype_params.get("boundary", "")
        images = multipart.file_parts(body, boundary, request.max_form_parts or max_images, FIELD)
        if images is None:
            images = [f.read() for f in request.files.getlist(FIELD)]
        if not images:
            others = sorted(set(request.files) | set(request.form))
            hint = f" (got {', '.join(repr(o) for o in others[:5])})" if others else ""
            raise MissingImage(
                f"No image: send the file in a multipart field named '{FIELD}'{hint}."
            )
        if len(images) > max_images:
            raise BatchTooLarge(f"{len(images)} images in one request; the limit is {max_images}.")
        return images
    if ctype.startswith("image/"):
        return [request.get_data(cache=False)]
    if not ctype:
        raise UnsupportedMediaType(
            f"No Content-Type: send multipart/form-data with a field '{FIELD}', or an image/* body."
        )
    raise UnsupportedMediaType(
        f"Content-Type {ctype} is not accepted: send multipart/form-data with a field '{FIELD}', "
        "or the image itself with an image/* Content-Type."
    )


MODES = ("digit", "number")  # one digit per image (the default), or a number's digits


def mode(request: Request) -> str:
    """The `mode` query parameter: `digit` when absent."""
    if not request.query_string:
        return MODES[0]
    value = request.args.get("mode", MODES[0])
    if value not in MODES:
        raise UnknownMode(
            f"mode={value[:40]!r} is not a mode: use mode=digit (one digit per image, the "
            "default) or mode=number (every digit of a number, left to right)."
        )
    return value


def flag(request: Request, name: str) -> bool:
    """A boolean query parameter: 1, true or yes."""
    # Parsing the query string costs a request 5 us; most have none.
    return bool(request.query_string) and request.args.get(name, "").lower() in ("1", "true", "yes")


def item(e: ApiError) -> ItemError:
    return ItemError(e.message, e.code, e.status)


def answer(
    predictor: Predictor,
    images: list[bytes],
    include_image: bool = False,
    metrics: Metrics | None = None,
    mode: str = MODES[0],
) -> Answer:
    """One image: its Prediction (its NumberReading in mode `number`), or the ApiError it
    raised. Several: a Batch, with an ItemError for each image that has no answer. Counted in
    `metrics` when given (a number's digits each as a prediction)."""
    if metrics is not None:  # received: counted before the work, which may take a while
        metrics.images.inc(len(images))
        metrics.batch.observe(len(images))
    if mode == "number":
        results: list = predictor.read_numbers(images, include_image=include_image)
    else:
        results = predictor.predict(images, include_image=include_image)
    if metrics is not None:
        # A number's digits are counted as predictions, one by one.
        metrics.record(
            [x for r in results for x in (r.digits if isinstance(r, NumberReading) else [r])]
        )
    if len(images) == 1:
        if isinstance(results[0], ApiError):
            # Popped, not indexed: raised, the error's traceback holds this frame, and a frame
            # holding `results` would make a cycle that keeps the request's bodies.
            raise results.pop()
        return results[0]
    return Batch([item(r) if isinstance(r, ApiError) else r for r in results])


def answer_file(
    predictor: Predictor, path: Path, include_image: bool, max_body: int, mode: str = MODES[0]
) -> Prediction | NumberReading | ApiError:
    """What POST /predict?mode=`mode` answers for the file as its body."""
    try:
        if path.stat().st_size > max_body:
            raise BodyTooLarge(f"The request body is over the limit of {max_body:,} bytes.")
        return answer(predictor, [path.read_bytes()], include_image, mode=mode)  # type: ignore[return-value]
    except ApiError as e:
        return e


def main(argv: list[str] | None = None) -> int:
    from server.config import ServerConfig, command_environment

    command_environment()
    from server.ensemble import DeviceError, Ensemble, SelfTestError
    from server.manifest import ManifestError
    from server.manifest import load as load_manifest
    from server.predictor import Predictor

    d = ServerConfig()
    p = argparse.ArgumentParser(
        prog="python -m server.predict",
        description="Classify image files without a server: one JSON line per file, the "
        "answer POST /predict gives for it. Exit status 0 when every file got a prediction, 1 "
        "when any got an error, 2 when the bundle cannot be used.",
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--artifacts", type=Path, default=d.artifacts, help="bundle directory")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--include-image",
        action="store_true",
        help="add the image the models saw, as /predict?include_image=1 does",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default=MODES[0],
        help="digit: one digit per file (the default); number: every digit of a number, left "
        "to right, as /predict?mode=number answers",
    )
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", module="PIL")  # as the server: odd files are answered
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        manifest = load_manifest(args.artifacts)
        ensemble = Ensemble(manifest, device=args.device)
        ensemble.self_test(manifest)
    except (ManifestError, DeviceError, SelfTestError) as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return 2
    predictor = Predictor(manifest, ensemble, d.max_pixels)
    failed = False
    out = sys.stdout.buffer
    for path in args.files:
        if path.is_file():
            result = answer_file(predictor, path, args.include_image, d.max_body, args.mode)
        else:
            result = ApiError(f"{path}: no such file.")
            result.code = "no_such_file"
        failed |= isinstance(result, ApiError)
        out.write(to_json(result.body() if isinstance(result, ApiError) else result))
        out.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
