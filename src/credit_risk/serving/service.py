"""The BentoML service: scores applicants with the imported Production model, logs each one.

Import the version the MLflow alias ``production`` points at, then serve it::

    credit-risk import
    bentoml serve                  # refuses to start unless that is still Production

The HTTP routes are in :mod:`credit_risk.serving.routes`; this class holds the model, the
prediction log and the scoring threads. Every prediction is fsync'd to the prediction log
before its response is sent.
"""

import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from operator import itemgetter

import bentoml
import numpy as np
from threadpoolctl import threadpool_limits

from credit_risk.ml.contract import FEATURE_NAMES
from credit_risk.registry.store import TrackingError
from credit_risk.serving.batching import GroupCommit
from credit_risk.serving.prediction_log import PredictionLog, log_directory
from credit_risk.serving.release import (
    BENTO_MODEL,
    ServedModel,
    StartRefused,
    production_check,
)
from credit_risk.serving.routes import JsonBodiesOnly, app
from credit_risk.serving.shipping import Shipper, shipping_status

FEATURE_VALUES = itemgetter(*FEATURE_NAMES)


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
        """Runs once in ``bentoml serve`` before the workers: refuse to start with one line on
        stderr unless :func:`~credit_risk.serving.release.production_check` passes."""
        model = CreditRiskService.inner.bento_model.resolve()
        try:
            served = ServedModel.of(model)
            production_check(served, str(model.tag), CreditRiskService.bento is not None)
        except (StartRefused, TrackingError, ValueError) as error:
            print(f"credit-risk service: refusing to start: {error}", file=sys.stderr)
            raise SystemExit(1) from None

    def __init__(self):
        self.served = ServedModel.of(self.bento_model)
        # The sklearn Pipeline behind the pyfunc; fed float64 arrays in contract order.
        self.model = bentoml.mlflow.load_model(self.bento_model).get_raw_model()
        self.log_dir = log_directory()
        self.log = PredictionLog(self.log_dir)
        run_tags = {"model_run_id": self.served.run_id, "dataset_hash": self.served.dataset_hash}
        Shipper(self.log_dir, self.served.model_version, run_tags).start()
        # Model calls and log writes leave the event loop: /predict groups in one thread with
        # one OpenMP thread (a limit that is per thread; more only compete with the event loop
        # for the cores), batches in another with all cores.
        self.scorer = ThreadPoolExecutor(
            1, thread_name_prefix="scorer", initializer=threadpool_limits, initargs=(1,)
        )
        self.batch_scorer = ThreadPoolExecutor(1, thread_name_prefix="batch-scorer")
        self.group_commit = GroupCommit(self.score, self.scorer)
        # Start-up objects never become garbage: keep them out of every later collection. Full
        # collections of what BentoML allocates later are slow (see README, "Performance"):
        # young generations are collected as usual, full ones almost never.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    def score(self, applicants: list[dict]) -> list[dict]:
        """Predictions for ``applicants``, logged durably (one write and fsync) first."""
        values = np.array(list(map(FEATURE_VALUES, applicants)), dtype="float64")
        probabilities = self.model.predict_proba(values)[:, 1].tolist()
        now = datetime.now(UTC).isoformat()
        ids = os.urandom(16 * len(applicants)).hex()
        threshold, version = self.served.decision_threshold, self.served.model_version
        predictions = [
            {
                "prediction": int(p >= threshold),
                "probability": p,
                "model_version": version,
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
        """``GET /health``: model and prediction-log health (``failing``: log not writable)."""
        shipping = shipping_status(self.log_dir)
        local_ok = self.log.error is None
        return {
            "status": "failing" if not local_ok else "ok" if shipping["ok"] else "degraded",
            "model_loaded": self.model is not None,
            "model_version": self.served.model_version,
            "model_stage": self.served.model_stage,
            "prediction_log": {
                "ok": local_ok,
                "error": self.log.error,
                "path": str(self.log.path),
                "mlflow": shipping,
            },
        }

    def model_info(self) -> dict:
        """``GET /model/info``: the :class:`ServedModel` record and the BentoML model tag."""
        return self.served.model_dump() | {"bento_model": str(self.bento_model.tag)}


CreditRiskService.add_asgi_middleware(JsonBodiesOnly)
