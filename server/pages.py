"""The web page at /: upload or draw a digit. Without JavaScript the form posts back to / and
the result is rendered here; with it, the page's script posts the same form to /?fragment=1
and swaps in the result. Both take the request path of /predict (server/predict.py)."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from server import predict
from server.answers import Prediction
from server.errors import ApiError, MissingImage
from server.state import state

pages = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


def _render(result: Prediction | None = None, error: ApiError | None = None):
    s = state()
    # The page's script posts here too and swaps in just the result: one renderer for both.
    template = "_result.html" if request.args.get("fragment") else "index.html"
    return render_template(
        template,
        result=result,
        error=error,
        models=s.manifest.model_names,
        vote=s.manifest.summary["ensemble"],
        max_mib=s.config.max_body / 2**20,
        size=(s.manifest.input.height, s.manifest.input.width),
        field=predict.FIELD,
        formats=predict.accepted_formats(),
        media_types=predict.accepted_media_types(),
    ), (error.status if error else 200)


@pages.get("/")
def index():
    return _render()


@pages.post("/")
def upload():
    s = state()
    try:
        images = predict.read_images(request, max_images=1)  # the form has one file input
        if images == [b""]:  # a browser sends the form without a file as one empty part
            raise MissingImage("Choose an image file first.")
        result = predict.answer(s.predictor, images, include_image=True, metrics=s.metrics)
    except ApiError as e:
        return _render(error=e)
    return _render(result=result)
