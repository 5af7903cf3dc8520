"""The service serves the registry's Production version, and follows it when it moves.

``bentoml serve`` checks once before its workers start (:func:`check_before_start`): there
must be a Production version; if it is not the imported model, it is downloaded and verified
then, so a bad version is reported before any worker starts. Each worker then asks the
registry every ``CREDIT_RISK_REGISTRY_CHECK_INTERVAL`` seconds (2) which version is Production
(:class:`ProductionFollower`, one small registry call). When the answer changes (a promotion,
a rollback) the worker downloads and verifies that version
(:func:`~credit_risk.serving.live_model.registry_model`) and swaps it in; requests already
being scored finish with the model they started with. A version that fails verification is
never served: the worker keeps the last verified one and reports ``degraded`` (with
``CREDIT_RISK_REQUIRE_REGISTRY`` set it stops answering instead).

When the registry cannot be reached, the worker serves what it has (unverified, ``degraded``),
unless ``CREDIT_RISK_REQUIRE_REGISTRY`` is set at start. When it answers that there is no
Production version, the worker stops answering predictions until there is one.
"""

import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import bentoml
from mlflow.entities.model_registry import ModelVersion

from credit_risk.registry.lookups import production_version
from credit_risk.registry.model_artifact import ModelRefused
from credit_risk.registry.names import MODEL_NAME, PRODUCTION_ALIAS
from credit_risk.registry.store import (
    TrackingError,
    connect,
    load_tracking_password,
    project_root,
    redact,
    tracking_errors,
)
from credit_risk.serving.api_keys import start_up_message
from credit_risk.serving.live_model import LiveModel, imported_model, registry_model
from credit_risk.serving.prediction_log import check_log_directory, log_directory
from credit_risk.serving.release import version_key

REQUIRE_REGISTRY_ENV = "CREDIT_RISK_REQUIRE_REGISTRY"
CHECK_INTERVAL_ENV = "CREDIT_RISK_REGISTRY_CHECK_INTERVAL"
DEFAULT_CHECK_INTERVAL = 2.0
SERVICE = "credit-risk service"


class StartRefused(RuntimeError):
    """The service must not start: no Production version, or (strict) none it may serve."""


def registry_required() -> bool:
    """``CREDIT_RISK_REQUIRE_REGISTRY`` set (``1``/``true``/``yes``): never serve unverified."""
    return os.environ.get(REQUIRE_REGISTRY_ENV, "").strip().lower() in ("1", "true", "yes")


def serving_tracking_uri(in_bento: bool) -> str | None:
    """The tracking store the service follows and ships to, or None for none.

    ``MLFLOW_TRACKING_URI`` if set. Otherwise a built bento has none (it serves its packaged
    model, and does not ship predictions), and a service run from the project folder uses the
    project's ``mlflow.db``, which must exist.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if in_bento:
        return None
    database = project_root() / "mlflow.db"
    if not database.exists():
        raise StartRefused(
            f"no tracking store: MLFLOW_TRACKING_URI is not set and there is no {database}; "
            f"cannot tell which {MODEL_NAME} version is Production"
        )
    return f"sqlite:///{database}"


def current_production(client, uri: str) -> ModelVersion:
    """The Production version; :class:`StartRefused` if there is none, ``TrackingError`` if
    the registry cannot say."""
    with tracking_errors(uri):
        version = production_version(client)
    if version is None:
        raise StartRefused(
            f"MLflow at {redact(uri)} has no Production version of {MODEL_NAME} (alias "
            f"@{PRODUCTION_ALIAS}); nothing to serve"
        )
    return version


def start_check(imported: LiveModel, uri: str) -> str:
    """What ``bentoml serve`` will serve, as one line; raises :class:`StartRefused` when it
    must not start and ``TrackingError`` when the registry cannot be reached."""
    version = current_production(connect(uri), uri)
    served = imported.served.model_version
    if version_key(version) == imported.served.key():
        return f"{SERVICE}: serving {MODEL_NAME} version {served} (Production, imported)"
    try:
        registry_model(uri, version)
    except ModelRefused as refusal:
        if registry_required():
            raise StartRefused(f"Production version {version.version} refused: {refusal}") from None
        return (
            f"{SERVICE}: Production version {version.version} refused, serving the imported "
            f"version {served} instead (degraded): {refusal}"
        )
    return (
        f"{SERVICE}: serving {MODEL_NAME} version {version.version} (Production) from "
        f"{redact(uri)}; the imported version {served} is the fallback"
    )


def check_before_start(model: bentoml.Model, in_bento: bool) -> None:
    """Everything ``bentoml serve`` checks once before its workers start, each finding one line
    on stderr: the prediction log directory, the imported ``model`` (it must load with the
    trusted types and answer the probes) and the registry (:func:`start_check`). A refusal
    exits with status 1; an unreachable registry is a warning (a refusal when strict)."""
    try:
        check_log_directory(log_directory())
        print(start_up_message(in_bento=in_bento), file=sys.stderr)
        imported = imported_model(model)
        uri = serving_tracking_uri(in_bento)
        if uri is not None:
            print(start_check(imported, uri), file=sys.stderr)
    except TrackingError as error:
        if registry_required():
            print(f"{SERVICE}: refusing to start: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        print(unverified_start_message(error), file=sys.stderr)
    except (StartRefused, ModelRefused, ValueError, OSError) as error:
        print(f"{SERVICE}: refusing to start: {error}", file=sys.stderr)
        raise SystemExit(1) from None


class ProductionFollower(threading.Thread):
    """Keeps a worker on the registry's Production version; never dies, reports in ``state``.

    ``swap`` is called with each newly verified :class:`LiveModel`.
    """

    def __init__(self, live: LiveModel, uri: str, swap: Callable[[LiveModel], None]):
        super().__init__(name="production-follower", daemon=True)
        self.live, self.uri, self.swap = live, uri, swap
        self.client = None  # connected at the first check the registry answers
        self.interval = float(os.environ.get(CHECK_INTERVAL_ENV) or DEFAULT_CHECK_INTERVAL)
        self.refused: tuple | None = None
        """The release key of the last version that failed verification (not tried again)."""
        self.state = {
            "tracking_uri": redact(uri),
            "production_verified": False,
            "serving": True,
            "production_version": None,
            "last_check": None,
            "last_success": None,
            "error": None,
            "last_refusal": None,
        }

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.check_once()

    def check_once(self) -> None:
        """One look at the registry: follow Production, or report why not."""
        now = datetime.now(UTC).isoformat()
        try:
            load_tracking_password()  # a password file changed since is used now
            self.client = self.client or connect(self.uri)
            self._follow(current_production(self.client, self.uri), now)
        except StartRefused as refusal:
            self.state |= {"production_verified": False, "serving": False}
            self.state |= {"production_version": None, "error": f"not serving: {refusal}"}
        except Exception as error:  # noqa: BLE001 - unreachable or failing registry: retry later
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            self.state["production_verified"] = False
            self.state["error"] = f"registry not reachable, serving unverified: {message}"
        self.state["last_check"] = now

    def _follow(self, version: ModelVersion, now: str) -> None:
        key = version_key(version)
        self.state["production_version"] = key[0]
        if key != self.live.served.key() and key != self.refused:
            self._try_swap(version, key, now)
        if key == self.live.served.key():
            self.state |= {"production_verified": True, "serving": True, "error": None}
            self.state["last_success"] = now
            return
        strict = registry_required()
        served = self.live.served.model_version
        then = (
            "not serving (CREDIT_RISK_REQUIRE_REGISTRY)" if strict else f"serving version {served}"
        )
        refusal = self.state["last_refusal"]["error"]
        self.state |= {"production_verified": False, "serving": not strict}
        self.state["error"] = f"Production version {key[0]} failed verification: {refusal}; {then}"

    def _try_swap(self, version: ModelVersion, key: tuple, now: str) -> None:
        """Download and verify ``version``; swap it in, or remember and log the refusal.
        Errors reaching the registry propagate (tried again at the next check)."""
        previous = self.live.served.model_version
        try:
            live = registry_model(self.uri, version)
        except ModelRefused as refusal:
            self.refused = key
            self.state["last_refusal"] = {"version": key[0], "error": str(refusal), "at": now}
            print(
                f"{SERVICE}: {MODEL_NAME} version {key[0]} (Production) refused, still serving "
                f"version {previous}: {refusal}",
                file=sys.stderr,
                flush=True,
            )
            return
        self.live, self.refused = live, None
        self.swap(live)
        print(
            f"{SERVICE}: now serving {MODEL_NAME} version {key[0]} (Production), "
            f"replacing version {previous}",
            file=sys.stderr,
            flush=True,
        )


def unverified_start_message(error: TrackingError) -> str:
    """The one line ``bentoml serve`` prints when it starts without the registry's answer."""
    return (
        f"{SERVICE}: registry unreachable, serving the imported model unverified "
        f"(set {REQUIRE_REGISTRY_ENV}=1 to refuse instead): {error}"
    )
