"""Release: the registry's Production version into the BentoML model store, and back-checks.

:func:`import_production` (``credit-risk import``) copies the version the ``production`` alias
points at into the BentoML store with a :class:`ServedModel` record: everything the service
reports about what it serves, the decision threshold included, taken from the registry.
:func:`production_check` runs before ``bentoml serve`` starts its workers.
"""

import os
from datetime import UTC, datetime

import bentoml
from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict, ValidationError

from credit_risk.registry.lookups import production_version
from credit_risk.registry.names import (
    MODEL_NAME,
    PRODUCTION_ALIAS,
    PRODUCTION_STAGE,
    TAG_DATASET_HASH,
    TAG_SERVE_THRESHOLD,
)
from credit_risk.registry.store import (
    configure_tracking,
    project_root,
    tracking_errors,
)

BENTO_MODEL = MODEL_NAME
"""The BentoML store name; each import adds a version."""
SERVED_MODEL_KEY = "served_model"
"""The BentoML model's metadata key holding the :class:`ServedModel` record."""


class ServedModel(BaseModel):
    """What is served: written at import, read by the service, shown by ``/model/info``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    model_version: str
    model_stage: str
    alias: str
    run_id: str
    dataset_hash: str
    decision_threshold: float
    metrics: dict[str, float]
    trained_at: str
    imported_at: str
    tracking_uri: str

    @classmethod
    def of(cls, model: bentoml.Model) -> "ServedModel":
        """The record of a BentoML model made by :func:`import_production`."""
        try:
            return cls.model_validate(model.info.metadata[SERVED_MODEL_KEY])
        except (KeyError, ValidationError):
            raise ValueError(
                f"BentoML model {model.tag} has no valid {SERVED_MODEL_KEY} record: it was not "
                "made by this version of `credit-risk import`; run `credit-risk import`"
            ) from None


class ImportRefused(RuntimeError):
    """There is nothing (valid) to import."""


class StartRefused(RuntimeError):
    """The model to serve is not the registry's Production version."""


def latest_import() -> bentoml.Model | None:
    """The newest ``credit-risk-model`` in the BentoML store, or None."""
    try:
        return bentoml.models.get(f"{BENTO_MODEL}:latest")
    except bentoml.exceptions.NotFound:
        return None


def import_production() -> str:
    """Import the Production version into the BentoML store (unless it is the newest there)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = configure_tracking(project_root())
    client = MlflowClient()
    with tracking_errors(uri):
        version = production_version(client)
        if version is None:
            raise ImportRefused(
                f"MLflow at {uri} has no Production version of {MODEL_NAME} "
                f"(alias @{PRODUCTION_ALIAS}); nothing imported"
            )
        if TAG_SERVE_THRESHOLD not in version.tags:
            raise ImportRefused(
                f"{MODEL_NAME} version {version.version} in MLflow at {uri} has no "
                f"{TAG_SERVE_THRESHOLD} tag; run `dvc repro` (its register stage sets it)"
            )
        run = client.get_run(version.run_id)
    served = ServedModel(
        model_name=MODEL_NAME,
        model_version=str(version.version),
        model_stage=PRODUCTION_STAGE,
        alias=PRODUCTION_ALIAS,
        run_id=version.run_id,
        dataset_hash=run.data.tags.get(TAG_DATASET_HASH, ""),
        decision_threshold=float(version.tags[TAG_SERVE_THRESHOLD]),
        metrics=run.data.metrics,
        trained_at=datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(),
        imported_at=datetime.now(UTC).isoformat(),
        tracking_uri=uri,
    )
    current = latest_import()
    if current is not None and _same_release(current, served):
        return f"{current.tag} is already {MODEL_NAME} version {version.version} (Production)"
    with tracking_errors(uri):
        model = bentoml.mlflow.import_model(
            BENTO_MODEL,
            f"models:/{MODEL_NAME}/{version.version}",
            labels={"registry_version": served.model_version, "run_id": served.run_id},
            metadata={SERVED_MODEL_KEY: served.model_dump()},
        )
    return f"imported {MODEL_NAME} version {version.version} (Production) from {uri} as {model.tag}"


def _same_release(model: bentoml.Model, candidate: ServedModel) -> bool:
    try:
        current = ServedModel.of(model)
    except ValueError:
        return False
    fields = ("model_version", "run_id", "dataset_hash", "decision_threshold", "tracking_uri")
    return all(getattr(current, name) == getattr(candidate, name) for name in fields)


def production_check(served: ServedModel, served_tag: str, in_bento: bool) -> None:
    """Check that the BentoML model to serve is the registry's Production version.

    The tracking store is ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the project folder.
    A built bento (``in_bento``) with ``MLFLOW_TRACKING_URI`` unset serves its packaged model
    unchecked. Raises :class:`StartRefused` (no store, no Production version, or another one
    than served) or :class:`~credit_risk.registry.store.TrackingError` (store unreachable).
    """
    root = project_root()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        if in_bento:
            return
        if not (root / "mlflow.db").exists():
            raise StartRefused(
                f"no tracking store: MLFLOW_TRACKING_URI is not set and there is no "
                f"{root / 'mlflow.db'}; cannot tell which {MODEL_NAME} version is Production"
            )
    uri = configure_tracking(root)
    with tracking_errors(uri):
        version = production_version(MlflowClient())
    if version is None:
        raise StartRefused(
            f"MLflow at {uri} has no Production version of {MODEL_NAME} (alias "
            f"@{PRODUCTION_ALIAS}); nothing to serve"
        )
    if str(version.version) != served.model_version:
        raise StartRefused(
            f"{MODEL_NAME} Production (alias @{PRODUCTION_ALIAS}) in MLflow at {uri} is "
            f"version {version.version}, but the BentoML model {served_tag} is version "
            f"{served.model_version}; run `credit-risk import` first"
        )
