"""python -m server.predict: the answer /predict gives, for each file, without a server."""

import json
import subprocess
from pathlib import Path

import requests

from tests.live import ROOT, run

EXAMPLES = sorted((ROOT / "examples").iterdir())


def offline(*args: str) -> subprocess.CompletedProcess:
    return run("server.predict", *args, timeout=120)


def test_each_file_gets_the_answer_of_predict(shared_server):
    out = offline(*(str(p) for p in EXAMPLES), "--include-image")
    lines = out.stdout.splitlines()
    assert len(lines) == len(EXAMPLES), out.stderr
    for path, line in zip(EXAMPLES, lines, strict=True):
        with path.open("rb") as f:
            live = requests.post(
                shared_server.url + "/predict?include_image=1", files={"image": f}, timeout=30
            )
        assert json.loads(line) == live.json(), path.name
    # notes.txt is refused, as /predict refuses it: the exit status says so.
    assert out.returncode == 1


def test_all_answered_is_exit_0_and_a_missing_file_is_a_line_of_its_own():
    digits = [str(p) for p in EXAMPLES if p.name.startswith("mnist-")]
    out = offline(*digits)
    assert out.returncode == 0
    assert [json.loads(line)["label"] for line in out.stdout.splitlines()] == [
        int(Path(p).stem.split("-")[1]) for p in digits
    ]
    out = offline(digits[0], "no/such/file.png", digits[1])
    first, missing, last = (json.loads(line) for line in out.stdout.splitlines())
    assert "label" in first and "label" in last and missing["code"] == "no_such_file"
    assert out.returncode == 1


def test_a_broken_bundle_is_exit_2(tmp_path):
    out = offline("--artifacts", str(tmp_path), str(EXAMPLES[0]))
    assert out.returncode == 2 and "manifest.json not found" in out.stderr
