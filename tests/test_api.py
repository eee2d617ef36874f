"""The HTTP API through Flask's test client, on the shipped bundle."""

import io
import json
import logging
import re

import numpy as np
import pytest
from PIL import Image

from server import create_app
from server.config import ServerConfig
from tests.uploads import png


@pytest.fixture(scope="module")
def app(bundle):
    return create_app(ServerConfig(artifacts=bundle, max_batch=8, max_body=2_000_000))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def samples(mnist_test):
    images, labels = mnist_test
    return [(png(images[i]), int(labels[i])) for i in range(8)]


def post_files(client, files, query=""):
    data = {"image": [(io.BytesIO(b), f"d{i}.png") for i, b in enumerate(files)]}
    return client.post("/predict" + query, data=data, content_type="multipart/form-data")


def test_raw_png_body_gets_the_documented_answer(client, samples):
    data, label = samples[0]
    r = client.post("/predict", data=data, content_type="image/png")
    assert r.status_code == 200 and r.mimetype == "application/json"
    a = r.get_json()
    assert a["label"] == label
    assert set(a) >= {
        "label",
        "confidence",
        "votes",
        "agreement",
        "tie_broken",
        "uncertain",
        "models",
    }
    assert len(a["votes"]) == 10 and sum(a["votes"]) == 3 and a["votes"][label] == a["agreement"]
    assert 0 < a["confidence"] <= 1 and isinstance(a["tie_broken"], bool)
    assert len(a["models"]) == 3
    for m in a["models"]:
        assert set(m) == {"name", "label", "confidence", "probabilities"}
        assert len(m["probabilities"]) == 10 and abs(sum(m["probabilities"]) - 1) < 1e-3
        # Six decimals as written, not a float32's long tail (1.9999999949504854e-06).
        assert all(round(p, 6) == p for p in m["probabilities"]), m["probabilities"]
        assert m["confidence"] == max(m["probabilities"])
    assert "image" not in a


def test_multipart_single_image_answers_one_object(client, samples):
    data, label = samples[1]
    r = post_files(client, [data])
    assert r.status_code == 200 and r.get_json()["label"] == label


def test_batch_answers_in_order_with_per_image_errors(client, samples):
    files = [samples[0][0], b"not an image", samples[2][0], png(np.zeros((28, 28), np.uint8))]
    r = post_files(client, files)
    assert r.status_code == 200
    results = r.get_json()["results"]
    assert len(results) == 4
    assert results[0]["label"] == samples[0][1] and results[2]["label"] == samples[2][1]
    assert results[1] == {"error": results[1]["error"], "code": "unsupported_format", "status": 415}
    assert results[3]["code"] == "no_ink" and results[3]["status"] == 422


def test_too_many_multipart_parts_is_a_batch_error_not_a_body_size_error(client):
    # Past MAX_FORM_PARTS werkzeug stops parsing before the route can count the images.
    files = {"image": [(io.BytesIO(b"x"), f"{i}.png") for i in range(30)]}
    r = client.post("/predict", data=files, content_type="multipart/form-data")
    assert r.status_code == 413 and r.get_json()["code"] == "batch_too_large"
    assert "at most 8 images" in r.get_json()["error"]


def test_batch_over_the_limit_is_413(client, samples):
    r = post_files(client, [samples[0][0]] * 9)
    assert r.status_code == 413 and r.get_json()["code"] == "batch_too_large"


def test_include_image_returns_the_28x28_the_models_saw(client, mnist_test):
    images, _ = mnist_test
    r = client.post("/predict?include_image=1", data=png(images[0]), content_type="image/png")
    url = r.get_json()["image"]
    assert url.startswith("data:image/png;base64,")
    import base64

    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert seen.shape == (28, 28) and np.array_equal(seen, images[0])


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        (
            {"data": {"file": (io.BytesIO(b"x"), "x.png")}, "content_type": "multipart/form-data"},
            400,
            "missing_image",
        ),
        ({"data": b"plain text", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": b"{}", "content_type": "application/json"}, 415, "unsupported_media_type"),
        ({"data": b""}, 415, "unsupported_media_type"),
        ({"data": b"hello", "content_type": "image/png"}, 415, "unsupported_format"),
        (
            {"data": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "content_type": "image/png"},
            400,
            "undecodable_image",
        ),
        ({"data": b"", "content_type": "image/png"}, 400, "undecodable_image"),
        (
            {"data": png(np.full((40, 40), 255, np.uint8)), "content_type": "image/png"},
            422,
            "no_ink",
        ),
        ({"data": b"x" * 2_100_000, "content_type": "image/png"}, 413, "body_too_large"),
    ],
)
def test_bad_requests_get_a_4xx_json_error(client, kwargs, status, code):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    body = r.get_json()
    assert body["code"] == code and body["error"].endswith(".") and len(body) == 2
    assert client.get("/healthz").status_code == 200


def test_text_file_in_the_image_field_is_415(client):
    r = post_files(client, [b"just some notes\n"])
    assert r.status_code == 415 and r.get_json()["code"] == "unsupported_format"


def test_pixel_cap(bundle):
    small = create_app(ServerConfig(artifacts=bundle, max_pixels=10_000)).test_client()
    r = small.post("/predict", data=png(np.zeros((200, 200), np.uint8)), content_type="image/png")
    assert r.status_code == 413 and r.get_json()["code"] == "too_many_pixels"


def test_unknown_route_and_method_are_json(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.get_json()["code"] == "not_found"
    r = client.get("/predict")
    assert r.status_code == 405 and r.get_json()["code"] == "method_not_allowed"


def test_security_headers_on_every_response(client, samples):
    static = client.get("/static/app.js")
    for r in (
        client.get("/"),
        client.get("/healthz"),
        client.get("/no/such/page"),
        static,
        client.post("/predict", data=b"x"),
        client.post("/predict", data=samples[0][0], content_type="image/png"),
    ):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert len(r.headers.getlist("Cache-Control")) == 1
        if r is not static:
            assert r.headers["Cache-Control"] == "no-store"
    # Static files keep Flask's own revalidation rather than no-store.
    assert static.status_code == 200 and "no-store" not in static.headers["Cache-Control"]


def test_health_readiness_and_models(client, bundle):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["ready"] is True and ready["providers"][0] == "CPUExecutionProvider"
    assert ready["self_test"]["images"] >= 10
    models = client.get("/models").get_json()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [m["sha256"] for m in models["models"]] == [m["sha256"] for m in manifest["models"]]
    assert models["ensemble"]["test_acc"] == manifest["ensemble"]["test_acc"]
    assert "uncertain" in models["uncertainty"]
    check = manifest["whole_digit"]
    assert models["whole_digit"]["sha256"] == check["sha256"]
    assert models["whole_digit"]["below"] == check["below"]


def _metric(text: str, name: str) -> float:
    """The value of one sample in a /metrics scrape; 0 for a series not yet created."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_predictions_and_errors(client, samples):
    data, label = samples[3]
    series = [
        f'predictions_total{{digit="{label}"}}',
        'http_requests_total{method="POST",route="/predict",status="200"}',
        'http_requests_total{method="POST",route="/predict",status="415"}',
        'predict_rejected_images_total{code="unsupported_format"}',
        'http_request_duration_seconds_count{route="/predict"}',
        "predict_images_total",
    ]
    text = client.get("/metrics").get_data(as_text=True)
    before = {name: _metric(text, name) for name in series}
    assert client.post("/predict", data=data, content_type="image/png").status_code == 200
    assert client.post("/predict", data=b"junk", content_type="image/png").status_code == 415
    text = client.get("/metrics").get_data(as_text=True)
    grew = {name: _metric(text, name) - before[name] for name in series}
    # Exactly what the two requests add: one answer for the digit, one refusal.
    assert grew == {
        series[0]: 1,
        series[1]: 1,
        series[2]: 1,
        series[3]: 1,
        series[4]: 2,
        series[5]: 2,
    }, grew
    assert 'http_request_duration_seconds_bucket{le="0.001",route="/predict"}' in text
    assert "prediction_disagreements_total" in text


def test_openapi_describes_every_route(client, app):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    routes = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule) for r in app.url_map.iter_rules()} - {
        "/static/{filename}",
        "/",
    }
    assert routes <= set(spec["paths"]), routes - set(spec["paths"])
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(responses)


def test_invented_http_methods_do_not_grow_the_metrics(client):
    for i in range(5):
        assert client.open("/predict", method=f"BREW{i}").status_code == 405
        assert client.open("/healthz", method=f"BREW{i}").status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert "BREW" not in text
    assert 'http_requests_total{method="other",route="/predict",status="405"} 5.0' in text


def test_inference_failure_is_503_and_the_server_keeps_serving(app, client, samples, monkeypatch):
    ensemble = app.extensions["digits"].ensemble
    real = ensemble.run
    calls = {"n": 0}

    def flaky(batch, **options):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated onnxruntime failure")
        return real(batch, **options)

    monkeypatch.setattr(ensemble, "run", flaky)
    r = client.post("/predict", data=samples[0][0], content_type="image/png")
    assert r.status_code == 503 and r.get_json()["code"] == "inference_failed"
    r = client.post("/predict", data=samples[0][0], content_type="image/png")
    assert r.status_code == 200 and r.get_json()["label"] == samples[0][1]


def test_a_bug_in_predict_is_a_logged_500_without_a_traceback(
    app, client, samples, monkeypatch, caplog
):
    predictor = app.extensions["digits"].predictor
    real = predictor.predict
    calls = {"n": 0}

    def buggy(images, include_image=False):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("simulated bug")
        return real(images, include_image)

    monkeypatch.setattr(predictor, "predict", buggy)
    r = client.post("/predict", data=samples[0][0], content_type="image/png")
    assert r.status_code == 500 and r.get_json()["code"] == "internal"
    assert "simulated bug" not in r.get_data(as_text=True)
    assert "simulated bug" in caplog.text  # the traceback went to the log
    assert r.headers["X-Frame-Options"] == "DENY"
    r = client.post("/predict", data=samples[0][0], content_type="image/png")
    assert r.status_code == 200 and r.get_json()["label"] == samples[0][1]


def test_predict_allows_post_and_says_so(client):
    r = client.options("/predict")
    assert r.status_code == 200 and set(r.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    text = client.get("/metrics").get_data(as_text=True)
    assert 'http_requests_total{method="OPTIONS",route="/predict",status="200"}' in text
    for method in ("get", "put", "delete", "head"):
        r = getattr(client, method)("/predict")
        assert r.status_code == 405 and "POST" in r.headers["Allow"]
        if method != "head":
            assert r.get_json()["code"] == "method_not_allowed"


def test_access_log_has_one_line_per_answer_from_either_app(bundle, samples, caplog):
    app = create_app(ServerConfig(artifacts=bundle, access_log=True))
    client = app.test_client()
    caplog.set_level(logging.INFO, logger="server")
    client.post("/predict", data=samples[0][0], content_type="image/png")
    client.options("/predict")
    client.get("/healthz")
    client.get("/no-such-page")
    lines = [r.getMessage() for r in caplog.records if r.name == "server"]
    assert [line.rsplit(" ", 2)[0] for line in lines] == [
        "POST /predict 200",
        "OPTIONS /predict 200",
        "GET /healthz 200",
        "GET /no-such-page 404",
    ]


def test_the_page_form_post_takes_the_request_path_of_predict(client, samples):
    def value(name: str) -> float:
        text = client.get("/metrics").get_data(as_text=True)
        line = next((x for x in text.splitlines() if x.startswith(name + " ")), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    images, batches = value("predict_images_total"), value("predict_batch_size_count")
    data, label = samples[4]
    r = client.post("/", data={"image": (io.BytesIO(data), "d.png")})
    assert r.status_code == 200 and f'id="answer-digit">{label}<' in r.get_data(as_text=True)
    # Counted as /predict counts its images and batches, and the metric says so.
    assert value("predict_images_total") == images + 1
    help_line = next(
        x
        for x in client.get("/metrics").get_data(as_text=True).splitlines()
        if x.startswith("# HELP predict_images_total")
    )
    assert "the page's form" in help_line, help_line
    assert value("predict_batch_size_count") == batches + 1
    r = client.post("/", data={"image": (io.BytesIO(b"just notes"), "notes.txt")})
    assert r.status_code == 415 and "not an image in an accepted format" in r.get_data(as_text=True)
    r = client.post("/", data={"image": (io.BytesIO(b""), "")})
    assert r.status_code == 400 and "Choose an image file first." in r.get_data(as_text=True)


def test_flask_route_and_fast_path_give_the_same_answers(app, client, samples, monkeypatch):
    """POST /predict is served in front of Flask; Flask's own route answers the same."""
    dispatched = []
    full_dispatch = app.full_dispatch_request
    monkeypatch.setattr(
        app, "full_dispatch_request", lambda: dispatched.append(1) or full_dispatch()
    )
    for query, kwargs in (
        ("", {"data": samples[5][0], "content_type": "image/png"}),
        ("?include_image=1", {"data": samples[5][0], "content_type": "image/png"}),
        ("", {"data": b"junk", "content_type": "image/png"}),
        ("", {"data": b"{}", "content_type": "application/json"}),
        ("", {"data": {"image": [(io.BytesIO(s[0]), "a.png") for s in samples[:3]]}}),
    ):
        fast = client.post("/predict" + query, **kwargs)
        # Answered before Flask: with the fast path gone, this would compare Flask with itself.
        assert dispatched == [], query
        if isinstance(kwargs["data"], dict):  # the streams were read: a fresh copy
            kwargs = {"data": {"image": [(io.BytesIO(s[0]), "a.png") for s in samples[:3]]}}
        with app.test_request_context("/predict" + query, method="POST", **kwargs):
            routed = app.full_dispatch_request()
        dispatched.clear()
        assert routed.status_code == fast.status_code
        assert routed.get_data() == fast.get_data()
        assert routed.mimetype == fast.mimetype == "application/json"


def test_the_accepted_formats_read_the_same_everywhere(client):
    # The refusal, the page and the API document name the formats from one list, as users
    # read them (WebP, not Pillow's WEBP).
    names = re.compile(r"\b(PNG|JPEG|GIF|BMP|WebP|WEBP|TIFF)\b")
    refusal = client.post("/predict", data=b"notes", content_type="image/png").get_json()
    page = client.get("/").get_data(as_text=True)
    upload = client.get("/openapi.json").get_json()["paths"]["/predict"]["post"]["requestBody"]
    said = {
        "refusal": names.findall(refusal["error"]),
        "page": names.findall(page.split('id="drop-hint"', 1)[1].split("</span>", 1)[0]),
        "openapi": names.findall(upload["description"]),
    }
    assert all(v == ["PNG", "JPEG", "GIF", "BMP", "WebP", "TIFF"] for v in said.values()), said
