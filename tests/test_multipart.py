"""server/multipart.py reads the plain bodies clients send, and agrees with werkzeug on every body
it reads (anything else is left to werkzeug)."""

import io

import requests
import werkzeug.test
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.wrappers import Request

from server.multipart import file_parts

BOUNDARY = "b7d9c1a0e4f24a4e8a0b5d2f9c3e6a1b"


def werkzeug_images(body: bytes, boundary: str) -> list[bytes] | Exception:
    env = werkzeug.test.EnvironBuilder(
        method="POST",
        input_stream=io.BytesIO(body),
        content_length=len(body),
        content_type=f"multipart/form-data; boundary={boundary}",
    ).get_environ()
    try:
        return [f.read() for f in Request(env).files.getlist("image")]
    except Exception as e:  # werkzeug refuses the body
        return e


part = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["image"] * 8 + ["Image", "img", 'im"age']),
        "filename": st.one_of(st.just("digit.png"), st.text(max_size=12), st.none()),
        "ctype": st.one_of(st.none(), st.sampled_from(["image/png", "text/plain", ""])),
        "content": st.binary(max_size=64),
        "header_case": st.sampled_from(
            ["Content-Disposition", "content-disposition", "CONTENT-DISPOSITION"]
        ),
        "extra_header": st.sampled_from(
            [None] * 8 + ["X-Foo: 1", "Content-Transfer-Encoding: 7bit"]
        ),
    }
)


def build(parts: list[dict], preamble: bytes, closing: bytes, newline: bytes) -> bytes:
    out = preamble
    for p in parts:
        disposition = f'form-data; name="{p["name"]}"'
        if p["filename"] is not None:
            disposition += f'; filename="{p["filename"]}"'
        lines = [f"--{BOUNDARY}", f"{p['header_case']}: {disposition}"]
        if p["ctype"] is not None:
            lines.append(f"Content-Type: {p['ctype']}")
        if p["extra_header"]:
            lines.append(p["extra_header"])
        out += newline.join(x.encode() for x in lines) + newline + newline + p["content"] + newline
    return out + f"--{BOUNDARY}".encode() + closing


@settings(max_examples=600, deadline=None)
@given(
    parts=st.lists(part, min_size=0, max_size=3),
    preamble=st.sampled_from([b"", b"\r\n"] * 3 + [b"junk\r\n"]),
    closing=st.sampled_from([b"--", b"--\r\n"] * 3 + [b"--\r\nepilogue", b"", b"\r\n"]),
    newline=st.sampled_from([b"\r\n"] * 6 + [b"\n"]),
)
def test_agrees_with_werkzeug_whenever_it_reads_a_body(parts, preamble, closing, newline):
    body = build(parts, preamble, closing, newline)
    fast = file_parts(body, BOUNDARY, max_parts=3, field="image")
    if fast is not None:
        assert werkzeug_images(body, BOUNDARY) == fast


@settings(max_examples=200, deadline=None)
@given(contents=st.lists(st.binary(max_size=64), min_size=1, max_size=3))
def test_reads_every_plain_body_as_werkzeug_does(contents):
    # The agreement above holds for any body file_parts declines; on plain ones it must read.
    plain = {
        "name": "image",
        "filename": "digit.png",
        "ctype": "image/png",
        "header_case": "Content-Disposition",
        "extra_header": None,
    }
    body = build([{**plain, "content": c} for c in contents], b"", b"--\r\n", b"\r\n")
    assert file_parts(body, BOUNDARY, max_parts=3, field="image") == contents
    assert werkzeug_images(body, BOUNDARY) == contents


def test_reads_what_clients_send():
    files = [
        ("image", (f"{i}.png", bytes([i]) * 50 + b"\r\n--x\r\n", "image/png")) for i in range(3)
    ]
    prepared = requests.Request("POST", "http://127.0.0.1/p", files=files).prepare()
    boundary = prepared.headers["Content-Type"].split("boundary=")[1]
    expected = [f[1][1] for f in files]
    assert file_parts(prepared.body, boundary, max_parts=3, field="image") == expected
    # werkzeug's test client (and curl) start with a blank line and quote the boundary.
    env = werkzeug.test.EnvironBuilder(
        method="POST", data={"image": [(io.BytesIO(c), "d.png") for c in expected]}
    ).get_environ()
    boundary = env["CONTENT_TYPE"].split("boundary=")[1].strip('"')
    assert file_parts(env["wsgi.input"].read(), boundary, max_parts=3, field="image") == expected


def test_leaves_other_bodies_to_werkzeug():
    ok = build(
        [
            {
                "name": "image",
                "filename": "a.png",
                "ctype": "image/png",
                "content": b"x",
                "header_case": "Content-Disposition",
                "extra_header": None,
            }
        ],
        b"",
        b"--\r\n",
        b"\r\n",
    )
    assert file_parts(ok, BOUNDARY, max_parts=1, field="image") == [b"x"]
    assert (
        file_parts(ok, BOUNDARY, max_parts=0, field="image") is None
    )  # werkzeug words the part limit
    assert file_parts(ok.replace(b"\r\n", b"\n"), BOUNDARY, max_parts=1, field="image") is None
    assert (
        file_parts(
            ok.replace(b'name="image"', b'name="other"'), BOUNDARY, max_parts=1, field="image"
        )
        is None
    )
    assert file_parts(ok, "other-boundary", max_parts=1, field="image") is None
    assert file_parts(ok, "", max_parts=1, field="image") is None
