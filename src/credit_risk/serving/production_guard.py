"""The served model must be the registry's Production version: checked at start, then watched.

``bentoml serve`` checks once before its workers start (:func:`production_check`). If the
registry answers that another version (or another run, or another model file) is Production,
or that there is none, the service refuses to start. If the registry cannot be reached, it
serves the imported model (it was Production when imported) unverified and says so in
``/health``, unless ``CREDIT_RISK_REQUIRE_REGISTRY`` is set. Each worker then re-checks in the
background (:class:`ProductionGuard`); when the registry answers that the served model is no
longer Production, the worker stops answering predictions (until it is Production again, or a
new import is deployed).
"""

import os
import threading
import time
from datetime import UTC, datetime

from credit_risk.registry.lookups import production_version
from credit_risk.registry.names import MODEL_NAME, PRODUCTION_ALIAS, TAG_MODEL_SHA256
from credit_risk.registry.store import TrackingError, connect, project_root, redact, tracking_errors
from credit_risk.serving.release import ServedModel

REQUIRE_REGISTRY_ENV = "CREDIT_RISK_REQUIRE_REGISTRY"
CHECK_INTERVAL_ENV = "CREDIT_RISK_REGISTRY_CHECK_INTERVAL"


class StartRefused(RuntimeError):
    """The registry answered: the model to serve is not its Production version."""


def registry_required() -> bool:
    """``CREDIT_RISK_REQUIRE_REGISTRY`` set (``1``/``true``/``yes``): refuse unverified starts."""
    return os.environ.get(REQUIRE_REGISTRY_ENV, "").strip().lower() in ("1", "true", "yes")


def serving_tracking_uri(in_bento: bool) -> str | None:
    """The tracking store the service checks and ships to, or None for none.

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


def production_check(served: ServedModel, served_tag: str, uri: str) -> None:
    """Raise :class:`StartRefused` unless the registry at ``uri`` has ``served`` in Production
    (same version, run and model file SHA256); :class:`TrackingError` if it cannot say."""
    client = connect(uri)
    with tracking_errors(uri):
        version = production_version(client)
    where = f"{MODEL_NAME} Production (alias @{PRODUCTION_ALIAS}) in MLflow at {redact(uri)}"
    if version is None:
        raise StartRefused(
            f"MLflow at {redact(uri)} has no Production version of {MODEL_NAME} (alias "
            f"@{PRODUCTION_ALIAS}); nothing to serve"
        )
    if str(version.version) != served.model_version:
        raise StartRefused(
            f"{where} is version {version.version}, but the BentoML model {served_tag} is "
            f"version {served.model_version}; run `credit-risk import` first"
        )
    registered = (version.run_id, version.tags.get(TAG_MODEL_SHA256))
    if registered != (served.run_id, served.model_sha256):
        raise StartRefused(
            f"{where} is version {version.version} of run {version.run_id} with model SHA256 "
            f"{registered[1]}, but the BentoML model {served_tag} holds run {served.run_id} "
            f"with {served.model_sha256} (a recreated store?); run `credit-risk import` first"
        )


class ProductionGuard(threading.Thread):
    """Background re-check of :func:`production_check`; never dies, reports in ``state``."""

    def __init__(self, served: ServedModel, served_tag: str, uri: str, verified: bool):
        super().__init__(name="production-guard", daemon=True)
        self.served, self.served_tag, self.uri = served, served_tag, uri
        self.interval = float(os.environ.get(CHECK_INTERVAL_ENV) or 60)
        self.state = {
            "tracking_uri": redact(uri),
            "production_verified": verified,
            "serving": True,
            "last_check": None,
            "last_success": None,
            "error": None,
        }

    def run(self) -> None:
        while True:
            self.check_once()
            time.sleep(self.interval)

    def check_once(self) -> None:
        """One check; a refusal stops serving, an unreachable registry leaves things as they are."""
        now = datetime.now(UTC).isoformat()
        try:
            production_check(self.served, self.served_tag, self.uri)
        except StartRefused as refusal:
            self.state |= {"production_verified": False, "serving": False, "error": str(refusal)}
        except Exception as error:  # noqa: BLE001 - unreachable or failing registry: retry later
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            self.state["error"] = f"registry not reachable, serving unverified: {message}"
        else:
            self.state |= {
                "production_verified": True,
                "serving": True,
                "last_success": now,
                "error": None,
            }
        self.state["last_check"] = now


def unverified_start_message(error: TrackingError) -> str:
    """The one line ``bentoml serve`` prints when it starts without the registry's answer."""
    return (
        f"credit-risk service: registry unreachable, serving the imported model unverified "
        f"(set {REQUIRE_REGISTRY_ENV}=1 to refuse instead): {error}"
    )
