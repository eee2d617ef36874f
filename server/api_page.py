"""The OpenAPI document (server/openapi.py) as a page a person reads: each route with its
parameters, body, answers, error codes and a curl command, then each answer type's fields.

Everything shown is read from the document /openapi.json serves; nothing here restates a
route, a field or a code. The page is rendered on the server and loads nothing but the
page's own stylesheet.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from markupsafe import Markup, escape

# Files in examples/ that the curl commands send; they run as written from the repository's
# root (README.md's examples use the same files).
SAMPLE = "examples/mnist-7.png"
SAMPLES = ("examples/mnist-2.png", "examples/mnist-4.png")
RAW_SAMPLE = ("examples/photo-5.jpg", "image/jpeg")
# A query parameter's value that wants another file to show what it does.
SAMPLE_FOR = {("mode", "number"): "examples/number-721.png"}
ERROR_LINE = re.compile(r"`([^`]+)`: (.*)")


@dataclass
class Param:
    name: str
    where: str
    type: Markup
    required: bool
    description: Markup


@dataclass
class Answer:
    status: str
    description: Markup
    media: list[tuple[str, Markup]]  # media type, its schema


@dataclass
class Refusal:
    status: str
    code: str
    description: Markup


@dataclass
class Operation:
    method: str
    path: str
    summary: Markup
    params: list[Param] = field(default_factory=list)
    body: Markup | None = None
    body_media: list[tuple[str, Markup]] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"{self.method}-{re.sub(r'[^a-z0-9]+', '-', self.path.lower()).strip('-')}"


@dataclass
class Field:
    name: str
    type: Markup
    description: Markup


@dataclass
class Schema:
    name: str
    description: Markup
    fields: list[Field]


def inline(text: str) -> Markup:
    """The document's text with its `code` spans and links; everything else escaped."""
    out = []
    for i, part in enumerate(re.split(r"`([^`]*)`", text)):
        if i % 2:
            out.append(Markup("<code>%s</code>") % part)
            continue
        for j, piece in enumerate(re.split(r"(https?://[^\s)]+)", part)):
            link = Markup('<a href="%s" rel="noreferrer">%s</a>')
            out.append(link % (piece, piece) if j % 2 else escape(piece))
    return Markup("").join(out)


def type_of(s: dict) -> Markup:
    """A JSON schema as a short phrase: 'array of Prediction', 'integer 0 to 9', ..."""
    if "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[1]
        return Markup('<a href="#schema-%s">%s</a>') % (name, name)
    for key in ("oneOf", "anyOf", "allOf"):
        if key in s:
            return Markup(" or ").join(type_of(x) for x in s[key])
    if "const" in s:
        return Markup("<code>%s</code>") % json.dumps(s["const"])
    if "enum" in s:
        choices = Markup(", ").join(Markup("<code>%s</code>") % json.dumps(v) for v in s["enum"])
        if "default" in s:
            choices += Markup("; default <code>%s</code>") % json.dumps(s["default"])
        return Markup("one of ") + choices
    t = s.get("type")
    if t == "object" and s.get("properties"):
        return Markup("fields ") + Markup(", ").join(
            Markup("<code>%s</code>: ") % name + type_of(p) for name, p in s["properties"].items()
        )
    if t == "array":
        n = s.get("minItems")
        count = f"{n} \u00d7 " if n is not None and n == s.get("maxItems") else ""
        most = f" (at most {s['maxItems']:,})" if not count and "maxItems" in s else ""
        return escape(f"array{most} of {count}") + type_of(s.get("items", {}))
    if t is None:
        return Markup("any")
    text = t
    if "format" in s:
        text += f" ({s['format']})"
    if "minimum" in s and "maximum" in s:
        text += f" {s['minimum']} to {s['maximum']}"
    if "default" in s:
        text += f", default {json.dumps(s['default'])}"
    return escape(text)


def _media(content: dict) -> list[tuple[str, Markup]]:
    return [(media, type_of(c.get("schema", {}))) for media, c in content.items()]


def _example_value(s: dict) -> str | None:
    """A value worth showing for a query parameter: true for a flag, the first value that is
    not the default for a choice."""
    if s.get("type") == "boolean":
        return "true"
    choices = [v for v in s.get("enum", []) if v != s.get("default")]
    return str(choices[0]) if choices else None


def _path_example(path: str, params: list[dict]) -> str:
    for p in params:
        if p["in"] != "path":
            continue
        s = p.get("schema", {})
        values = [s["const"]] if "const" in s else s.get("enum", [])
        value = "ensemble" if "ensemble" in values else (values[0] if values else p["name"])
        path = path.replace("{" + p["name"] + "}", str(value))
    return path


def _examples(base: str, method: str, path: str, op: dict) -> list[str]:
    """curl commands that work as written against this server, from the repository's root."""
    params = op.get("parameters", [])
    url = base + _path_example(path, params)
    if method == "get":
        return [f"curl -s {shlex.quote(url)}"]
    content = op.get("requestBody", {}).get("content", {})
    form = content.get("multipart/form-data", {}).get("schema", {})
    files = [name for name, s in form.get("properties", {}).items() if s.get("type") == "array"]
    if not files:
        return []  # a body too long for one line (the v2 protocol's tensors)
    name = files[0]
    out = [f"curl -s -F {name}=@{SAMPLE} {shlex.quote(url)}"]
    if any(m.startswith("image/") for m in content):
        raw, media = RAW_SAMPLE
        out.append(f"curl -s --data-binary @{raw} -H 'Content-Type: {media}' {shlex.quote(url)}")
    batch = " ".join(f"-F {name}=@{f}" for f in SAMPLES)
    out.append(f"curl -s {batch} {shlex.quote(url)}")
    for p in params:
        value = _example_value(p.get("schema", {})) if p["in"] == "query" else None
        if value is not None:
            query = shlex.quote(f"{url}?{p['name']}={value}")
            sample = SAMPLE_FOR.get((p["name"], value), SAMPLE)
            out.append(f"curl -s -F {name}=@{sample} {query}")
    return out


def operations(doc: dict, base: str) -> list[Operation]:
    out = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            o = Operation(method.upper(), path, inline(op.get("summary", "")))
            for p in op.get("parameters", []):
                o.params.append(
                    Param(
                        p["name"],
                        p["in"],
                        type_of(p.get("schema", {})),
                        p.get("required", False),
                        inline(p.get("description", "")),
                    )
                )
            body = op.get("requestBody")
            if body:
                o.body = inline(body.get("description", ""))
                o.body_media = _media(body.get("content", {}))
            for status, r in op.get("responses", {}).items():
                schema = r.get("content", {}).get("application/json", {}).get("schema", {})
                codes = [ERROR_LINE.fullmatch(line) for line in r["description"].split("\n\n")]
                if status >= "400" and "allOf" in schema and all(codes):
                    o.refusals += [Refusal(status, m[1], inline(m[2])) for m in codes if m]
                else:
                    media = [
                        (m, t if t != "any" else Markup("<code>%s</code>") % m)
                        for m, t in _media(r.get("content", {}))
                        if t != "any" or m != "application/json"
                    ]
                    o.answers.append(Answer(status, inline(r["description"]), media))
            o.examples = _examples(base, method, path, op)
            out.append(o)
    return out


def schemas(doc: dict) -> list[Schema]:
    out = []
    for name, s in doc.get("components", {}).get("schemas", {}).items():
        fields = [
            Field(f, type_of(p), inline(p.get("description", "")))
            for f, p in s.get("properties", {}).items()
        ]
        out.append(Schema(name, inline(s.get("description", "")), fields))
    return out
