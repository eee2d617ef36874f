"""The web page at /: upload or draw a digit. Without JavaScript the form posts back to / and
the result is rendered here; with it, the page calls /predict and draws the result itself."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from server.errors import ApiError, MissingImage

pages = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


def _render(result=None, error: ApiError | None = None):
    state = current_app.extensions["digits"]
    # The page's script posts here too and swaps in just the result: one renderer for both.
    template = "_result.html" if request.args.get("fragment") else "index.html"
    return render_template(
        template,
        result=result,
        error=error,
        models=state.manifest.model_names,
        vote=state.manifest.raw["ensemble"],
        max_mib=state.config.max_body / 2**20,
    ), (error.status if error else 200)


@pages.get("/")
def index():
    return _render()


@pages.post("/")
def upload():
    state = current_app.extensions["digits"]
    file = request.files.get("image")
    data = file.read() if file else b""
    if not data:
        return _render(error=MissingImage("Choose an image file first."))
    answer = state.predictor.predict([data], include_image=True)[0]
    if isinstance(answer, ApiError):
        state.metrics.rejected.labels(code=answer.code).inc()
        return _render(error=answer)
    state.metrics.record_answer(answer)
    return _render(result=answer)
