"""The service's OpenAPI document, generated in process: valid, and without warnings."""

import warnings

from fastapi.openapi.utils import get_openapi
from openapi_spec_validator import validate

from credit_risk.serving.routes import app, openapi


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
