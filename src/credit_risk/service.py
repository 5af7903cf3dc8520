"""BentoML service for the Production ``credit-risk-model`` (see README, "Serving").

Import the version the MLflow alias ``production`` points at into the BentoML model store, then
serve it::

    python -m credit_risk.service import
    bentoml serve                  # refuses to start unless that is still Production

Request schemas are generated from :mod:`credit_risk.contract`. Every prediction is fsync'd to
the prediction log (:mod:`credit_risk.serving_log`) before its response is sent.

The prediction routes live on the mounted FastAPI app rather than ``@bentoml.api``: BentoML's
adaptive batching added seconds of tail latency and its responses build a JSON schema each time.
Concurrent ``/predict`` requests are instead grouped by :class:`GroupCommit`: one model call and
one fsync per group.
"""

import argparse
import asyncio
import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from operator import itemgetter
from typing import Annotated

import bentoml
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.responses import Response
from threadpoolctl import threadpool_limits
from typing_extensions import TypedDict  # pydantic needs it for TypedDict on Python 3.11

from credit_risk.contract import FEATURE_NAMES, FEATURES, Feature
from credit_risk.params import load_params
from credit_risk.serving_log import PredictionLog, Shipper, log_directory, read_state
from credit_risk.tracking import (
    MODEL_NAME,
    PRODUCTION_ALIAS,
    PRODUCTION_STAGE,
    TrackingError,
    configure_tracking,
    production_version,
    project_root,
)

BENTO_MODEL = MODEL_NAME
"""The BentoML store name; each import adds a version."""
MAX_BATCH_ROWS = 10_000
MAX_GROUP = 256
"""Most ``/predict`` requests scored and logged together."""
FEATURE_VALUES = itemgetter(*FEATURE_NAMES)


def _field(feature: Feature):
    kind = int if feature.integer else float
    field = Field(ge=feature.minimum, le=feature.maximum, description=feature.description)
    return Annotated[kind | None if feature.nullable else kind, field]


Applicant = TypedDict("Applicant", {feature.name: _field(feature) for feature in FEATURES})
"""One applicant: the contract's ten features (JSON numbers; nullable ones may be null)."""
Applicant.__pydantic_config__ = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
APPLICANT = TypeAdapter(Applicant)


class BatchRequest(BaseModel):
    """``/predict/batch``'s body: ``{"applicants": [...]}``, nothing else."""

    model_config = ConfigDict(extra="forbid")
    applicants: list[Applicant] = Field(min_length=1, max_length=MAX_BATCH_ROWS)


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


class GroupCommit:
    """Scores ``/predict`` requests in groups: the ones arriving while a group is being scored
    and logged form the next group, so one model call and one fsync serve them all."""

    def __init__(self, score, executor: ThreadPoolExecutor):
        self.score, self.executor = score, executor
        self.waiting: list[tuple[dict, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def submit(self, applicant: dict) -> dict:
        """The logged prediction for ``applicant``."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((applicant, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            group, self.waiting = self.waiting[:MAX_GROUP], self.waiting[MAX_GROUP:]
            try:
                results = await loop.run_in_executor(
                    self.executor, self.score, [applicant for applicant, _ in group]
                )
            except Exception as error:  # noqa: BLE001 - every waiting request gets it
                results = [error] * len(group)
            for (_, future), result in zip(group, results, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


app = FastAPI(title="credit-risk service")


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    traffic={"timeout": 60},
    # Per-request costs that cut /predict's throughput by about a third: every prediction is
    # in the prediction log anyway, and /metrics still counts requests and latencies.
    tracing={"excluded_urls": ["/predict"]},
    logging={"access": {"enabled": False}},
)
class CreditRiskService:
    """Scores applicants with the imported Production model and logs every prediction."""

    bento_model = bentoml.models.BentoModel(f"{BENTO_MODEL}:latest")

    @bentoml.on_deployment
    def check_production():
        """Runs once in ``bentoml serve`` before the workers: refuse to start with one line on
        stderr unless :func:`production_check` passes."""
        model = CreditRiskService.inner.bento_model.resolve()
        try:
            production_check(
                model.info.labels["registry_version"], str(model.tag), CreditRiskService.bento
            )
        except (StartRefused, TrackingError) as error:
            print(f"credit-risk service: refusing to start: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        except MlflowException as error:
            message = error.message.splitlines()[0]
            print(f"credit-risk service: refusing to start: MLflow: {message}", file=sys.stderr)
            raise SystemExit(1) from None

    def __init__(self):
        info = self.bento_model.info
        self.labels, self.metadata = dict(info.labels), dict(info.metadata)
        self.version = self.labels["registry_version"]
        self.threshold = float(self.metadata["threshold"])
        # The sklearn Pipeline behind the pyfunc; fed float64 arrays in contract order.
        self.model = bentoml.mlflow.load_model(self.bento_model).get_raw_model()
        self.log_dir = log_directory()
        self.log = PredictionLog(self.log_dir)
        Shipper(self.log_dir, self.version, self.labels).start()
        # Model calls and log writes leave the event loop: /predict groups in one thread with
        # one OpenMP thread (a limit that is per thread; more only compete with the event loop
        # for the cores), batches in another with all cores.
        self.scorer = ThreadPoolExecutor(
            1, thread_name_prefix="scorer", initializer=threadpool_limits, initargs=(1,)
        )
        self.batch_scorer = ThreadPoolExecutor(1, thread_name_prefix="batch-scorer")
        self.group_commit = GroupCommit(self._score, self.scorer)
        # Start-up objects never become garbage: keep them out of every later collection. Full
        # collections of what BentoML allocates later took 100-200 ms (p99 150 ms -> 21 ms
        # without them): young generations are collected as usual, full ones almost never.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    def _score(self, applicants: list[dict]) -> list[dict]:
        """Predictions for ``applicants``, logged durably (one write and fsync) first."""
        values = np.array(list(map(FEATURE_VALUES, applicants)), dtype="float64")
        probabilities = self.model.predict_proba(values)[:, 1].tolist()
        now = datetime.now(UTC).isoformat()
        ids = os.urandom(16 * len(applicants)).hex()
        predictions = [
            {
                "prediction": int(p >= self.threshold),
                "probability": p,
                "model_version": self.version,
                "prediction_id": ids[32 * i : 32 * i + 32],
                "timestamp": now,
            }
            for i, p in enumerate(probabilities)
        ]
        self.log.append(
            [
                {**prediction, "inputs": applicant}
                for applicant, prediction in zip(applicants, predictions, strict=True)
            ]
        )
        return predictions

    def _score_batch(self, body: bytes) -> Response:
        try:
            applicants = BatchRequest.model_validate_json(body or b"{}").applicants
        except ValidationError as error:
            return _invalid(error)
        return _json({"predictions": self._score(applicants)})

    async def predict(self, request: Request) -> Response:
        """``POST /predict``: validate the body, score it with its group, answer."""
        try:
            applicant = APPLICANT.validate_json(await request.body() or b"{}")
        except ValidationError as error:
            return _invalid(error)
        try:
            return _json(await self.group_commit.submit(applicant))
        except OSError as error:
            return JSONResponse({"error": f"prediction not logged: {error}"}, status_code=503)

    async def predict_batch(self, request: Request) -> Response:
        """``POST /predict/batch``: validate, score and log in the batch thread."""
        body = await request.body()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.batch_scorer, self._score_batch, body
            )
        except OSError as error:
            return JSONResponse({"error": f"predictions not logged: {error}"}, status_code=503)

    @app.get("/")
    def index(self) -> dict:
        """Basic status."""
        return {
            "service": "credit-risk",
            "status": "ok",
            "model_name": MODEL_NAME,
            "model_version": self.version,
            "endpoints": ["/health", "/model/info", "/predict", "/predict/batch"],
        }

    @app.get("/health")
    def health(self):
        """Model and prediction-log health; 503 when predictions cannot be logged."""
        state = read_state(self.log_dir)
        written = sum(path.stat().st_size for path in self.log_dir.glob("*.jsonl"))
        shipping = {
            "ok": state["error"] is None,
            "error": state["error"],
            "last_attempt": state.get("attempted_at"),
            "run_id": state["run_id"],
            "shipped_records": state["shipped"],
            "pending_bytes": written - sum(state["offsets"].values()),
        }
        local_ok = self.log.error is None
        status = "failing" if not local_ok else "ok" if shipping["ok"] else "degraded"
        body = {
            "status": status,
            "model_loaded": self.model is not None,
            "model_version": self.version,
            "model_stage": self.metadata["model_stage"],
            "prediction_log": {
                "ok": local_ok,
                "error": self.log.error,
                "path": str(self.log.path),
                "mlflow": shipping,
            },
        }
        return JSONResponse(body, status_code=200 if local_ok else 503)

    @app.get("/model/info")
    def model_info(self) -> dict:
        """What is served: registry version, run, data and training metrics."""
        return {
            "model_name": MODEL_NAME,
            "model_version": self.version,
            "model_stage": self.metadata["model_stage"],
            "alias": self.metadata["alias"],
            "run_id": self.labels["run_id"],
            "dataset_hash": self.labels["dataset_hash"],
            "metrics": self.metadata["metrics"],
            "trained_at": self.metadata["trained_at"],
            "decision_threshold": self.threshold,
            "imported_at": self.metadata["imported_at"],
            "bento_model": str(self.bento_model.tag),
        }


# The prediction routes find the service with get_current_service(): routes on the class get
# ``self`` from a synchronous FastAPI dependency, run in a thread pool on every request, which
# cost /predict up to a fifth of its throughput.


@app.post("/predict", openapi_extra=_json_body(APPLICANT.json_schema()))
async def predict(request: Request) -> Response:
    """Score one applicant (the bare body): ``prediction``, ``probability``, ..."""
    return await bentoml.get_current_service().predict(request)


@app.post("/predict/batch", openapi_extra=_json_body(BatchRequest.model_json_schema()))
async def predict_batch(request: Request) -> Response:
    """Score up to 10,000 applicants: ``{"applicants": [...]}`` -> ``{"predictions": ...}``."""
    return await bentoml.get_current_service().predict_batch(request)


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


CreditRiskService.add_asgi_middleware(JsonBodiesOnly)


class ImportRefused(RuntimeError):
    """There is nothing to import: no Production version."""


class StartRefused(RuntimeError):
    """The model to serve is not the registry's Production version."""


def production_check(served_version: str, served_tag: str, bento) -> None:
    """Check that the BentoML model to serve is the registry's Production version.

    The tracking store is ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the project folder.
    A built bento (``bento`` not None) with ``MLFLOW_TRACKING_URI`` unset serves its packaged
    model unchecked. Raises :class:`StartRefused` (no store, no Production version, or another
    one than served) or :class:`TrackingError` (store unreachable).
    """
    root = project_root()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        if bento is not None:
            return
        if not (root / "mlflow.db").exists():
            raise StartRefused(
                f"no tracking store: MLFLOW_TRACKING_URI is not set and there is no "
                f"{root / 'mlflow.db'}; cannot tell which {MODEL_NAME} version is Production"
            )
    uri = configure_tracking(root)
    version = production_version(MlflowClient())
    if version is None:
        raise StartRefused(
            f"MLflow at {uri} has no Production version of {MODEL_NAME} (alias "
            f"@{PRODUCTION_ALIAS}); nothing to serve"
        )
    if str(version.version) != served_version:
        raise StartRefused(
            f"{MODEL_NAME} Production (alias @{PRODUCTION_ALIAS}) in MLflow at {uri} is "
            f"version {version.version}, but the BentoML model {served_tag} is version "
            f"{served_version}; run `python -m credit_risk.service import` first"
        )


def decision_threshold(params: dict) -> float:
    """``serve.threshold`` from params.yaml, a probability strictly between 0 and 1."""
    threshold = params["serve"]["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError(f"params.yaml: serve.threshold must be a number, got {threshold!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"params.yaml: serve.threshold must be in (0, 1), got {threshold}")
    return float(threshold)


def import_production(params_file: str = "params.yaml") -> str:
    """Import the Production version into the BentoML store (unless it is already the newest)."""
    threshold = decision_threshold(load_params(params_file))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = configure_tracking(project_root())
    client = MlflowClient()
    version = production_version(client)
    if version is None:
        raise ImportRefused(
            f"MLflow at {uri} has no Production version of {MODEL_NAME} "
            f"(alias @{PRODUCTION_ALIAS}); nothing imported"
        )
    run = client.get_run(version.run_id)
    labels = {
        "registry_version": str(version.version),
        "run_id": version.run_id,
        "dataset_hash": run.data.tags.get("dataset_hash", ""),
    }
    try:
        served = bentoml.models.get(f"{BENTO_MODEL}:latest")
    except bentoml.exceptions.NotFound:
        served = None
    if served and served.info.labels == labels and served.info.metadata["threshold"] == threshold:
        return f"{served.tag} is already {MODEL_NAME} version {version.version} (Production)"
    model = bentoml.mlflow.import_model(
        BENTO_MODEL,
        f"models:/{MODEL_NAME}/{version.version}",
        labels=labels,
        metadata={
            "model_stage": PRODUCTION_STAGE,
            "alias": PRODUCTION_ALIAS,
            "metrics": run.data.metrics,
            "trained_at": datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(),
            "threshold": threshold,
            "tracking_uri": uri,
            "imported_at": datetime.now(UTC).isoformat(),
        },
    )
    return f"imported {MODEL_NAME} version {version.version} (Production) from {uri} as {model.tag}"


def main(argv: list[str] | None = None) -> None:
    """``python -m credit_risk.service import [--params FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m credit_risk.service")
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import", help="import the Production model into BentoML")
    importer.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        print(import_production(args.params))
    except KeyError as error:
        print(f"import: error: {args.params}: missing setting {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except (ImportRefused, TrackingError, ValueError, OSError) as error:
        print(f"import: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except MlflowException as error:
        print(f"import: error: MLflow: {error.message.splitlines()[0]}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
