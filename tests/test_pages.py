"""The page's form post (server/pages.py), as a browser without JavaScript sends it: the
upload shown beside its result or error."""

import io

import numpy as np
import pytest

from server import create_app
from server.config import ServerConfig
from tests.uploads import png


@pytest.fixture(scope="module")
def client(bundle):
    return create_app(ServerConfig(artifacts=bundle, max_batch=8)).test_client()


def _post(client, data: bytes, **fields):
    return client.post("/", data={"image": (io.BytesIO(data), "upload.png"), **fields})


def test_the_page_links_the_api_page(client):
    html = client.get("/").get_data(as_text=True)
    assert 'href="/docs"' in html and 'href="/openapi.json"' not in html


def test_an_upload_is_shown_beside_its_result(client, mnist_test):
    images, labels = mnist_test
    html = _post(client, png(255 - images[3])).get_data(as_text=True)
    assert f'id="answer-digit">{labels[3]}<' in html
    assert 'id="upload-preview"' in html and "28&times;28" in html


def test_a_refused_image_stays_beside_its_error(client):
    blank = png(np.full((40, 60), 255, np.uint8))
    r = _post(client, blank)
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and 'role="alert"' in html
    assert 'id="upload-preview"' in html and "60&times;40" in html
    r = _post(client, b"just notes")
    assert r.status_code == 415 and 'id="upload-preview"' not in r.get_data(as_text=True)
