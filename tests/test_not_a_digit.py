"""Non-digits are said plainly: the `not_a_digit` reason, apart from an unsure digit, with the
thresholds read from the manifest, and the page's headline."""

import io
import json
import shutil

import numpy as np
import pytest

from bench import synth
from server import create_app, manifest
from server.config import ServerConfig
from server.manifest import Uncertainty
from server.predictor import UncertaintyRule
from server.preprocess import Shape
from tests.uploads import png

DIGIT_SHAPE = Shape(0.12, 1, 0.8)  # ink, pieces, edge ratio of an ordinary digit


def _rule(**kw) -> UncertaintyRule:
    spec = {
        "not_a_digit_below": (0.5,) * 10,
        "low_confidence_below": 0.8,
        "split_vote_below": 1.0,
        "min_edge_ratio": 0.33,
        "max_ink": 0.3,
        "rule": "test",
    }
    return UncertaintyRule(Uncertainty(**{**spec, **kw}))


def test_spread_probabilities_are_not_a_digit_and_said_once():
    assert _rule().reasons(7, 0.2, 0.25, 3, 3, DIGIT_SHAPE) == ["not_a_digit"]


def test_the_not_a_digit_threshold_is_the_voted_digits():
    rule = _rule(not_a_digit_below=(0.9,) + (0.5,) * 9, low_confidence_below=0.6)
    assert rule.reasons(0, 0.8, 0.8, 3, 3, DIGIT_SHAPE) == ["not_a_digit"]
    assert rule.reasons(1, 0.8, 0.8, 3, 3, DIGIT_SHAPE) == []


def test_an_unsure_digit_is_not_called_a_non_digit():
    rule = _rule()
    assert rule.reasons(3, 0.6, 0.9, 3, 3, DIGIT_SHAPE) == ["low_confidence"]
    assert rule.reasons(3, 0.6, 0.95, 2, 3, DIGIT_SHAPE) == ["models_disagree", "low_confidence"]
    assert rule.reasons(3, 0.99, 0.99, 3, 3, DIGIT_SHAPE) == []


@pytest.fixture
def bundle_with(bundle, tmp_path):
    """A copy of the shipped bundle with its manifest's uncertainty thresholds changed."""

    def make(**thresholds):
        dst = tmp_path / "bundle"
        shutil.copytree(bundle, dst, dirs_exist_ok=True)
        raw = json.loads((dst / "manifest.json").read_text())
        raw["uncertainty"].update(thresholds)
        (dst / "manifest.json").write_text(json.dumps(raw))
        return dst

    return make


def _page_and_answer(bundle_dir, image: bytes) -> tuple[str, dict]:
    app = create_app(ServerConfig(artifacts=bundle_dir, max_batch=8, max_body=2_000_000))
    client = app.test_client()
    answer = client.post("/predict", data=image, content_type="image/png").get_json()
    page = client.post(
        "/",
        data={"image": (io.BytesIO(image), "d.png")},
        content_type="multipart/form-data",
    ).get_data(as_text=True)
    return page, answer


def test_server_takes_the_not_a_digit_threshold_from_the_manifest(bundle_with, mnist_test):
    digit = png(mnist_test[0][0])
    page, answer = _page_and_answer(bundle_with(not_a_digit_below=[1.0] * 10), digit)
    assert answer["uncertain"] and answer["uncertain_reasons"] == ["not_a_digit"]
    assert "This does not look like a digit" in page and "The digit is" not in page
    page, answer = _page_and_answer(bundle_with(not_a_digit_below=[0.0] * 10), digit)
    assert "not_a_digit" not in answer["uncertain_reasons"]
    assert "The digit is" in page and "does not look like a digit" not in page


@pytest.mark.parametrize("thresholds", [0.5, [0.5] * 9])
def test_manifest_without_one_not_a_digit_threshold_per_class_is_refused(bundle_with, thresholds):
    with pytest.raises(manifest.ManifestError, match=r"one threshold per class.*export\.calibrate"):
        manifest.load(bundle_with(not_a_digit_below=thresholds))


def test_manifest_without_uncertainty_thresholds_is_refused(bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    raw = json.loads((dst / "manifest.json").read_text())
    del raw["uncertainty"]
    (dst / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(manifest.ManifestError, match="uncertainty"):
        manifest.load(dst)


def test_printed_letters_that_only_a_font_tells_from_digits_are_flagged(bundle):
    """B D G Q b q set in fonts training never used: taught as non-digits, they are flagged,
    where models never shown them read a printed b as 6 and q as 9 at full confidence."""
    app = create_app(ServerConfig(artifacts=bundle))
    client = app.test_client()
    rng = np.random.default_rng(0)
    fonts = synth.held_out_fonts()[:8]
    answers = [
        client.post("/predict", data=synth.printed(c, f, rng), content_type="image/png").get_json()
        for c in "BDGQbq"
        for f in fonts
    ]
    flagged = [a["uncertain"] for a in answers]
    assert np.mean(flagged) >= 0.8, [a["label"] for a in answers]
