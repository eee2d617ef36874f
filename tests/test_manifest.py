import json
import shutil

import pytest

from server import manifest


@pytest.fixture
def copy_of_bundle(bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    return dst


def test_shipped_bundle_loads_and_names_its_parts(bundle):
    m = manifest.load(bundle)
    assert m.input.height == m.input.width == 28 and m.input.ink_high
    assert m.input.digit_box == 20 and m.input.centre_of_mass == (14.0, 14.0)
    assert 0.12 < m.input.mean < 0.14 and 0.30 < m.input.std < 0.32
    assert m.classes == [str(d) for d in range(10)]
    assert len(m.model_names) == 3 and m.ensemble_file.is_file()


def test_altered_model_is_refused(copy_of_bundle):
    raw = json.loads((copy_of_bundle / "manifest.json").read_text())
    path = copy_of_bundle / raw["models"][1]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(manifest.ManifestError, match="does not match its sha256"):
        manifest.load(copy_of_bundle)


def test_truncated_ensemble_is_refused(copy_of_bundle):
    path = copy_of_bundle / "ensemble.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(manifest.ManifestError, match=r"ensemble\.onnx does not match"):
        manifest.load(copy_of_bundle)


def test_missing_model_is_refused(copy_of_bundle):
    raw = json.loads((copy_of_bundle / "manifest.json").read_text())
    (copy_of_bundle / raw["models"][0]["file"]).unlink()
    with pytest.raises(manifest.ManifestError, match="is missing"):
        manifest.load(copy_of_bundle)


def test_file_names_cannot_escape_the_bundle(copy_of_bundle):
    raw = json.loads((copy_of_bundle / "manifest.json").read_text())
    raw["golden"]["file"] = "../../etc/passwd"
    (copy_of_bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(manifest.ManifestError, match="is missing"):
        manifest.load(copy_of_bundle)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(schema_version=99), "schema_version 99"),
        (lambda m: m["input"].pop("mean"), "malformed manifest"),
        (lambda m: m["input"].update(ink="purple"), "ink/layout"),
        # Fields only the ensemble session, GET /models or the page read: refused at start,
        # not a traceback or a 500 later.
        (lambda m: m["ensemble"].pop("output_order"), "malformed manifest.*output_order"),
        (lambda m: m["models"][0].pop("test_acc"), "malformed manifest.*test_acc"),
        (lambda m: m["provenance"].pop("git"), "malformed manifest.*git"),
        (lambda m: m["whole_digit"].update(below=1.5), "below must lie in"),
        (lambda m: m["whole_digit"]["outputs"].update(extra=[None]), "malformed manifest"),
    ],
)
def test_manifest_this_server_cannot_read_is_refused(copy_of_bundle, edit, message):
    raw = json.loads((copy_of_bundle / "manifest.json").read_text())
    edit(raw)
    (copy_of_bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(manifest.ManifestError, match=message):
        manifest.load(copy_of_bundle)


def test_an_altered_whole_digit_check_is_refused(copy_of_bundle):
    path = copy_of_bundle / "whole-digit.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(manifest.ManifestError, match=r"whole-digit\.onnx does not match"):
        manifest.load(copy_of_bundle)


def test_a_bundle_without_the_whole_digit_check_reads_numbers_without_it(
    copy_of_bundle, mnist_test
):
    from server import create_app
    from server.config import ServerConfig
    from tests.test_number import first_of, touching_pair
    from tests.uploads import png

    raw = json.loads((copy_of_bundle / "manifest.json").read_text())
    del raw["whole_digit"]
    (copy_of_bundle / "manifest.json").write_text(json.dumps(raw))
    (copy_of_bundle / "whole-digit.onnx").unlink()
    assert manifest.load(copy_of_bundle).whole_digit is None
    client = create_app(ServerConfig(artifacts=copy_of_bundle, batch_helpers=0)).test_client()
    images, labels = mnist_test
    # 10 written into each other: read as one digit, and without the check not flagged at all.
    img = touching_pair(images[first_of(labels, 1)], images[first_of(labels, 0)], 2)
    a = client.post("/predict?mode=number", data=png(img), content_type="image/png").get_json()
    assert len(a["digits"]) == 1 and not a["uncertain"]


def test_missing_or_broken_manifest(tmp_path):
    with pytest.raises(manifest.ManifestError, match="not found"):
        manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(manifest.ManifestError, match="not readable JSON"):
        manifest.load(tmp_path)


def test_shipped_manifest_holds_the_facts_of_the_export_spec(bundle):
    from export.spec import SPEC

    raw = json.loads((bundle / "manifest.json").read_text())
    m = manifest.load(bundle)
    assert m.input.name == SPEC.input_name and raw["input"]["shape"] == SPEC.input_shape
    assert (m.input.height, m.input.width) == (SPEC.height, SPEC.width)
    assert m.classes == list(SPEC.classes) and m.golden_atol == SPEC.parity_atol


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["classes"].pop(), "9 classes, but the ensemble votes over 10"),
        (lambda m: m["input"].update(name="pixels"), "input 'pixels'"),
        (lambda m: m["input"].update(height=32), "is not the ensemble's input"),
        (lambda m: m["whole_digit"]["inputs"].update(image=[None, 1, 32, 32]), "not the models'"),
    ],
)
def test_facts_that_disagree_with_the_graph_are_refused(copy_of_bundle, edit, message):
    raw = json.loads((copy_of_bundle / "manifest.json").read_text())
    edit(raw)
    (copy_of_bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(manifest.ManifestError, match=message):
        manifest.load(copy_of_bundle)


def test_the_server_counts_answers_by_the_manifests_class_names(copy_of_bundle, mnist_test):
    from server import create_app
    from server.config import ServerConfig
    from tests.uploads import png

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    raw = json.loads((copy_of_bundle / "manifest.json").read_text())
    raw["classes"] = names
    (copy_of_bundle / "manifest.json").write_text(json.dumps(raw))
    client = create_app(ServerConfig(artifacts=copy_of_bundle, batch_helpers=0)).test_client()
    images, labels = mnist_test
    r = client.post("/predict", data=png(images[0]), content_type="image/png")
    assert r.get_json()["label"] == labels[0]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'predictions_total{{digit="{names[labels[0]]}"}} 1.0' in metrics
    assert 'predictions_total{digit="7"}' not in metrics
