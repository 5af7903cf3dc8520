"""The BentoML service: scores applicants with the registry's Production model, logs each one.

Import the version the MLflow alias ``production`` points at, then serve::

    credit-risk import
    bentoml serve                  # serves Production, and follows it when it moves

The HTTP routes are in :mod:`credit_risk.serving.routes`; this class holds the verified model
(:class:`~credit_risk.serving.live_model.LiveModel`), the prediction log and its shipping
process, the registry follower and the scoring threads. Every prediction is fsync'd to the
prediction log before its response is sent.
"""

import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING

import bentoml
import numpy as np
from starlette.responses import Response
from threadpoolctl import threadpool_limits

from credit_risk.ml.contract import FEATURE_NAMES, REASON_CODES
from credit_risk.serving import routes
from credit_risk.serving.api_keys import ApiKeyAuth
from credit_risk.serving.batching import GroupCommit, ScoringError
from credit_risk.serving.bento_store import BENTO_MODEL, ImportedModel
from credit_risk.serving.prediction_log import PredictionLog, log_directory
from credit_risk.serving.request_bodies import RequestBodies
from credit_risk.serving.request_timeout import replace_bentoml_timeout
from credit_risk.serving.routes import app
from credit_risk.serving.schemas import ApplicantInput, BatchRequest, BatchResponse, Prediction
from credit_risk.serving.shipping_process import ShipperProcess

if TYPE_CHECKING:
    from credit_risk.serving.live_model import LiveModel

FEATURE_VALUES = itemgetter(*FEATURE_NAMES)
NO_TRACKING_STORE = "off: MLFLOW_TRACKING_URI is not set; predictions stay in the local log"
WORKERS_ENV = "CREDIT_RISK_WORKERS"
ORPHAN_CHECK_SECONDS = 1.0


def assess_one(live: "LiveModel", row: np.ndarray) -> tuple | Exception:
    """Probability, score and reasons of one applicant row, or the error scoring it."""
    try:
        (probability,), (score,), (reasons,) = live.assess(row[np.newaxis])
    except Exception as error:  # noqa: BLE001 - this applicant's answer is the error
        return ScoringError(f"the model could not score this applicant: {error}")
    return probability, score, reasons


def workers_setting() -> tuple[int | str, str | None]:
    """BentoML's ``workers``: ``$CREDIT_RISK_WORKERS`` (a whole number from 1), else one per
    core (``cpu_count``: the container's CPU limit where it has one); and the error of a bad
    setting (the service then refuses to start, one line)."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if not value:
        return "cpu_count", None
    if value.isdecimal() and int(value) >= 1:
        return int(value), None
    return 1, f"{WORKERS_ENV} must be a whole number of workers from 1, got {value!r}"


WORKERS, WORKERS_ERROR = workers_setting()


def keep_api_methods(instance: object) -> None:
    """Build the service's API methods once, as attributes of ``instance``.

    BentoML finds the API method of every request with ``getattr`` on the service instance,
    and its descriptor (``APIMethod.__get__``, BentoML 1.4) builds a new wrapper each time,
    with ``inspect.signature``: about 11 µs a request. An attribute of the instance comes before
    that descriptor (it defines no ``__set__``), so the wrappers it built once are used.
    """
    for name in CreditRiskService.apis:
        setattr(instance, name, getattr(instance, name))


def stop_when_orphaned() -> None:
    """Stop this worker (or the start check) when ``bentoml serve`` is gone.

    BentoML starts each worker in a session of its own, so a signal to ``bentoml serve``'s
    process group does not reach it; after ``kill -9`` of ``bentoml serve`` the worker (and
    its shipping process) would go on holding the port. A worker whose parent is gone stops as
    ``bentoml serve`` stops it (SIGTERM), and exits at once if that takes over 10 s.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


FORK = multiprocessing.get_context("fork")


def check_in_child(model: bentoml.Model, in_bento: bool) -> None:
    """The start check, run by ``bentoml serve`` in a forked child: scikit-learn, MLflow and
    the model it loads go with the child, instead of staying in ``bentoml serve``'s own process
    for as long as it serves (about 280 MB; see docs/performance.md)."""
    from credit_risk.serving.production_follower import check_before_start

    stop_when_orphaned()  # `kill -9` of `bentoml serve` ends a check held up by the registry
    check_before_start(model, in_bento)


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    workers=WORKERS,
    traffic={"timeout": 60},
    # Per-request costs /predict can do without (see docs/performance.md): every prediction is
    # in the prediction log anyway, and /metrics still counts requests and latencies.
    tracing={"excluded_urls": ["/predict"]},
    logging={"access": {"enabled": False}},
)
class CreditRiskService:
    """Scores applicants with the Production model and logs every prediction."""

    bento_model = ImportedModel(f"{BENTO_MODEL}:latest")

    @bentoml.on_deployment
    def check_start():
        """Runs once in ``bentoml serve`` before the workers: the checks of
        :func:`~credit_risk.serving.production_follower.check_before_start`, in a child
        process. A refusal is one line on stderr and exit status 1."""
        if WORKERS_ERROR:
            print(f"credit-risk service: refusing to start: {WORKERS_ERROR}", file=sys.stderr)
            raise SystemExit(1)
        model = CreditRiskService.inner.bento_model.resolve()
        in_bento = CreditRiskService.bento is not None
        check = FORK.Process(target=check_in_child, args=(model, in_bento), name="start-check")
        check.start()
        check.join()
        if check.exitcode not in (0, 1):  # 1: the check printed its refusal
            print(
                f"credit-risk service: refusing to start: the start check ended with exit "
                f"status {check.exitcode}",
                file=sys.stderr,
            )
        if check.exitcode != 0:
            raise SystemExit(1)

    def __init__(self):
        # Imported here, in the workers: `bentoml serve`'s own process imports this module too
        from credit_risk.serving.live_model import imported_model
        from credit_risk.serving.production_follower import (
            ProductionFollower,
            serving_tracking_uri,
        )

        stop_when_orphaned()
        self.live = imported_model(self.bento_model)
        uri = serving_tracking_uri(in_bento=CreditRiskService.bento is not None)
        self.log = PredictionLog(log_directory())
        self.shipper = self.follower = None
        if uri is not None:
            self.follower = ProductionFollower(self.live, uri, self.swap)
            self.follower.check_once()
            self.follower.start()
            self.shipper = ShipperProcess(self.log.directory, uri)
            if bentoml.server_context.worker_index in (None, 1):  # one for the directory
                self.shipper.start()
        # Model calls and log writes leave the event loop: /predict groups in one thread,
        # batches in another, each with one OpenMP thread (a limit that is per thread). More
        # compete with the event loop and each other for the cores: HistGradientBoosting's
        # per-tree parallel regions then wait on each other (see docs/performance.md). The
        # leaf masks evaluate a batch's chunks of rows on every core, in numpy without the lock.
        self.scorer, self.batch_scorer = (
            ThreadPoolExecutor(
                1, thread_name_prefix=name, initializer=threadpool_limits, initargs=(1,)
            )
            for name in ("scorer", "batch-scorer")
        )
        self.group_commit = GroupCommit(self.score_group, self.scorer)
        keep_api_methods(self)
        # Start-up objects never become garbage: keep them out of every later collection. Full
        # collections of what BentoML allocates later are slow (see docs/performance.md):
        # young generations are collected as usual, full ones almost never.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)

    # The API methods answer with ready responses, status included. (A ``bentoml.Context``
    # parameter would make BentoML overwrite that status with the context's, 200.)
    @bentoml.api(route="/predict", input_spec=ApplicantInput, output_spec=Prediction)
    async def predict(self, **applicant) -> Response:
        """Score one applicant (the bare body): ``prediction``, ``probability``, ``score``,
        ``reasons``, ... logged before the answer; with concurrent calls in one group."""
        return await routes.predict(self, applicant, CreditRiskService.context.request)

    @bentoml.api(route="/predict/batch", input_spec=BatchRequest, output_spec=BatchResponse)
    async def predict_batch(self, applicants: list[dict]) -> Response:
        """Score up to 10,000 applicants: ``{"applicants": [...]}`` -> ``{"predictions":
        [...]}``, all logged before the answer, or none and an error."""
        return await routes.predict_batch(self, applicants, CreditRiskService.context.request)

    def swap(self, live: "LiveModel") -> None:
        """The follower's callback: score with a newly verified model from the next group on
        (a group reads :attr:`live` once)."""
        self.live = live

    def refusal(self) -> str | None:
        """Why predictions are refused now (no Production version, or strict mode and a
        Production version that failed verification), or None."""
        if self.follower is not None and not self.follower.state["serving"]:
            return self.follower.state["error"]
        return None

    def assess(self, applicants: list[dict]) -> list[dict | Exception]:
        """A prediction (with score and reason codes) per applicant, unlogged, all by one model;
        an applicant the model fails on gets the exception, the others scored one by one so
        that only it fails."""
        live = self.live
        # One flat list of values converts faster than a list of rows (None becomes NaN)
        values = np.array(list(chain.from_iterable(map(FEATURE_VALUES, applicants))), "float64")
        values = values.reshape(len(applicants), len(FEATURE_NAMES))
        try:
            assessed = list(zip(*live.assess(values), strict=True))
        except Exception:  # noqa: BLE001 - find the applicant(s) the model cannot score
            assessed = [assess_one(live, row) for row in values]
        now = datetime.now(UTC).isoformat()
        ids = os.urandom(16 * len(applicants)).hex()
        threshold, version = live.served.decision_threshold, live.served.model_version
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

    def score_group(
        self, applicants: list[dict], api_keys: list[str | None]
    ) -> list[dict | Exception]:
        """``/predict`` groups: predictions, the scored ones logged durably (one fsync) first,
        each with the name of its caller's key."""
        predictions = self.assess(applicants)
        self.log.append(
            [
                {**prediction, "inputs": applicant, "api_key": api_key}
                for applicant, prediction, api_key in zip(
                    applicants, predictions, api_keys, strict=True
                )
                if not isinstance(prediction, Exception)
            ]
        )
        return predictions

    def score_batch(self, applicants: list[dict], api_key: str | None) -> list[dict]:
        """``/predict/batch``: all predictions logged durably (with the name of the caller's
        key), or none and an error."""
        predictions = self.assess(applicants)
        failed = [i for i, p in enumerate(predictions) if isinstance(p, Exception)]
        if failed:
            raise ScoringError(f"applicant {failed[0]}: {predictions[failed[0]]}")
        self.log.append(
            [
                {**prediction, "inputs": applicant, "api_key": api_key}
                for applicant, prediction in zip(applicants, predictions, strict=True)
            ]
        )
        return predictions

    def status(self) -> dict:
        """``GET /``: basic status."""
        served = self.live.served
        return {
            "service": "credit-risk",
            "status": "ok",
            "model_name": served.model_name,
            "model_version": served.model_version,
            "endpoints": ["/health", "/model/info", "/predict", "/predict/batch"],
        }

    def health(self) -> dict:
        """``GET /health``: ``failing`` if it cannot log or must not serve, ``degraded`` if
        shipping fails or the registry could not confirm the model is Production."""
        live = self.live
        version = live.served.model_version
        shipping = self.shipper.status(version) if self.shipper else {"enabled": False}
        registry = dict(self.follower.state) if self.follower else {"production_verified": False}
        if not self.shipper:
            shipping["status"] = registry["check"] = NO_TRACKING_STORE
        local_ok = self.log.error is None
        if not local_ok or self.refusal():
            status = "failing"
        elif self.follower and not (registry["production_verified"] and shipping["ok"]):
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "model_loaded": True,
            "model_version": version,
            "model_stage": live.served.model_stage,
            "model_since": live.since,
            "model_loaded_from": live.loaded_from,
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
        """``GET /model/info``: the :class:`ServedModel` record, since when and from where it
        is served, the reason code table and the start-up (imported) BentoML model's tag."""
        live = self.live
        return live.served.model_dump() | {
            "served_since": live.since,
            "loaded_from": live.loaded_from,
            "reason_codes": [asdict(code) for code in REASON_CODES],
            "bento_model": str(self.bento_model.tag),
        }


replace_bentoml_timeout()  # before BentoML builds the workers' apps
CreditRiskService.add_asgi_middleware(ApiKeyAuth)  # first: no body is read without a key
CreditRiskService.add_asgi_middleware(RequestBodies)
