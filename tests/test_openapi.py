"""The OpenAPI document: valid OpenAPI 3.1, generated from the answer and error types, and the
server's real answers conform to it."""

import io

import jsonschema
import numpy as np
import pytest
from openapi_spec_validator import validate

from server import create_app, errors
from server.config import ServerConfig
from tests.uploads import png


@pytest.fixture(scope="module")
def app(bundle):
    return create_app(ServerConfig(artifacts=bundle, max_batch=8))


@pytest.fixture(scope="module")
def doc(app):
    return app.test_client().get("/openapi.json").get_json()


def conforms(doc: dict, schema_name: str, instance) -> None:
    """Validates `instance` against a schema of the document, its $refs resolved in it."""
    schema = {"components": doc["components"], "$ref": f"#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema).validate(instance)


def predict_schema(doc: dict) -> dict:
    ok = doc["paths"]["/predict"]["post"]["responses"]["200"]
    return {"components": doc["components"], **ok["content"]["application/json"]["schema"]}


def test_the_document_is_valid_openapi(doc):
    validate(doc)


def test_every_answer_of_predict_conforms(app, doc, mnist_test):
    images, _ = mnist_test
    client = app.test_client()
    schema = jsonschema.Draft202012Validator(predict_schema(doc))
    one = client.post("/predict", data=png(images[0]), content_type="image/png").get_json()
    conforms(doc, "Prediction", one)
    with_image = client.post(
        "/predict?include_image=1", data=png(images[1]), content_type="image/png"
    ).get_json()
    conforms(doc, "PredictionWithImage", with_image)
    files = [png(images[2]), b"not an image", png(np.zeros((28, 28), np.uint8))]
    data = {"image": [(io.BytesIO(b), f"{i}.png") for i, b in enumerate(files)]}
    batch = client.post("/predict?include_image=1", data=data).get_json()
    conforms(doc, "Batch", batch)
    for answer in (one, with_image, batch):
        schema.validate(answer)
    # additionalProperties is false: an answer with a field the types do not have fails.
    with pytest.raises(jsonschema.ValidationError):
        conforms(doc, "Prediction", {**one, "extra": 1})


def test_every_refusal_conforms_with_a_documented_status_and_code(app, doc):
    client = app.test_client()
    responses = doc["paths"]["/predict"]["post"]["responses"]
    for kwargs in (
        {"data": b"hello", "content_type": "image/png"},
        {"data": b"x", "content_type": "text/plain"},
        {"data": png(np.full((40, 40), 255, np.uint8)), "content_type": "image/png"},
        {"data": {"file": (io.BytesIO(b"x"), "x.png")}},
    ):
        r = client.post("/predict", **kwargs)
        body = r.get_json()
        conforms(doc, "ApiError", body)
        documented = responses[str(r.status_code)]["content"]["application/json"]["schema"]
        assert body["code"] in documented["properties"]["code"]["enum"]


def test_error_responses_come_from_the_error_types(doc):
    responses = doc["paths"]["/predict"]["post"]["responses"]
    image_errors = [k for k in errors.kinds(errors.ImageError) if k is not errors.ImageError]
    for kind in image_errors:
        assert f"`{kind.code}`" in responses[str(kind.status)]["description"]
    item = doc["components"]["schemas"]["ItemError"]["properties"]["code"]["enum"]
    assert sorted(item) == sorted(k.code for k in image_errors)


def test_v2_names_every_model_the_server_serves(app, doc):
    param = doc["paths"]["/v2/models/{name}/infer"]["post"]["parameters"][0]
    assert param["schema"]["enum"] == list(app.extensions["digits"].v2_models)
    assert "lenet5-vote" in param["schema"]["enum"]
