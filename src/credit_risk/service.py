"""BentoML service for the Production ``credit-risk-model`` (see docs/serving.md).

Import the version the MLflow alias ``production`` points at into the BentoML model store, then
serve it; the service serves the newest imported model::

    python -m credit_risk.service import
    bentoml serve credit_risk.service:CreditRiskService

Request schemas are generated from :mod:`credit_risk.contract`. Every prediction is fsync'd to
the prediction log (:mod:`credit_risk.serving_log`) before its response is sent.
"""

import argparse
import asyncio
import gc
import os
import sys
import uuid
from datetime import UTC, datetime

import bentoml
import numpy as np
from _bentoml_sdk.io_models import IORootModel
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.responses import Response
from threadpoolctl import threadpool_limits

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
"""The BentoML store name; each import adds a version, the service serves the newest."""
MAX_BATCH_ROWS = 10_000


def _field(feature: Feature):
    kind = int if feature.integer else float
    return (
        kind | None if feature.nullable else kind,
        Field(ge=feature.minimum, le=feature.maximum, description=feature.description),
    )


Applicant = create_model(
    "Applicant",
    __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False),
    __doc__="One applicant: the contract's ten features (JSON numbers; nullable ones may be null).",
    **{feature.name: _field(feature) for feature in FEATURES},
)


class Prediction(BaseModel):
    """The decision for one applicant."""

    prediction: int = Field(description="1 if probability >= the decision threshold, else 0")
    probability: float = Field(description="Probability of serious delinquency within 2 years")
    model_version: str
    prediction_id: str
    timestamp: str


class BatchPredictions(BaseModel):
    """Decisions in the order of the applicants sent."""

    predictions: list[Prediction]


class BatchRequest(bentoml.IODescriptor):
    """``/predict/batch``'s body: ``{"applicants": [...]}``, nothing else."""

    model_config = ConfigDict(extra="forbid")
    applicants: list[Applicant] = Field(min_length=1, max_length=MAX_BATCH_ROWS)


class OneApplicant(IORootModel[list[Applicant]]):
    """``/predict``'s bare body, one applicant, handed to adaptive batching as a list of one."""

    __root_input__ = True

    @classmethod
    def model_validate_json(cls, json_data, **kwargs):
        return cls([Applicant.model_validate_json(json_data, **kwargs)])


class OnePrediction(IORootModel[list[Prediction]]):
    """``/predict``'s answer: the request's one prediction as a bare object.

    Serialised directly: BentoML's default path builds a JSON schema for every response.
    """

    @classmethod
    async def to_http_response(cls, obj, serde) -> Response:
        return Response(obj[0].model_dump_json(), media_type="application/json")


app = FastAPI(title="credit-risk service status")


@bentoml.asgi_app(app, path="/")
@bentoml.service(traffic={"timeout": 60})
class CreditRiskService:
    """Scores applicants with the imported Production model and logs every prediction."""

    bento_model = bentoml.models.BentoModel(f"{BENTO_MODEL}:latest")

    def __init__(self):
        info = self.bento_model.info
        self.labels, self.metadata = dict(info.labels), dict(info.metadata)
        self.version = self.labels["registry_version"]
        self.threshold = float(self.metadata["threshold"])
        # The sklearn Pipeline behind the pyfunc; fed float64 arrays in contract order.
        self.model = bentoml.mlflow.load_model(self.bento_model).get_raw_model()
        threadpool_limits(1)
        self.log_dir = log_directory()
        self.log = PredictionLog(self.log_dir)
        Shipper(self.log_dir, self.version, self.labels).start()
        # Start-up objects never become garbage: keep them out of every later collection.
        gc.collect()
        gc.freeze()

    def _score(self, applicants: list) -> list[Prediction]:
        values = np.array(
            [[getattr(a, name) for name in FEATURE_NAMES] for a in applicants], dtype="float64"
        )
        probabilities = self.model.predict_proba(values)[:, 1].tolist()
        now = datetime.now(UTC).isoformat()
        predictions = [
            Prediction(
                prediction=int(p >= self.threshold),
                probability=p,
                model_version=self.version,
                prediction_id=uuid.uuid4().hex,
                timestamp=now,
            )
            for p in probabilities
        ]
        self.log.append(
            [
                {**p.model_dump(), "inputs": a.model_dump()}
                for a, p in zip(applicants, predictions, strict=True)
            ]
        )
        return predictions

    @bentoml.api(
        route="/predict",
        input_spec=OneApplicant,
        output_spec=OnePrediction,
        batchable=True,
        max_batch_size=256,
        max_latency_ms=1000,
    )
    def predict(self, applicants: list[Applicant], /) -> list[Prediction]:
        """Score one applicant (the bare body); concurrent requests are batched together."""
        return self._score(applicants)

    @bentoml.api(route="/predict/batch", input_spec=BatchRequest)
    async def predict_batch(self, applicants: list[Applicant]) -> BatchPredictions:
        """Score up to 10,000 applicants: ``{"applicants": [...]}``.

        Runs outside BentoML's worker thread so that ``/predict`` batches never queue behind it.
        """
        return BatchPredictions(predictions=await asyncio.to_thread(self._score, applicants))

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
