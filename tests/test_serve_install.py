"""A virtualenv with requirements-serve.txt alone runs the server: no torch anywhere.

The server runs from a folder holding exactly what deploy/Dockerfile copies into the image,
so the container recipe's file list is checked too, and it must leave that folder untouched
(the image's user cannot write there). There is no Docker engine on the build machines: the
image itself is not built here.
"""

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.live import ROOT, LiveServer


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY in deploy/Dockerfile."""
    copies = []
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            copies.append((sources, dest))
    return copies


def stage_like_the_image(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)  # the Dockerfile's WORKDIR
    for sources, dest in dockerfile_copies():
        for pattern in sources:
            for src in sorted(ROOT.glob(pattern)):
                out = target / dest
                if src.is_dir():
                    shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    out = out / src.name if dest.endswith("/") or out == target else out
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, out)


def serve_venv() -> Path:
    """The virtualenv of requirements-serve.txt alone that scripts/test.sh (and serve.sh)
    build before the tests run: the tests themselves install nothing."""
    venv = Path(os.environ.get("SERVE_VENV") or ROOT / ".venv-serve")
    if not (venv / "bin" / "python").is_file():
        pytest.fail(
            f"no serve virtualenv at {venv}: scripts/test.sh builds it (or set SERVE_VENV to a "
            "virtualenv made from requirements-serve.txt alone)"
        )
    return venv


def test_serve_virtualenv_runs_the_image_contents_without_torch(tmp_path, mnist_test):
    venv = serve_venv()
    listed = (
        subprocess.run(
            [str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.lower()
        .replace("_", "-")
    )
    assert "torch" not in listed and "onnxruntime==" in listed
    # Exactly the pins of requirements-serve.txt, so the virtualenv is that file's alone.
    pins = {
        line.split(";")[0].strip().lower().replace("_", "-")
        for line in (ROOT / "requirements-serve.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    missing = pins - set(listed.split())
    assert not missing, f"{venv} lacks {sorted(missing)}: scripts/test.sh rebuilds it"

    app_dir = tmp_path / "app"
    stage_like_the_image(app_dir)
    assert (app_dir / "server" / "__main__.py").is_file()
    assert (app_dir / "artifacts" / "manifest.json").is_file()
    before = sorted(p.relative_to(app_dir) for p in app_dir.rglob("*"))

    server = LiveServer(
        python=str(venv / "bin/python"), cwd=app_dir, env={"PYTHONDONTWRITEBYTECODE": "1"}
    )
    try:
        buf = io.BytesIO()
        Image.fromarray(mnist_test[0][0]).save(buf, "PNG")
        r = requests.post(
            server.url + "/predict",
            data=buf.getvalue(),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["label"] == int(mnist_test[1][0])
        assert requests.get(server.url + "/", timeout=10).status_code == 200
        assert requests.get(server.url + "/static/app.js", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0
    # Nothing written next to the code: the image's user has no write access there.
    assert sorted(p.relative_to(app_dir) for p in app_dir.rglob("*")) == before


def test_container_recipe_runs_as_a_non_root_user_with_a_health_check():
    recipe = (ROOT / "deploy" / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)$", recipe, re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*readyz", recipe, re.MULTILINE | re.DOTALL)
    assert re.findall(r"pip install (-r \S+)", recipe) == ["-r requirements-serve.txt"]
