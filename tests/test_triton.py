"""The Triton model repository from `python -m export.triton`: every config.pbtxt parsed with
Triton's own model-config protobuf and checked against its ONNX file, then the repository
loaded into a real tritonserver (2.51, from the nvidia-pytriton wheel) and asked, through
tritonclient, the same questions our server answers.

What this does not prove: the real onnxruntime backend's own checks and kernels. That binary
has only the python backend, so each ONNX model is served by tests/triton_python_model.py,
which runs the same file with onnxruntime after checking the config against it.
"""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.live import ROOT, run
from tests.uploads import predict_labels

TYPES = {
    onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
    onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64,
    onnx.TensorProto.BOOL: model_config_pb2.TYPE_BOOL,
}


@pytest.fixture(scope="module")
def repository(bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "model_repository"
    args = ["--artifacts", str(bundle), "--out", str(out), "--kind", "cpu", "--instances", "1"]
    proc = run("export.triton", *args)
    assert proc.returncode == 0, proc.stderr
    return out


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def onnx_dims(value) -> list[int]:
    return [
        d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
    ]


def test_every_config_parses_and_matches_its_onnx_file(repository, bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    expected = {m["name"] for m in manifest["models"]} | {"ensemble", "vote", "lenet5-vote"}
    assert {p.name for p in repository.iterdir()} == expected
    for folder in repository.iterdir():
        config = parse(folder / "config.pbtxt")
        assert config.name == folder.name and config.max_batch_size == 256
        if config.platform == "ensemble":
            continue
        assert config.platform == "onnxruntime_onnx"
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        graph = onnx.load(folder / "1" / "model.onnx").graph
        for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
            assert [d.name for d in declared] == [a.name for a in actual]
            for d, a in zip(declared, actual, strict=True):
                assert d.data_type == TYPES[a.type.tensor_type.elem_type], d.name
                dims = list(d.reshape.shape) if d.HasField("reshape") else list(d.dims)
                assert dims == onnx_dims(a)[1:], d.name  # the batch axis is Triton's
    shipped = {m["file"]: m["sha256"] for m in manifest["models"]}
    for name, digest in shipped.items():
        data = (repository / Path(name).stem / "1" / "model.onnx").read_bytes()
        assert __import__("hashlib").sha256(data).hexdigest() == digest


def test_pipeline_wires_each_model_into_the_vote(repository, bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    config = parse(repository / "lenet5-vote" / "config.pbtxt")
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [m["name"] for m in manifest["models"]] + ["vote"]
    vote_inputs = parse(repository / "vote" / "config.pbtxt").input
    assert dict(steps[-1].input_map) == {
        v.name: f"probabilities_{i}" for i, v in enumerate(vote_inputs)
    }
    assert [o.name for o in config.output][:3] == ["label", "votes", "tie_broken"]


# ---- a real tritonserver ---------------------------------------------------------------------


def _triton_venv() -> tuple[Path, Path, str]:
    """nvidia-pytriton's package folder, the venv's bin folder and its Python's X.Y.

    It lives in its own venv (scripts/test.sh makes it from requirements-triton.txt) because
    it pins numpy<2; only its binaries are used, never imported here.
    """
    venv = Path(os.environ.get("TRITON_VENV", ROOT / ".venv-triton"))
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"no Triton virtualenv at {venv}: scripts/test.sh builds it (or set TRITON_VENV to "
            "a virtualenv made from requirements-triton.txt)"
        )
    probe = (
        "import importlib.util, sys;"
        "print(importlib.util.find_spec('pytriton').submodule_search_locations[0]);"
        "print(f'{sys.version_info.major}.{sys.version_info.minor}')"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    package, version = out.stdout.split()
    return Path(package), python.parent, version


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def triton(repository, tmp_path_factory):
    package, bin_dir, version = _triton_venv()
    binary = package / "tritonserver" / "bin" / "tritonserver"
    libs = package.parent / "nvidia_pytriton.libs"
    stubs = package / "tritonserver" / "python_backend_stubs"
    stub = stubs / version / "triton_python_backend_stub"
    if not binary.exists() or not stub.exists():
        pytest.fail(f"nvidia-pytriton's tritonserver or its Python stub is missing ({package})")
    work = tmp_path_factory.mktemp("tritonserver")
    backend = work / "backends" / "python"
    shutil.copytree(package / "tritonserver" / "backends" / "python", backend)
    shutil.copy(stub, backend / "triton_python_backend_stub")
    # The same repository, each ONNX model served by the python stand-in.
    shadow = work / "repository"
    shutil.copytree(repository, shadow)
    for folder in shadow.iterdir():
        config = (folder / "config.pbtxt").read_text()
        if 'platform: "onnxruntime_onnx"' in config:
            (folder / "config.pbtxt").write_text(
                config.replace('platform: "onnxruntime_onnx"', 'backend: "python"')
            )
            shutil.copy(ROOT / "tests" / "triton_python_model.py", folder / "1" / "model.py")
    port = _free_port()
    # As pytriton does: the stub finds its Python (and numpy, onnxruntime) through PATH.
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    log = open(work / "tritonserver.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(binary),
            f"--model-repository={shadow}",
            f"--backend-directory={work / 'backends'}",
            "--http-address=127.0.0.1",
            f"--http-port={port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--strict-model-config=true",
            "--exit-on-error=true",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=work,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        log.close()
        pytest.fail(
            "tritonserver did not become ready:\n" + (work / "tritonserver.log").read_text()[-4000:]
        )
    yield url.removeprefix("http://")
    proc.terminate()
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    log.close()
    assert code == 0, (work / "tritonserver.log").read_text()[-4000:]


@pytest.fixture(scope="module")
def ours(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def digits(mnist_test, bundle):
    images, labels = mnist_test
    spec = json.loads((bundle / "manifest.json").read_text())["input"]
    x = ((images[:100].astype(np.float32) / 255.0 - spec["mean"]) / spec["std"])[:, None]
    return x.astype(np.float32), labels[:100], images[:100]


def _infer(url: str, model: str, x: np.ndarray, outputs: list[str] | None = None):
    # lenet5-vote is asked for all its outputs (outputs=None): Triton 2.47-2.51 deadlocks
    # when a client asks an ensemble for only some of them (triton-inference-server #7482).
    client = httpclient.InferenceServerClient(url=url)
    tensor = httpclient.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    requested = [httpclient.InferRequestedOutput(o) for o in outputs] if outputs else None
    return client.infer(model, [tensor], outputs=requested)


def test_triton_loads_every_model_of_the_repository(triton, repository):
    client = httpclient.InferenceServerClient(url=triton)
    assert client.is_server_live() and client.is_server_ready()
    for folder in repository.iterdir():
        assert client.is_model_ready(folder.name), folder.name


def test_our_server_gives_the_model_metadata_triton_gives(triton, ours, bundle):
    theirs = httpclient.InferenceServerClient(url=triton)
    mine = httpclient.InferenceServerClient(url=ours.url.removeprefix("http://"))
    members = json.loads((bundle / "manifest.json").read_text())["ensemble"]["members"]
    for name in [*members, "ensemble", "lenet5-vote"]:
        a, b = theirs.get_model_metadata(name), mine.get_model_metadata(name)
        for side in ("inputs", "outputs"):
            assert a[side] == b[side], (name, side, a[side], b[side])


@pytest.mark.parametrize("model", ["ensemble", "lenet5-vote"])
def test_triton_labels_equal_our_predict_labels(triton, ours, digits, model):
    x, labels, images = digits
    result = _infer(triton, model, x)
    triton_labels = result.as_numpy("label").reshape(-1)
    assert triton_labels.tolist() == predict_labels(ours.url, images)
    assert (triton_labels == labels).mean() >= 0.98
    assert result.as_numpy("votes").reshape(100, 10).sum(1).tolist() == [3] * 100


def test_dynamic_batching_keeps_answers_apart(triton, digits):
    # Many small concurrent requests: Triton merges them into batches and must hand every
    # client its own rows back.
    from concurrent.futures import ThreadPoolExecutor

    x, _, _ = digits

    def one(i: int) -> int:
        return int(_infer(triton, "lenet5-vote", x[i : i + 1]).as_numpy("label").reshape(-1)[0])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(100)))
    single = _infer(triton, "lenet5-vote", x).as_numpy("label").reshape(-1)
    assert got == single.tolist()
