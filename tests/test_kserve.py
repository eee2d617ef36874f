"""deploy/kserve/*.yaml against the schemas they claim, and against the image they run.

Each manifest is checked twice: against the v1beta1 OpenAPI schema of KServe v0.20.0's
InferenceService CRD (copied into deploy/kserve/crd/), made strict the way the API server's
strict field validation is (a field the schema does not name is an error, where plain JSON
Schema lets it through), and its Kubernetes parts (metadata, the pod spec inlined in each
component, the container fields of a model) against the `kubernetes` client's models of
Kubernetes' own API, which forbid unknown fields too. Then deploy/kserve/digits-server.yaml
must agree with deploy/Dockerfile and with the server's flags: port, probes, user, the
bundle's path and the names.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pydantic
import pytest
import yaml
from kubernetes.client import V1Container, V1ObjectMeta, V1PodSpec

from server import create_app
from server.__main__ import parse_args
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
KSERVE = ROOT / "deploy" / "kserve"
CRD = KSERVE / "crd" / "serving.kserve.io_inferenceservices.yaml"
MANIFESTS = sorted(KSERVE.glob("*.yaml"))
COMPONENTS = ("predictor", "transformer", "explainer")


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="module")
def crd() -> dict:
    return load(CRD)


def served_version(crd: dict) -> dict:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return version


def strict(schema):
    """The schema with every object that names its fields closed to others, as Kubernetes
    prunes or (with strict field validation) rejects them; objects that keep unknown fields
    on purpose (x-kubernetes-preserve-unknown-fields) or map arbitrary keys stay open."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schema_errors(schema: dict, doc: dict) -> list[str]:
    validator = jsonschema.Draft4Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def field_names(model: type[pydantic.BaseModel]) -> set[str]:
    """The JSON names of a Kubernetes model's fields."""
    return {f.serialization_alias or name for name, f in model.model_fields.items()}


def kubernetes_errors(doc: dict, crd_schema: dict) -> list[str]:
    """The Kubernetes parts of an InferenceService, each against Kubernetes' own model."""
    parts = [("metadata", V1ObjectMeta, doc.get("metadata", {}))]
    spec_schema = crd_schema["properties"]["spec"]["properties"]
    for component in COMPONENTS:
        spec = doc.get("spec", {}).get(component)
        if spec is None:
            continue
        # A component is a pod spec with KServe's fields beside Kubernetes' own.
        pod = {k: v for k, v in spec.items() if k in field_names(V1PodSpec)}
        if pod:
            parts.append((f"spec.{component}", V1PodSpec, {"containers": [], **pod}))
        # A model is a container with KServe's fields (modelFormat, runtime, storageUri...).
        model = spec.get("model")
        if model is not None:
            model_schema = spec_schema[component]["properties"]["model"]["properties"]
            kserve_own = set(model_schema) - field_names(V1Container)
            container = {k: v for k, v in model.items() if k not in kserve_own}
            parts.append((f"spec.{component}.model", V1Container, {"name": "model", **container}))
    errors = []
    for where, model_class, value in parts:
        try:
            model_class.model_validate(value)
        except pydantic.ValidationError as e:
            errors += [f"{where}.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()]
    return errors


def all_errors(doc: dict, crd: dict) -> list[str]:
    version = served_version(crd)
    names = crd["spec"]["names"]
    errors = []
    if doc.get("apiVersion") != f"{crd['spec']['group']}/{version['name']}":
        errors.append(f"apiVersion {doc.get('apiVersion')!r}")
    if doc.get("kind") != names["kind"]:
        errors.append(f"kind {doc.get('kind')!r}")
    schema = version["schema"]["openAPIV3Schema"]
    # KServe names the Knative service and the hostnames after it: a DNS-1035 label.
    name = doc.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    return errors + schema_errors(strict(schema), doc) + kubernetes_errors(doc, schema)


def test_the_crd_copy_is_kserve_v0_20_0s(crd):
    assert crd["spec"]["group"] == "serving.kserve.io"
    assert crd["spec"]["names"]["kind"] == "InferenceService"
    readme = (CRD.parent / "README.md").read_text()
    assert "v0.20.0" in readme
    assert hashlib.sha256(CRD.read_bytes()).hexdigest() in readme


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_a_valid_inference_service(path, crd):
    assert all_errors(load(path), crd) == []


def _unknown_fields(doc: dict) -> list[tuple[str, dict]]:
    """(where, copy of the manifest with one field no schema names) for each nesting level."""
    out = []
    predictor = doc["spec"]["predictor"]
    places = [
        ("metadata", lambda d: d["metadata"]),
        ("spec", lambda d: d["spec"]),
        ("spec.predictor", lambda d: d["spec"]["predictor"]),
    ]
    if "containers" in predictor:
        c = "spec.predictor.containers[0]"
        first = lambda d: d["spec"]["predictor"]["containers"][0]  # noqa: E731
        places += [
            (c, first),
            (c + ".readinessProbe.httpGet", lambda d: first(d)["readinessProbe"]["httpGet"]),
            (c + ".resources", lambda d: first(d)["resources"]),
            (c + ".securityContext", lambda d: first(d)["securityContext"]),
        ]
    if "model" in predictor:
        m = "spec.predictor.model"
        places += [
            (m, lambda d: d["spec"]["predictor"]["model"]),
            (m + ".modelFormat", lambda d: d["spec"]["predictor"]["model"]["modelFormat"]),
            (m + ".resources", lambda d: d["spec"]["predictor"]["model"]["resources"]),
        ]
    for where, at in places:
        bad = copy.deepcopy(doc)
        at(bad)["unknownField"] = 1
        out.append((where, bad))
    return out


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_a_field_no_schema_names_is_rejected_at_every_level(path, crd):
    doc = load(path)
    shipped = served_version(crd)["schema"]["openAPIV3Schema"]
    for where, bad in _unknown_fields(doc):
        errors = all_errors(bad, crd)
        assert any("unknownField" in e for e in errors), where
        # Plain JSON Schema on the CRD as shipped lets the field through (the reason for
        # strict()); metadata and the pod spec's parts are open there.
        assert schema_errors(shipped, bad) == [], where


def test_a_misspelt_probe_and_a_bad_quantity_are_rejected(crd):
    doc = load(KSERVE / "digits-server.yaml")
    container = doc["spec"]["predictor"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    container["resources"]["limits"]["memory"] = "512 MB"
    errors = all_errors(doc, crd)
    assert any("readinesProbe" in e for e in errors), errors
    assert any("memory" in e for e in errors), errors


# --- digits-server.yaml against deploy/Dockerfile and the server's flags ----------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "deploy" / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def instruction(name: str) -> str:
    (value,) = [rest for keyword, rest in dockerfile() if keyword == name]
    return value


def image_bundle_dir() -> Path:
    """Where the Dockerfile puts the bundle: WORKDIR joined with the artifacts COPY's target."""
    workdir = Path(instruction("WORKDIR"))
    (dest,) = {
        shlex.split(rest)[-1]
        for keyword, rest in dockerfile()
        if keyword == "COPY" and "artifacts/manifest.json" in rest
    }
    return workdir / dest


@pytest.fixture(scope="module")
def digits_server() -> dict:
    doc = load(KSERVE / "digits-server.yaml")
    (container,) = doc["spec"]["predictor"]["containers"]
    return {"doc": doc, "container": container}


@pytest.fixture(scope="module")
def command(digits_server) -> list[str]:
    """What the pod runs: the manifest's command and args, or else the image's CMD (there is
    no ENTRYPOINT)."""
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in dockerfile())
    c = digits_server["container"]
    if "command" in c or "args" in c:
        return [*c.get("command", []), *c.get("args", [])]
    return json.loads(instruction("CMD"))


@pytest.fixture(scope="module")
def config(command) -> ServerConfig:
    assert command[:3] == ["python", "-m", "server"]
    return parse_args(command[3:])


def test_port_agrees_across_flags_expose_health_check_and_manifest(digits_server, config):
    c = digits_server["container"]
    assert config.host == "0.0.0.0"  # the kubelet's probes and KServe's router come from outside
    assert int(instruction("EXPOSE")) == config.port
    assert [p["containerPort"] for p in c["ports"]] == [config.port]
    probes = [c[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in c]
    assert {"readinessProbe", "livenessProbe"} <= set(c)
    assert {p["httpGet"]["port"] for p in probes} == {config.port}
    health = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", instruction("HEALTHCHECK"))
    assert health and int(health.group(1)) == config.port


def test_probes_ask_what_the_health_check_asks_and_the_server_answers_them(
    digits_server, config, bundle
):
    c = digits_server["container"]
    health = re.search(r"http://127\.0\.0\.1:\d+(/[\w/]*)", instruction("HEALTHCHECK"))
    assert c["readinessProbe"]["httpGet"]["path"] == health.group(1) == "/readyz"
    client = create_app(ServerConfig(artifacts=bundle)).test_client()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in c:
            path = c[probe]["httpGet"]["path"]
            assert client.get(path).status_code == 200, (probe, path)


def test_the_bundle_path_is_where_the_image_holds_the_bundle(digits_server, config):
    predictor = digits_server["doc"]["spec"]["predictor"]
    if "storageUri" in predictor or "storageUri" in digits_server["container"]:
        # KServe's storage initializer puts the model at /mnt/models.
        assert config.artifacts == Path("/mnt/models")
        return
    assert config.artifacts == image_bundle_dir()
    copied = [
        pattern
        for keyword, rest in dockerfile()
        if keyword == "COPY" and rest.split()[-1] == "artifacts/"
        for pattern in rest.split()[:-1]
    ]
    shipped = json.loads((ROOT / "artifacts" / "manifest.json").read_text())
    needed = [
        "manifest.json",
        *(m["file"] for m in shipped["models"]),
        shipped["ensemble"]["file"],
        shipped["golden"]["file"],
    ]
    for name in needed:
        assert any(Path("artifacts", name).match(p) for p in copied), name


def test_user_and_writable_places_agree_with_the_security_context(digits_server):
    c = digits_server["container"]
    context = c["securityContext"]
    user = instruction("USER")
    # runAsNonRoot can only be verified for a numeric user.
    assert context["runAsNonRoot"] is True and user.isdigit() and int(user) != 0
    assert context["readOnlyRootFilesystem"] is True
    # The server writes temporary files (shared metrics, its helpers' sockets) under /tmp.
    volumes = {v["name"]: v for v in digits_server["doc"]["spec"]["predictor"]["volumes"]}
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]


def test_names_agree_with_the_image_built(digits_server):
    doc, c = digits_server["doc"], digits_server["container"]
    # KServe sends a custom predictor's traffic to the container of this name.
    assert c["name"] == "kserve-container"
    built = re.search(r"tag=\$\{1:-([^}]+)\}", (ROOT / "deploy" / "build.sh").read_text())
    image_name = built.group(1).rsplit("/", 1)[-1].split(":")[0]
    assert c["image"].rsplit("/", 1)[-1].split(":")[0] == image_name == doc["metadata"]["name"]
