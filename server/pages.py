"""The web page at /: upload or draw a digit. Without JavaScript the form posts back to / and
the result is rendered here; with it, the page calls /predict and draws the result itself."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from server.errors import ApiError, MissingImage
from server.routes import state

pages = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


def _render(result=None, error: ApiError | None = None):
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
    ), (error.status if error else 200)


@pages.get("/")
def index():
    return _render()


@pages.post("/")
def upload():
    s = state()
    file = request.files.get("image")
    data = file.read() if file else b""
    if not data:
        return _render(error=MissingImage("Choose an image file first."))
    answers = s.predictor.predict([data], include_image=True)
    s.metrics.record(answers)
    if isinstance(answers[0], ApiError):
        return _render(error=answers[0])
    return _render(result=answers[0])
