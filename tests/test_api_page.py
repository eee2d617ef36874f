"""The API page at /docs: everything /openapi.json says, for a person to read, and curl
commands that work as written."""

import re
import shlex
import subprocess
from html import unescape

import pytest
import requests

from tests.live import ROOT


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def page(server) -> str:
    r = requests.get(server.url + "/docs", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    return r.text


@pytest.fixture(scope="module")
def doc(server) -> dict:
    return requests.get(server.url + "/openapi.json", timeout=30).json()


def _section(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    return page[start : page.index("</section>", start)]


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


def _words(text: str) -> str:
    """Text as the page shows it: `code` spans set as code, whitespace as one space."""
    return " ".join(text.replace("`", "").split())


def test_every_route_of_the_document_has_its_section(page, doc):
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            anchor = f"{method.upper()}-{re.sub(r'[^a-z0-9]+', '-', path.lower()).strip('-')}"
            section = _text(_section(page, anchor))
            assert path in section and _words(op["summary"]) in _words(section)
            for param in op.get("parameters", []):
                assert param["name"] in section


def test_predict_shows_its_modes_and_every_error_code(page, doc):
    op = doc["paths"]["/predict"]["post"]
    section = _text(_section(page, "POST-predict"))
    mode = next(p for p in op["parameters"] if p["name"] == "mode")
    for value in mode["schema"]["enum"]:
        assert f'"{value}"' in section
    for status, answer in op["responses"].items():
        assert status in section
        for code in re.findall(r"`(\w+)`:", answer["description"]):
            assert code in section


def test_every_answer_field_is_described(page, doc):
    for name, schema in doc["components"]["schemas"].items():
        section = _text(_section(page, f"schema-{name}"))
        for field, spec in schema["properties"].items():
            assert field in section
            if "description" in spec:
                assert _words(spec["description"]) in _words(section)


def test_every_curl_command_works_as_written(page, server):
    commands = [_text(c) for c in re.findall(r"<code>(curl [^<]*)</code>", page, flags=re.DOTALL)]
    assert any("mode=number" in c for c in commands)
    assert len(commands) >= 10
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "curl" and server.url in command
        # -f: an answer of 400 or more fails the command, as it would fail its reader.
        done = subprocess.run([argv[0], "-f", *argv[1:]], cwd=ROOT, capture_output=True, timeout=30)
        assert done.returncode == 0, (command, done.stdout[:300], done.stderr[:300])
    number = next(c for c in commands if "mode=number" in c)
    out = subprocess.run(shlex.split(number), cwd=ROOT, capture_output=True, timeout=30)
    assert b'"number":"721"' in out.stdout


def test_the_page_loads_only_its_own_stylesheet(page):
    fetched = re.findall(r'<(?:link|script|img|iframe)\b[^>]*?(?:src|href)="([^"]*)"', page)
    assert fetched == ["/static/favicon.svg", "/static/style.css"]
