"""The page's form post (server/pages.py), as a browser without JavaScript sends it: the
mode switch, the number with its boxes, and the upload shown beside its result or error."""

import io
import re

import numpy as np
import pytest

from server import create_app
from server.config import ServerConfig
from tests.uploads import png


@pytest.fixture(scope="module")
def client(bundle):
    return create_app(ServerConfig(artifacts=bundle, max_batch=8)).test_client()


def _number(digits: list[np.ndarray]) -> bytes:
    gap = np.zeros((28, 8), np.uint8)
    return png(255 - np.hstack([part for d in digits for part in (d, gap)][:-1]))


def _post(client, data: bytes, **fields):
    return client.post("/", data={"image": (io.BytesIO(data), "upload.png"), **fields})


def test_the_empty_page_reads_a_number_unless_told_and_links_the_api_page(client):
    html = client.get("/").get_data(as_text=True)
    checked = re.findall(r'name="mode" value="(\w+)"[^>]*?(checked)?>', html)
    assert checked == [("number", "checked"), ("digit", "")]
    assert 'id="pad-hint"' in html and 'href="/docs"' in html


def test_a_number_posted_with_the_form(client, mnist_test):
    images, labels = mnist_test
    r = _post(client, _number([images[7], images[8], images[9]]), mode="number")
    html = r.get_data(as_text=True)
    expected = "".join(str(labels[i]) for i in (7, 8, 9))
    assert r.status_code == 200 and f'id="answer-number">{expected}<' in html
    assert "Read as a number: 3 digits found." in html
    assert html.count('class="digit-mark') == 3 and html.count('class="digit-card') == 3
    assert re.search(r'name="mode" value="number"[^>]*checked', html)
    # The boxes are drawn in the upload's pixels (100 by 28), over the upload itself.
    assert re.search(r'viewBox="0 -[\d.]+ 100 [\d.]+"', html)
    assert '<image href="data:image/png;base64,' in html and 'width="100" height="28"' in html


def test_one_digit_when_the_form_names_no_mode_as_predict_does(client, mnist_test):
    images, labels = mnist_test
    html = _post(client, png(255 - images[3])).get_data(as_text=True)
    assert "Read as one digit." in html and f'id="answer-digit">{labels[3]}<' in html
    assert 'id="upload-preview"' in html and "digit-mark" not in html


def test_a_single_digit_read_as_a_number_shows_the_one_digit_view(client, mnist_test):
    images, labels = mnist_test
    html = _post(client, png(255 - images[3]), mode="number").get_data(as_text=True)
    assert "Read as a number: one digit found." in html
    assert f'id="answer-digit">{labels[3]}<' in html and "answer-number" not in html
    assert html.count('class="model-vote"') == 3 and html.count('class="digit-mark') == 1


def test_an_unknown_mode_is_refused(client, mnist_test):
    r = _post(client, png(255 - mnist_test[0][0]), mode="words")
    assert r.status_code == 400 and "is not a mode" in r.get_data(as_text=True)


def test_a_refused_image_stays_beside_its_error(client):
    blank = png(np.full((40, 60), 255, np.uint8))
    r = _post(client, blank, mode="number")
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and 'role="alert"' in html
    assert 'id="upload-preview"' in html and "60&times;40" in html
    r = _post(client, b"just notes", mode="number")
    assert r.status_code == 415 and 'id="upload-preview"' not in r.get_data(as_text=True)


def test_a_digit_the_whole_digit_check_doubts_is_marked_with_its_reason(client, mnist_test):
    from tests.test_number import first_of, touching_pair

    images, labels = mnist_test
    # 1 and 0 written into each other, and a 7 beside them: the pair is read as one digit.
    pair = touching_pair(images[first_of(labels, 1)], images[first_of(labels, 0)], 2)
    seven = np.zeros((pair.shape[0], 36), np.uint8)
    seven[8:36, 4:32] = images[first_of(labels, 7)]
    html = _post(client, png(255 - np.hstack([seven, pair])), mode="number").get_data(as_text=True)
    assert "Read as a number: 2 digits found." in html
    assert html.count("may be two digits touching, or part of one") == 1
