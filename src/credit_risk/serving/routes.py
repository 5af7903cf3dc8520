"""The HTTP API: what each route answers, as thin adapters over the running service.

``POST /predict`` and ``/predict/batch`` are the service's BentoML API methods (so BentoML's
clients find them); BentoML validates their bodies and they answer with the functions here,
as ready responses (no per-response schema work). The GET routes are a FastAPI app mounted on
:class:`~credit_risk.serving.service.CreditRiskService` at ``/``: module functions that find
the service with ``bentoml.get_current_service()`` (BentoML's class-method routes get ``self``
from a synchronous FastAPI dependency, run in a thread pool on every request). Bodies reach the
routes already checked for size and content type (:mod:`credit_risk.serving.request_bodies`).
:func:`openapi` describes both kinds in one document.
"""

import asyncio
from typing import TYPE_CHECKING

import bentoml
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import JSONResponse, Response

from credit_risk.serving.api_keys import SCOPE_KEY, keys_status
from credit_risk.serving.batching import ClientLeft, Overloaded, ScoringError
from credit_risk.serving.request_bodies import MAX_BODY_BYTES, client_left, client_went_away
from credit_risk.serving.schemas import ErrorResponse, openapi_components

if TYPE_CHECKING:
    from credit_risk.serving.service import CreditRiskService

RETRY_AFTER_SECONDS = "1"
BEARER = "bearerAuth"
UNAUTHORIZED_WHY = (
    "no valid API key (`Authorization: Bearer <key>`), when the service has keys "
    "(CREDIT_RISK_API_KEYS_FILE); answered with `WWW-Authenticate: Bearer`"
)

app = FastAPI(title="credit-risk service", version="1")


def service() -> "CreditRiskService":
    """The service instance of this worker."""
    return bentoml.get_current_service()


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _responses(ok: str, **errors: str) -> dict:
    """OpenAPI responses: ``ok`` the 200 schema, ``errors`` HTTP status -> why."""
    json_of = lambda schema: {"application/json": {"schema": schema}}  # noqa: E731
    responses = {"200": {"description": "OK", "content": json_of(_ref(ok))}}
    for status, why in errors.items():
        responses[status.strip("_")] = {
            "description": why,
            "content": json_of(_ref("ErrorResponse")),
        }
    return responses


def _post(body: str, ok: str, limit: int) -> dict:
    """OpenAPI of a POST route that reads its JSON body itself."""
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
        "responses": _responses(
            ok,
            _401=UNAUTHORIZED_WHY,
            _400="the body is not valid JSON or breaks the feature contract (detail per field)",
            _413=f"the body is larger than {limit} bytes",
            _415="the body is not application/json, or has a Content-Encoding (gzip, ...)",
            _503="the prediction could not be logged, the service is overloaded (Retry-After) "
            "or its model is no longer the registry's Production version",
            _504="no answer started within the service's traffic.timeout (60 s unless "
            "configured otherwise)",
        ),
    }


PROTECTED = {401: {"description": UNAUTHORIZED_WHY, "model": ErrorResponse}}
"""OpenAPI responses of a GET route that needs a key."""


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _json(body) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def get_and_head(path: str, **options):
    """Register a GET route that also answers HEAD (for uptime checkers). HEAD, which HTTP
    implies, is a route of its own left out of the OpenAPI document: one route for both
    methods would give both operations one operation id. GET comes first: a 405 names the
    first route's methods in ``Allow``."""

    def register(endpoint):
        route = app.get(path, **options)(endpoint)
        app.head(path, include_in_schema=False)(endpoint)
        return route

    return register


@get_and_head("/")
async def index() -> dict:
    """Basic status."""
    return service().status()


@get_and_head(
    "/health",
    responses={503: {"description": "failing: it cannot log predictions or must not serve"}},
)
async def health() -> JSONResponse:
    """Model, registry, prediction-log and API-key health; 503 when the service cannot serve;
    ``degraded`` when the keys file became bad (the last good keys stay in use)."""
    body = service().health() | {"api_keys": keys_status()}
    if body["status"] == "ok" and body["api_keys"].get("error"):
        body["status"] = "degraded"
    return JSONResponse(body, status_code=503 if body["status"] == "failing" else 200)


@get_and_head("/model/info", responses=PROTECTED)
async def model_info() -> dict:
    """What is served: registry version, run, data, training metrics, decision threshold."""
    return service().model_info()


async def predict(running: "CreditRiskService", applicant: dict, request: Request) -> Response:
    """``POST /predict`` (the service's API method ``predict``): one applicant's logged
    prediction through the group commit."""
    if refusal := running.refusal():
        return _error(503, refusal)
    try:
        prediction = await running.group_commit.submit(
            applicant, lambda: client_went_away(request), request.scope.get(SCOPE_KEY)
        )
        return _json(prediction)
    except Overloaded as error:
        return _error(503, f"overloaded: {error}", **{"Retry-After": RETRY_AFTER_SECONDS})
    except OSError as error:
        return _error(503, f"prediction not logged: {error}")
    except ScoringError as error:
        return _error(500, str(error))
    except ClientLeft as error:
        return client_left(str(error))


async def predict_batch(
    running: "CreditRiskService", applicants: list[dict], request: Request
) -> Response:
    """``POST /predict/batch`` (the API method ``predict_batch``): every applicant's logged
    prediction, or an error and none."""
    if refusal := running.refusal():
        return _error(503, refusal)
    try:
        predictions = await asyncio.get_running_loop().run_in_executor(
            running.batch_scorer, running.score_batch, applicants, request.scope.get(SCOPE_KEY)
        )
    except OSError as error:
        return _error(503, f"predictions not logged: {error}")
    except ScoringError as error:
        return _error(500, str(error))
    return _json({"predictions": predictions})


API_METHODS = {
    "/predict": ("predict", "Score one applicant (the bare body)", "Applicant", "Prediction"),
    "/predict/batch": (
        "predict_batch",
        'Score up to 10,000 applicants: ``{"applicants": [...]}`` -> ``{"predictions": ...}``',
        "BatchRequest",
        "BatchResponse",
    ),
}
"""The service's BentoML API methods (POST routes), as this document describes them."""


def openapi() -> dict:
    """FastAPI's OpenAPI document with the schemas as resolvable components, and the bearer
    scheme on the routes that need a key."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path, (name, summary, body, ok) in API_METHODS.items():
            operation = {"summary": summary, "operationId": name}
            document["paths"][path] = {"post": operation | _post(body, ok, MAX_BODY_BYTES[path])}
        components = document.setdefault("components", {})
        components["schemas"] = openapi_components()
        components["securitySchemes"] = {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key made by `credit-risk keys add NAME`",
            }
        }
        for operations in document["paths"].values():
            for operation in operations.values():
                if "401" in operation["responses"]:
                    operation["security"] = [{BEARER: []}]
        app.openapi_schema = document
    return app.openapi_schema


app.openapi = openapi
