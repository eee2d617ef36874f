"""Every command line of README.md works as written, against a live server on its examples."""

import json
import re
import shlex
import subprocess

import pytest

from tests.live import ROOT, run

README = (ROOT / "README.md").read_text()
DOCUMENTED = "http://127.0.0.1:8000"


def commands(prefix: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    return [line for b in blocks for line in b.splitlines() if line.startswith(prefix)]


def expected(path: str):
    """What an example file must get: `mnist-7.png` the digit 7, `number-721.png` the number
    "721", `notes.txt` a 415."""
    m = re.fullmatch(r"examples/([a-z]+)-(\d+)\.\w+", path)
    if not m:
        return "unsupported_format"
    return m.group(2) if m.group(1) == "number" else int(m.group(2))


def outcome(answer: dict):
    return next(answer[k] for k in ("number", "label", "code") if k in answer)


def test_the_guide_stays_short_and_names_only_files_that_ship():
    assert len(README.splitlines()) <= 250
    named = set(re.findall(r"examples/[\w.-]+", README))
    assert named and all((ROOT / p).is_file() for p in named), named


@pytest.mark.parametrize("line", commands("curl "))
def test_each_curl_line_works_as_written(shared_server, line):
    out = subprocess.run(
        ["bash", "-c", line.replace(DOCUMENTED, shared_server.url)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    files = [w.split("@", 1)[1] for w in shlex.split(line) if "@examples/" in w]
    if len(files) > 1:
        assert [outcome(r) for r in answer["results"]] == [expected(f) for f in files]
    elif files:
        assert outcome(answer) == expected(files[0])
        if "include_image=true" in line:
            assert answer["image"].startswith("data:image/png;base64,")
    elif line.endswith("/readyz"):
        assert answer["ready"] is True
    else:
        assert answer["name"] == line.rsplit("/", 1)[1]


@pytest.mark.parametrize("line", commands("python -m server.predict"))
def test_the_offline_command_works_as_written(line):
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "server.predict"]
    out = run("server.predict", *argv[3:], timeout=120)
    files = argv[3:]
    answers = [json.loads(x) for x in out.stdout.splitlines()]
    assert [outcome(a) for a in answers] == [expected(f) for f in files]
    assert out.returncode == (1 if "examples/notes.txt" in files else 0)
