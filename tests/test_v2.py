"""The KServe v2 / Triton protocol, spoken to by Triton's own client, tritonclient.http."""

import json
import re

import numpy as np
import onnx
import pytest
import requests
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from export.triton import build
from tests.uploads import binary_v2_request, predict_labels

HEADER_LENGTH = "Inference-Header-Content-Length"
ONNX_TYPES = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.BOOL: "BOOL",
}


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def client(server):
    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def digits(mnist_test, manifest):
    """64 test digits, preprocessed as training saw them, with their labels."""
    images, labels = mnist_test
    spec = manifest["input"]
    x = (images[:64].astype(np.float32) / 255.0 - spec["mean"]) / spec["std"]
    return x[:, None].astype(np.float32), labels[:64], images[:64]


def model_files(bundle, manifest) -> dict:
    files = {m["name"]: bundle / m["file"] for m in manifest["models"]}
    files["vote"] = bundle / manifest["vote"]["file"]
    return {**files, "ensemble": bundle / manifest["ensemble"]["file"]}


def test_server_is_live_and_ready_with_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "digits" and "binary_tensor_data" in meta["extensions"]


def triton_shape(value) -> list[int]:
    """An ONNX tensor's shape as Triton reports it: a per-item scalar ([N]) is [N, 1]."""
    dims = [
        d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
    ]
    return [*dims, 1] if len(dims) == 1 else dims


def test_model_metadata_matches_the_onnx_files(client, bundle, manifest):
    for name, path in model_files(bundle, manifest).items():
        assert client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        graph = onnx.load(path).graph
        for side, declared in (("inputs", graph.input), ("outputs", graph.output)):
            expected = [
                {
                    "name": v.name,
                    "datatype": ONNX_TYPES[v.type.tensor_type.elem_type],
                    "shape": triton_shape(v),
                }
                for v in declared
            ]
            assert meta[side] == expected, (name, side)
        assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]


def _infer(client, model, x, binary=True, outputs=None):
    tensor = httpclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    requested = (
        [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
        if outputs
        else None
    )
    return client.infer(model, [tensor], outputs=requested)


@pytest.mark.parametrize("binary", [True, False])
def test_ensemble_labels_equal_predict_labels(client, server, digits, binary):
    x, labels, images = digits
    result = _infer(
        client,
        "ensemble",
        x,
        binary=binary,
        outputs=None if binary else ["label", "votes", "tie_broken", "probabilities"],
    )
    v2_labels = result.as_numpy("label").reshape(-1)
    assert result.as_numpy("votes").shape == (64, 10)
    assert result.as_numpy("probabilities").shape == (64, 3, 10)
    assert result.as_numpy("tie_broken").dtype == np.bool_
    assert v2_labels.tolist() == predict_labels(server.url, images)
    assert (v2_labels == labels).mean() >= 0.98


def test_each_model_answers_probabilities(client, digits, manifest):
    x, labels, _ = digits
    for m in manifest["models"]:
        result = _infer(client, m["name"], x, outputs=["probabilities"])
        probs = result.as_numpy("probabilities")
        assert probs.shape == (64, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)
        assert (probs.argmax(1) == labels).mean() >= 0.97
        assert result.as_numpy("logits") is None  # only what was asked for


def test_request_id_and_version_path(server, digits):
    x, _, _ = digits
    body = {
        "id": "abc-1",
        "inputs": [
            {
                "name": "image",
                "datatype": "FP32",
                "shape": [1, 1, 28, 28],
                "data": x[0].ravel().tolist(),
            }
        ],
        "outputs": [{"name": "label"}],
    }
    r = requests.post(server.url + "/v2/models/ensemble/versions/1/infer", json=body, timeout=10)
    assert r.status_code == 200
    answer = r.json()
    assert answer["id"] == "abc-1" and answer["model_name"] == "ensemble"
    assert answer["outputs"][0]["name"] == "label" and answer["outputs"][0]["shape"] == [1, 1]


def _bad(server, body: bytes | dict, headers=None, model="ensemble"):
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body}
    r = requests.post(
        f"{server.url}/v2/models/{model}/infer", headers=headers or {}, timeout=10, **kwargs
    )
    return r.status_code, r.json()["error"]


def image_input(shape, datatype="FP32", data=None, **extra):
    n = int(np.prod(shape)) if all(isinstance(d, int) for d in shape) else 0
    return {
        "name": "image",
        "datatype": datatype,
        "shape": shape,
        "data": data if data is not None else [0.0] * n,
        **extra,
    }


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        ({"inputs": "image"}, "must be a list"),
        ({"inputs": []}, "takes inputs ['image']"),
        ({"inputs": [image_input([1, 28, 28])]}, "must have shape"),
        ({"inputs": [image_input([2, 1, 28, 27])]}, "must have shape"),
        ({"inputs": [image_input([1, 1, 28, 28], datatype="INT64")]}, "datatype FP32"),
        ({"inputs": [image_input([1, 1, 28, 28], datatype="FP16")]}, "datatype FP32"),
        ({"inputs": [image_input([1, 1, 28, 28], data=[0.0] * 10)]}, "10 values for shape"),
        ({"inputs": [image_input([1, 1, 28, 28], data=["x"] * 784)]}, "not a list of numbers"),
        ({"inputs": [image_input([0, 1, 28, 28])]}, "outside 1..256"),
        ({"inputs": [image_input([300, 1, 28, 28], data=[])]}, "outside 1..256"),
        ({"inputs": [image_input([1, 1, 28, 28])], "outputs": [{"name": "nope"}]}, "no output"),
        ({"inputs": [image_input(["a", 1, 28, 28])]}, "needs a shape"),
        (
            {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28]}]},
            "neither 'data' nor binary_data_size",
        ),
    ],
)
def test_malformed_requests_are_400_with_a_reason(server, body, message):
    status, error = _bad(server, body)
    assert status == 400 and message in error, error


def test_nan_input_is_refused(server):
    data = json.dumps({"inputs": [image_input([1, 1, 28, 28])]}).replace("0.0", "NaN", 1)
    status, error = _bad(server, data.encode(), {"Content-Type": "application/json"})
    assert status == 400 and "NaN" in error


def test_binary_extension_errors(server):
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [1, 1, 28, 28],
                    "parameters": {"binary_data_size": 784 * 4},
                }
            ]
        }
    ).encode()
    full = np.zeros(784, np.float32).tobytes()
    ok = requests.post(
        server.url + "/v2/models/ensemble/infer",
        data=head + full,
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=10,
    )
    assert ok.status_code == 200
    for tail, length, message in [
        (full[:100], len(head), "ends before its binary data"),
        (full + b"xx", len(head), "belong to no input"),
        (full, len(head) + len(full) + 5, "does not fit"),
        (full, "abc", "does not fit"),
    ]:
        status, error = _bad(server, head + tail, {"Inference-Header-Content-Length": str(length)})
        assert status == 400 and message in error, error


def test_unknown_model_and_version_are_404(client, server):
    with pytest.raises(InferenceServerException, match="Unknown model"):
        client.get_model_metadata("resnet50")
    r = requests.get(server.url + "/v2/models/ensemble/versions/2", timeout=5)
    assert r.status_code == 404


# ---- hostile requests: a 400 with a reason, never a 500 -------------------------------------

DEEP = 50_000
NESTED_DATA = (
    b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": '
    + b"[" * DEEP
    + b"]" * DEEP
    + b"}]}"
)


def _raw_input(data: str) -> bytes:
    return (
        '{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": '
        + data
        + "}]}"
    ).encode()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[" * DEEP + b"]" * DEEP, "nested too deeply"),
        (NESTED_DATA, "nested too deeply"),
        ({"inputs": [image_input([True, 1, 28, 28])]}, "needs a shape"),
        (_raw_input("[" + "7" * 5000 + "]"), "not valid JSON"),
        (_raw_input("[" + "7" * 4000 + ", 0.0" * 783 + "]"), "not a list of numbers"),
        (_raw_input("[true" + ", false" * 783 + "]"), "not a list of numbers"),
        (_raw_input('["1.5"' + ', "0"' * 783 + "]"), "not a list of numbers"),
        ({"inputs": [{**image_input([1, 1, 28, 28]), "name": ["image"]}]}, "'name'"),
        ({"inputs": [{**image_input([1, 1, 28, 28]), "name": {"a": 1}}]}, "'name'"),
        ({"inputs": [image_input([1, 1, 28, 28])], "parameters": "x"}, "'parameters'"),
        ({"inputs": [image_input([1, 1, 28, 28])], "parameters": [1]}, "'parameters'"),
        ({"inputs": [image_input([1, 1, 28, 28], parameters="x")]}, "'parameters'"),
        ({"inputs": [image_input([1, 1, 28, 28], parameters=[])]}, "'parameters'"),
        (
            {
                "inputs": [image_input([1, 1, 28, 28])],
                "outputs": [{"name": "label", "parameters": "x"}],
            },
            "'parameters'",
        ),
        ({"inputs": [image_input([1, 1, 28, 28])], "outputs": [{"name": ["label"]}]}, "no output"),
        ({"inputs": [image_input([1, 1, 28, 28])], "id": {"a": [1]}}, "'id'"),
        ({"inputs": [image_input([1, 1, 28, 28], data=[3e38] * 784)]}, "not finite|NaN"),
        ({"inputs": [image_input([1, 1, 28, 28], data=[1e300] * 784)]}, "NaN or infinity"),
    ],
)
def test_hostile_requests_are_400_with_a_reason(server, body, message):
    status, error = _bad(server, body, {"Content-Type": "application/json"})
    assert status == 400 and re.search(message, error), error


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_in_a_binary_tensor_are_refused(server, value):
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 14, 14] = value
    status, error = _bad(server, *binary_v2_request(x))
    assert status == 400 and "NaN or infinity" in error


def test_header_length_must_be_ascii_digits(server):
    body, headers = binary_v2_request(np.zeros((1, 1, 28, 28), np.float32))
    length = headers["Inference-Header-Content-Length"]
    for odd in ("²", length + "²", "+" + length, length + ".0"):
        status, error = _bad(server, body, {"Inference-Header-Content-Length": odd})
        assert status == 400 and "does not fit" in error, (odd, error)


def test_the_triton_pipeline_name_is_served(client, digits, manifest):
    # export/triton.py writes lenet5-vote (each model, then the vote) into the repository: a
    # client written against Triton asks for it by that name.
    x, _, _ = digits
    meta = client.get_model_metadata("lenet5-vote")
    members = len(manifest["models"])
    assert meta["platform"] == "ensemble"
    assert [o["name"] for o in meta["outputs"]] == [
        "label",
        "votes",
        "tie_broken",
        *[f"probabilities_{i}" for i in range(members)],
    ]
    assert meta["inputs"] == client.get_model_metadata("ensemble")["inputs"]
    pipeline = _infer(client, "lenet5-vote", x)
    ensemble = _infer(client, "ensemble", x)
    assert (pipeline.as_numpy("label") == ensemble.as_numpy("label")).all()
    for i, m in enumerate(manifest["models"]):
        alone = _infer(client, m["name"], x, outputs=["probabilities"]).as_numpy("probabilities")
        assert np.allclose(pipeline.as_numpy(f"probabilities_{i}"), alone, atol=1e-6)


def test_every_model_of_the_triton_repository_is_served_by_its_name(client, bundle, tmp_path):
    written = build(bundle, tmp_path / "repository")
    assert {"vote", "lenet5-vote", "ensemble"} <= set(written)
    for name in written:
        assert client.is_model_ready(name), name
        assert client.get_model_metadata(name)["name"] == name


def test_the_vote_alone_gives_the_ensembles_vote_ties_included(client, digits, manifest):
    x, _, _ = digits
    ensemble = _infer(client, "ensemble", x)
    probs = ensemble.as_numpy("probabilities")  # [N, models, 10]
    # Three models, three digits: a tie the summed probabilities break (7 has the most).
    tie = np.full((1, 3, 10), 0.01, np.float32)
    tie[0, 0, 3], tie[0, 1, 5], tie[0, 2, 7] = 0.5, 0.6, 0.9
    probs = np.concatenate([probs, tie])
    inputs = []
    for i in range(probs.shape[1]):
        tensor = httpclient.InferInput(f"p{i}", [len(probs), 10], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(probs[:, i]), binary_data=True)
        inputs.append(tensor)
    vote = client.infer("vote", inputs)
    label = vote.as_numpy("label").reshape(-1)
    assert (label[:-1] == ensemble.as_numpy("label").reshape(-1)).all()
    assert (vote.as_numpy("votes")[:-1] == ensemble.as_numpy("votes")).all()
    assert label[-1] == 7 and vote.as_numpy("tie_broken").reshape(-1)[-1]


# ---- every field fuzzed by type and shape ---------------------------------------------------

leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6))
any_json = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def either(good):
    """The field as a client should send it, or anything JSON can hold."""
    return st.one_of(good, any_json)


number = st.one_of(st.floats(), st.integers(), st.booleans(), st.text(max_size=3))
tensor = st.fixed_dictionaries(
    {
        "name": either(st.just("image")),
        "datatype": either(st.sampled_from(["FP32", "INT64", "BOOL", "FP16"])),
        "shape": either(
            st.one_of(
                st.just([1, 1, 28, 28]),
                st.lists(st.one_of(st.integers(-2, 300), st.booleans(), number), max_size=5),
            )
        ),
    },
    optional={
        "data": either(
            st.one_of(
                st.builds(lambda v, n: [v] * n, number, st.sampled_from([783, 784, 785])),
                st.lists(st.lists(number, max_size=3), max_size=3),
            )
        ),
        "parameters": either(
            st.fixed_dictionaries({"binary_data_size": either(st.sampled_from([3136, 3135]))})
        ),
    },
)
output = st.fixed_dictionaries(
    {"name": either(st.sampled_from(["label", "votes", "probabilities", "probabilities_0"]))},
    optional={"parameters": either(st.fixed_dictionaries({"binary_data": any_json}))},
)
request_body = st.fixed_dictionaries(
    {"inputs": either(st.lists(tensor, min_size=1, max_size=2))},
    optional={
        "outputs": either(st.lists(output, max_size=3)),
        "parameters": either(st.fixed_dictionaries({"binary_data_output": any_json})),
        "id": any_json,
    },
)
header_text = st.text(st.characters(max_codepoint=255, blacklist_categories=("Cc",)), max_size=6)


@pytest.fixture(scope="module")
def app_client(bundle):
    from server import create_app
    from server.config import ServerConfig

    return create_app(ServerConfig(artifacts=bundle, max_batch=256)).test_client()


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.sampled_from(["ensemble", "vote", "lenet5-vote", "lenet5-relu-adam", "nope"]),
    request_body,
    st.one_of(st.none(), st.binary(max_size=64), st.just(bytes(3136))),
    st.one_of(st.none(), st.just("exact"), header_text),
)
def test_any_v2_request_is_answered_without_a_5xx(app_client, model, payload, tail, length):
    head = json.dumps(payload).encode()  # NaN and Infinity included, as a client may send them
    headers = {}
    if tail is not None:
        headers[HEADER_LENGTH] = str(len(head)) if length in (None, "exact") else length
    r = app_client.post(f"/v2/models/{model}/infer", data=head + (tail or b""), headers=headers)
    assert r.status_code < 500, (r.status_code, r.data[:300])
    if r.status_code == 200:
        size = int(r.headers.get(HEADER_LENGTH, len(r.data)))
        json.loads(r.data[:size], parse_constant=_no_constants)  # strict JSON: no NaN tokens
    else:
        assert set(r.get_json()) == {"error", "code"}
