"""The BentoML service: scores applicants with the imported Production model, logs each one.

Import the version the MLflow alias ``production`` points at, then serve it::

    credit-risk import
    bentoml serve                  # refuses to start if the registry says it is not Production

The HTTP routes are in :mod:`credit_risk.serving.routes`; this class holds the verified model,
the prediction log and its shipping process, the registry guard and the scoring threads. Every
prediction is fsync'd to the prediction log before its response is sent.
"""

import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from operator import itemgetter

import bentoml
import numpy as np
from threadpoolctl import threadpool_limits

from credit_risk.ml.contract import FEATURE_NAMES, REASON_CODES
from credit_risk.ml.flat_trees import DefaultProbability
from credit_risk.ml.scorecard import ScoreScale, assess
from credit_risk.registry.store import TrackingError
from credit_risk.serving.batching import GroupCommit, ScoringError
from credit_risk.serving.prediction_log import (
    PredictionLog,
    check_log_directory,
    log_directory,
)
from credit_risk.serving.production_guard import (
    ProductionGuard,
    StartRefused,
    production_check,
    registry_required,
    serving_tracking_uri,
    unverified_start_message,
)
from credit_risk.serving.release import (
    BENTO_MODEL,
    ServedModel,
    load_served_model,
    verify_model_file,
)
from credit_risk.serving.request_bodies import RequestBodies
from credit_risk.serving.routes import app
from credit_risk.serving.shipping_process import ShipperProcess

FEATURE_VALUES = itemgetter(*FEATURE_NAMES)
NO_TRACKING_STORE = "off: MLFLOW_TRACKING_URI is not set; predictions stay in the local log"


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    traffic={"timeout": 60},
    # Per-request costs /predict can do without (see README, "Performance"): every prediction is
    # in the prediction log anyway, and /metrics still counts requests and latencies.
    tracing={"excluded_urls": ["/predict"]},
    logging={"access": {"enabled": False}},
)
class CreditRiskService:
    """Scores applicants with the imported Production model and logs every prediction."""

    bento_model = bentoml.models.BentoModel(f"{BENTO_MODEL}:latest")

    @bentoml.on_deployment
    def check_production():
        """Runs once in ``bentoml serve`` before the workers: refuse to start (one line on
        stderr) when the registry says the model is not Production; warn when it cannot say."""
        model = CreditRiskService.inner.bento_model.resolve()
        try:
            check_log_directory(log_directory())
            served = ServedModel.of(model)
            verify_model_file(model, served)
            uri = serving_tracking_uri(in_bento=CreditRiskService.bento is not None)
            if uri is not None:
                production_check(served, str(model.tag), uri)
        except TrackingError as error:
            if registry_required():
                print(f"credit-risk service: refusing to start: {error}", file=sys.stderr)
                raise SystemExit(1) from None
            print(unverified_start_message(error), file=sys.stderr)
        except (StartRefused, ValueError, OSError) as error:
            print(f"credit-risk service: refusing to start: {error}", file=sys.stderr)
            raise SystemExit(1) from None

    def __init__(self):
        model = self.bento_model
        self.served = ServedModel.of(model)
        self.model = load_served_model(model, self.served)
        self.default_probability = DefaultProbability(self.model)
        self.scale = ScoreScale(**self.served.score_scale)
        uri = serving_tracking_uri(in_bento=CreditRiskService.bento is not None)
        self.log = PredictionLog(log_directory())
        self.shipper = self.guard = None
        if uri is not None:
            run_tags = {
                "model_run_id": self.served.run_id,
                "dataset_hash": self.served.dataset_hash,
            }
            self.shipper = ShipperProcess(self.log.directory, uri, run_tags)
            self.shipper.start()
            self.guard = ProductionGuard(self.served, str(model.tag), uri, verified=False)
            self.guard.check_once()
            self.guard.start()
        # Model calls and log writes leave the event loop: /predict groups in one thread,
        # batches in another, each with one OpenMP thread (a limit that is per thread). More
        # compete with the event loop and each other for the cores: HistGradientBoosting's
        # per-tree parallel regions then wait on each other (see README, "Performance").
        self.scorer, self.batch_scorer = (
            ThreadPoolExecutor(
                1, thread_name_prefix=name, initializer=threadpool_limits, initargs=(1,)
            )
            for name in ("scorer", "batch-scorer")
        )
        self.group_commit = GroupCommit(self.score_group, self.scorer)
        # Start-up objects never become garbage: keep them out of every later collection. Full
        # collections of what BentoML allocates later are slow (see README, "Performance"):
        # young generations are collected as usual, full ones almost never.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    def refusal(self) -> str | None:
        """Why predictions are refused now (the registry moved Production away), or None."""
        if self.guard is not None and not self.guard.state["serving"]:
            return f"not serving: {self.guard.state['error']}"
        return None

    def predict(self, applicants: list[dict]) -> list[dict | Exception]:
        """A prediction (with score and reason codes) per applicant, unlogged; an applicant the
        model fails on gets the exception, the others scored one by one so that only it fails."""
        values = np.array(list(map(FEATURE_VALUES, applicants)), dtype="float64")
        try:
            assessed = list(
                zip(*assess(self.model, values, self.scale, self.default_probability), strict=True)
            )
        except Exception:  # noqa: BLE001 - find the applicant(s) the model cannot score
            assessed = [self._assess_one(row) for row in values]
        now = datetime.now(UTC).isoformat()
        ids = os.urandom(16 * len(applicants)).hex()
        threshold, version = self.served.decision_threshold, self.served.model_version
        return [
            result
            if isinstance(result, Exception)
            else {
                "prediction": int(result[0] >= threshold),
                "probability": result[0],
                "model_version": version,
                "prediction_id": ids[32 * i : 32 * i + 32],
                "timestamp": now,
                "score": result[1],
                "reasons": result[2],
            }
            for i, result in enumerate(assessed)
        ]

    def _assess_one(self, row: np.ndarray) -> tuple | Exception:
        try:
            (probability,), (score,), (reasons,) = assess(
                self.model, row[np.newaxis], self.scale, self.default_probability
            )
        except Exception as error:  # noqa: BLE001 - this applicant's answer is the error
            return ScoringError(f"the model could not score this applicant: {error}")
        return probability, score, reasons

    def score_group(self, applicants: list[dict]) -> list[dict | Exception]:
        """``/predict`` groups: predictions, the scored ones logged durably (one fsync) first."""
        predictions = self.predict(applicants)
        self.log.append(
            [
                {**prediction, "inputs": applicant}
                for applicant, prediction in zip(applicants, predictions, strict=True)
                if not isinstance(prediction, Exception)
            ]
        )
        return predictions

    def score_batch(self, applicants: list[dict]) -> list[dict]:
        """``/predict/batch``: all predictions logged durably, or none and an error."""
        predictions = self.predict(applicants)
        failed = [i for i, p in enumerate(predictions) if isinstance(p, Exception)]
        if failed:
            raise ScoringError(f"applicant {failed[0]}: {predictions[failed[0]]}")
        self.log.append(
            [
                {**prediction, "inputs": applicant}
                for applicant, prediction in zip(applicants, predictions, strict=True)
            ]
        )
        return predictions

    def status(self) -> dict:
        """``GET /``: basic status."""
        return {
            "service": "credit-risk",
            "status": "ok",
            "model_name": self.served.model_name,
            "model_version": self.served.model_version,
            "endpoints": ["/health", "/model/info", "/predict", "/predict/batch"],
        }

    def health(self) -> dict:
        """``GET /health``: ``failing`` if it cannot log or must not serve, ``degraded`` if
        shipping fails or the registry could not confirm the model is Production."""
        version = self.served.model_version
        shipping = self.shipper.status(version) if self.shipper else {"enabled": False}
        registry = self.guard.state if self.guard else {"production_verified": False}
        if not self.shipper:
            shipping["status"] = registry["check"] = NO_TRACKING_STORE
        local_ok = self.log.error is None
        if not local_ok or self.refusal():
            status = "failing"
        elif self.guard and not (registry["production_verified"] and shipping["ok"]):
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "model_loaded": self.model is not None,
            "model_version": version,
            "model_stage": self.served.model_stage,
            "production_verified": registry["production_verified"],
            "registry": registry,
            "prediction_log": {
                "ok": local_ok,
                "error": self.log.error,
                "path": str(self.log.path),
                "mlflow": shipping,
            },
        }

    def model_info(self) -> dict:
        """``GET /model/info``: the :class:`ServedModel` record, the reason code table and the
        BentoML model tag."""
        return self.served.model_dump() | {
            "reason_codes": [asdict(code) for code in REASON_CODES],
            "bento_model": str(self.bento_model.tag),
        }


CreditRiskService.add_asgi_middleware(RequestBodies)
