"""The HTTP API: FastAPI routes, each a thin adapter over the running service, and the ASGI
middleware that turns away non-JSON bodies.

The app is mounted on :class:`~credit_risk.serving.service.CreditRiskService` at ``/``. Routes
are module functions that find the service with ``bentoml.get_current_service()``: BentoML's
class-method routes get ``self`` from a synchronous FastAPI dependency, which runs in a thread
pool on every request (measurably slower for ``/predict``).
"""

import asyncio
from typing import TYPE_CHECKING

import bentoml
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.responses import Response

from credit_risk.serving.schemas import APPLICANT, BatchRequest

if TYPE_CHECKING:
    from credit_risk.serving.service import CreditRiskService

app = FastAPI(title="credit-risk service")


def service() -> "CreditRiskService":
    """The service instance of this worker."""
    return bentoml.get_current_service()


def _json_body(schema: dict) -> dict:
    """OpenAPI for a route that reads its JSON body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _invalid(error: ValidationError) -> JSONResponse:
    """400 in BentoML's format, naming the fields."""
    detail = error.errors(include_url=False, include_context=False, include_input=False)
    body = {"error": f"{error.error_count()} validation error for {error.title}", "detail": detail}
    return JSONResponse(body, status_code=400)


def _json(body) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@app.get("/")
async def index() -> dict:
    """Basic status."""
    return service().status()


@app.get("/health")
async def health() -> JSONResponse:
    """Model and prediction-log health; 503 when predictions cannot be logged."""
    body = service().health()
    return JSONResponse(body, status_code=503 if body["status"] == "failing" else 200)


@app.get("/model/info")
async def model_info() -> dict:
    """What is served: registry version, run, data, training metrics, decision threshold."""
    return service().model_info()


@app.post("/predict", openapi_extra=_json_body(APPLICANT.json_schema()))
async def predict(request: Request) -> Response:
    """Score one applicant (the bare body): ``prediction``, ``probability``, ..."""
    try:
        applicant = APPLICANT.validate_json(await request.body() or b"{}")
    except ValidationError as error:
        return _invalid(error)
    try:
        return _json(await service().group_commit.submit(applicant))
    except OSError as error:
        return JSONResponse({"error": f"prediction not logged: {error}"}, status_code=503)


@app.post("/predict/batch", openapi_extra=_json_body(BatchRequest.model_json_schema()))
async def predict_batch(request: Request) -> Response:
    """Score up to 10,000 applicants: ``{"applicants": [...]}`` -> ``{"predictions": ...}``."""
    body = await request.body()
    try:
        applicants = BatchRequest.model_validate_json(body or b"{}").applicants
    except ValidationError as error:
        return _invalid(error)
    running = service()
    try:
        predictions = await asyncio.get_running_loop().run_in_executor(
            running.batch_scorer, running.score, applicants
        )
    except OSError as error:
        return JSONResponse({"error": f"predictions not logged: {error}"}, status_code=503)
    return _json({"predictions": predictions})


class JsonBodiesOnly:
    """ASGI middleware: 415 for a POST body that is not JSON (BentoML would answer 500)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            content_type = dict(scope["headers"]).get(b"content-type", b"application/json")
            if content_type.split(b";")[0].strip().lower() != b"application/json":
                error = {"error": "the request body must be JSON (Content-Type: application/json)"}
                await JSONResponse(error, status_code=415)(scope, receive, send)
                return
        await self.app(scope, receive, send)
