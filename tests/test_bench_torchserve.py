"""Issue #20's TorchServe baseline (bench/torchserve/) serves what our server serves: the same
models and vote, fed the same tensor. Runs without TorchServe; the one test that starts it
runs only where its virtualenv is set up."""

from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime as ort
import pytest
import requests
import torch

from bench.torchserve import digit_codec
from bench.torchserve import server as torchserve
from bench.torchserve.ensemble import build_ensemble, save_ensemble
from tests.uploads import png
from training.train import normalise


@pytest.fixture(scope="module")
def spec(bundle) -> digit_codec.InputSpec:
    return digit_codec.InputSpec.from_manifest(json.loads((bundle / "manifest.json").read_text()))


@pytest.fixture(scope="module")
def ensemble(bundle):
    return build_ensemble(bundle)


@pytest.fixture(scope="module")
def digits(bundle, mnist_test) -> np.ndarray:
    """The golden digits (the first of each class and those the models split on) and the
    first 240 MNIST test digits: uint8 [N, 28, 28]."""
    golden = np.load(bundle / "golden.npz")["pixels"]
    return np.concatenate([golden, mnist_test[0][:240]])


def onnx_outputs(bundle, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(bundle / "ensemble.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})


def test_torchscript_ensemble_gives_the_shipped_graphs_votes_and_probabilities(
    bundle, ensemble, spec, digits
):
    x = normalise(torch.from_numpy(digits).unsqueeze(1), spec.mean, spec.std)
    expected = onnx_outputs(bundle, x.numpy())
    # One big batch and TorchServe's sizes (up to 8): the trace must not fix the batch size.
    for size in (len(x), 8, 1):
        with torch.no_grad():
            got = [t.numpy() for t in ensemble(x[:size])]
        label, votes, tie_broken, probabilities = got
        assert np.array_equal(label, expected[0][:size])
        assert np.array_equal(votes, expected[1][:size])
        assert np.array_equal(tie_broken, expected[2][:size])
        assert np.abs(probabilities - expected[3][:size]).max() < 1e-5


def test_models_split_on_some_of_the_digits_compared(bundle, spec, digits):
    # Otherwise the parity above would not cover the vote's majority rule.
    x = normalise(torch.from_numpy(digits).unsqueeze(1), spec.mean, spec.std).numpy()
    probabilities = onnx_outputs(bundle, x)[3]
    assert (probabilities.argmax(2) != probabilities.argmax(2)[:, :1]).any(1).sum() >= 2


# TorchServe 0.12's BaseHandler loads TorchScript, which torch now deprecates: what the
# benchmark's contender does is what this checks.
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_saved_file_loads_as_torchserve_loads_it(bundle, tmp_path, spec, digits):
    # BaseHandler loads a .pt serialized file with torch.jit.load, without this repository.
    model = torch.jit.load(str(save_ensemble(bundle, tmp_path / "ensemble.pt")))
    x = normalise(torch.from_numpy(digits[:16]).unsqueeze(1), spec.mean, spec.std)
    with torch.no_grad():
        label, _, _, probabilities = model(x)
    expected = onnx_outputs(bundle, x.numpy())
    assert np.array_equal(label.numpy(), expected[0])
    assert np.abs(probabilities.numpy() - expected[3]).max() < 1e-5


def test_raw_and_multipart_pngs_become_the_tensor_training_saw(spec, mnist_test):
    images = mnist_test[0][:3]
    # TorchServe names a raw body "body" and a multipart field by its name.
    requests_ = [
        {"body": bytearray(png(images[0]))},
        {"image": png(images[1])},
        {"data": png(images[2])},
    ]
    batch = digit_codec.to_batch(requests_, spec)
    expected = normalise(torch.from_numpy(images).unsqueeze(1), spec.mean, spec.std)
    assert batch.shape == (3, 1, 28, 28)
    assert torch.equal(batch, expected)


def test_request_without_an_image_is_refused(spec):
    with pytest.raises(ValueError, match="no image"):
        digit_codec.to_batch([{"other": b"x"}], spec)


def test_answers_carry_the_vote_and_each_models_probabilities(ensemble, spec, mnist_test):
    images, truth = mnist_test[0][:8], mnist_test[1][:8]
    batch = digit_codec.to_batch([{"body": png(img)} for img in images], spec)
    with torch.no_grad():
        answers = digit_codec.answers(*ensemble(batch))
    assert [a["label"] for a in answers] == truth.tolist()
    for a in answers:
        assert sum(a["votes"]) == 3 and a["votes"][a["label"]] >= 2
        assert len(a["models"]) == 3
        assert all(abs(sum(m["probabilities"]) - 1) < 1e-4 for m in a["models"])
        json.dumps(a)  # what the handler sends


def test_config_listens_on_loopback_with_issue_20s_tuning(tmp_path):
    names = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
    ports = torchserve.free_ports(names)
    assert len(set(ports.values())) == len(names)
    text = torchserve.config_properties(ports, tmp_path, torchserve.Tuning())
    props = dict(line.split("=", 1) for line in text.splitlines())
    for key in ("inference_address", "management_address", "metrics_address"):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", props[key])
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["disable_token_authorization"] == "true"
    model = json.loads(props["models"])[torchserve.MODEL]["1.0"]
    assert (model["minWorkers"], model["maxWorkers"]) == (2, 2)
    assert (model["batchSize"], model["maxBatchDelay"]) == (8, 5)


def test_venv_is_the_flag_then_the_variable_then_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(torchserve.VENV_VARIABLE, str(tmp_path / "env"))
    assert torchserve.venv_path(tmp_path / "flag") == tmp_path / "flag"
    assert torchserve.venv_path() == tmp_path / "env"
    assert not torchserve.installed(tmp_path / "env")
    monkeypatch.delenv(torchserve.VENV_VARIABLE)
    assert torchserve.venv_path() == torchserve.DEFAULT_VENV


@pytest.mark.slow
@pytest.mark.skipif(
    not torchserve.installed(torchserve.venv_path()),
    reason=f"no TorchServe virtualenv ({torchserve.SETUP})",
)
def test_running_torchserve_answers_like_the_seed_and_leaves_no_process(bundle, mnist_test):
    image, truth = mnist_test[0][0], int(mnist_test[1][0])
    ts = torchserve.TorchServe(bundle, torchserve.venv_path())
    try:
        pgid = ts.proc.pid
        raw = requests.post(
            ts.predict_url, data=png(image), headers={"Content-Type": "image/png"}, timeout=30
        )
        form = requests.post(
            ts.predict_url, files={"image": ("d.png", png(image), "image/png")}, timeout=30
        )
    finally:
        ts.stop()
    assert raw.status_code == form.status_code == 200, raw.text
    assert raw.headers["Content-Type"].startswith("application/json")
    assert raw.json() == form.json()
    assert raw.json()["label"] == truth
    assert set(raw.json()) == {"label", "votes", "tie_broken", "models"}
    assert torchserve.group_alive(pgid) == []
