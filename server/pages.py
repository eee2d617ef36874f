"""The web page at /: upload or draw a digit. Without JavaScript the form posts back to / and
the result is rendered here; with it, the page's script posts the same form to /?fragment=1
and swaps in the result. Both take the request path of /predict (server/predict.py).

/docs is the API document (server/openapi.py) as a web page, rendered here from the same
dictionary /openapi.json serves."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from server import api_page, predict, preview
from server.answers import NumberReading, Prediction
from server.errors import ApiError, MissingImage, UnknownMode
from server.openapi import spec as openapi_spec
from server.state import state

pages = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


# The page reads "a number" unless asked for one digit: a single digit drawn or uploaded is a
# number of one digit, shown with everything the one-digit reading shows. A form post without
# a mode (a script posting the form as it did before the switch) reads one digit, as /predict
# does without one.
PAGE_MODES = {"number": "a number (one digit or more)", "digit": "one digit"}
DEFAULT_MODE = "number"
# The uncertain reasons (server/predictor.py) in a sentence a user reads beside a digit.
REASONS = {
    "not_a_digit": "does not look like a digit",
    "models_disagree": "the models disagree",
    "not_one_digit": "may be two digits touching, or part of one",
    "low_confidence": "the models are not sure",
    "filled_shape": "a filled shape, not a stroke",
    "too_much_ink": "too much ink for a digit",
}


def _render(
    result: Prediction | NumberReading | None = None,
    error: ApiError | None = None,
    upload: preview.Preview | None = None,
    mode: str = DEFAULT_MODE,
):
    s = state()
    # The page's script posts here too and swaps in just the result: one renderer for both.
    template = "_result.html" if request.args.get("fragment") else "index.html"
    return render_template(
        template,
        result=result,
        number=result if isinstance(result, NumberReading) else None,
        error=error,
        upload=upload,
        mode=mode,
        modes=PAGE_MODES,
        reasons=REASONS,
        models=s.manifest.model_names,
        vote=s.manifest.summary["ensemble"],
        max_mib=s.config.max_body / 2**20,
        size=(s.manifest.input.height, s.manifest.input.width),
        field=predict.FIELD,
        formats=predict.accepted_formats(),
        media_types=predict.accepted_media_types(),
    ), (error.status if error else 200)


def _mode() -> str:
    """The form's `mode` field (or the query's): one of predict.MODES, the first (one digit)
    when absent."""
    value = request.form.get("mode") or request.args.get("mode") or predict.MODES[0]
    if value not in predict.MODES:
        raise UnknownMode(f"mode={value[:40]!r} is not a mode: choose one digit or a number.")
    return value


@pages.get("/")
def index():
    return _render()


@pages.post("/")
def upload():
    s = state()
    images: list[bytes] = []
    mode = DEFAULT_MODE
    try:
        images = predict.read_images(request, max_images=1)  # the form has one file input
        mode = _mode()  # after the images: the form's fields are parsed from the body read
        if images == [b""]:  # a browser sends the form without a file as one empty part
            raise MissingImage("Choose an image file first.")
        result = predict.answer(
            s.predictor, images, include_image=True, metrics=s.metrics, mode=mode
        )
    except ApiError as e:
        # The image stays beside the error (no ink, too many digits): it is what was refused.
        shown = preview.make(images[0], s.config.max_pixels) if images and images[0] else None
        return _render(error=e, upload=shown, mode=mode)
    return _render(result=result, upload=preview.make(images[0], s.config.max_pixels), mode=mode)


@pages.get("/docs")
def docs():
    s = state()
    doc = openapi_spec(s.config, s.manifest, list(s.v2_models))
    ops = api_page.operations(doc, request.host_url.rstrip("/"))
    return render_template(
        "docs.html",
        info=doc["info"],
        version=doc["openapi"],
        routes=[o for o in ops if not o.path.startswith("/v2")],
        v2_routes=[o for o in ops if o.path.startswith("/v2")],
        schemas=api_page.schemas(doc),
    )
