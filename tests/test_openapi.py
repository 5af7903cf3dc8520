"""The service's OpenAPI document, generated in process: valid, and without warnings; the API
methods' input validation."""

import json
import warnings

from fastapi.openapi.utils import get_openapi
from openapi_spec_validator import validate
from pydantic import ValidationError

from credit_risk.ml.contract import EXAMPLE_APPLICANT as SAMPLE
from credit_risk.ml.contract import FEATURES
from credit_risk.serving.routes import app, openapi
from credit_risk.serving.schemas import APPLICANT
from credit_risk.serving.service import CreditRiskService


def test_the_routes_make_an_openapi_document_without_warnings():
    """As BentoML's /docs.json and FastAPI's /openapi.json generate it: no "Duplicate
    Operation ID" (each GET route also answers HEAD, which the document leaves out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_openapi(title=app.title, version=app.version, routes=app.routes)
        document = openapi()
    validate(document)
    assert {path: set(operations) for path, operations in document["paths"].items()} == {
        "/": {"get"},
        "/health": {"get"},
        "/model/info": {"get"},
        "/predict": {"post"},
        "/predict/batch": {"post"},
    }
    heads = {route.path for route in app.routes if "HEAD" in getattr(route, "methods", ())}
    assert {
        "/",
        "/health",
        "/model/info",
    } <= heads  # answered over HTTP: test_service_hostile_input


def test_the_document_declares_the_bearer_scheme_and_401_where_a_key_is_needed():
    document = openapi()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key made by `credit-risk keys add NAME`",
    }
    for path, method in [("/predict", "post"), ("/predict/batch", "post"), ("/model/info", "get")]:
        operation = document["paths"][path][method]
        assert operation["security"] == [{"bearerAuth": []}] and "401" in operation["responses"]
    for path in ("/", "/health"):
        operation = document["paths"][path]["get"]
        assert "security" not in operation and "401" not in operation["responses"]


def _outcome(validate, body: bytes):
    try:
        return "valid", json.dumps(dict(validate(body or b"{}")))
    except ValidationError as error:
        return "invalid", [(e["loc"], e["msg"]) for e in error.errors()]


def test_bentoml_validates_predict_bodies_as_the_contract_schema():
    """BentoML rebuilds an API method's input model; ``predict``'s must take and refuse
    exactly what the contract's schema does, with the same values and messages."""
    input_spec = CreditRiskService.apis["predict"].input_spec
    bodies = [b"", b"{", b"[]", json.dumps(SAMPLE | {"x": 1}).encode()]
    bodies.append(json.dumps(SAMPLE).replace("5400.0", "NaN").encode())
    for feature in FEATURES:
        for value in (feature.minimum, feature.maximum, feature.maximum + 1, -1, 1.5, 2.0, 2,
                      "2", True, None, 10**30, 1e308):  # fmt: skip
            bodies.append(json.dumps(SAMPLE | {feature.name: value}).encode())
    outcomes = [
        (_outcome(APPLICANT.validate_json, body), _outcome(input_spec.model_validate_json, body))
        for body in bodies
    ]
    assert all(ours == bentoml for ours, bentoml in outcomes[4:])
    assert {ours[0] for ours, _ in outcomes} == {"valid", "invalid"}
    assert [bentoml[0] for _, bentoml in outcomes[:4]] == ["invalid"] * 4
