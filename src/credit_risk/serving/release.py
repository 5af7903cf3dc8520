"""Release: the registry's Production version into the BentoML model store, verified.

:func:`import_production` (``credit-risk import``) copies the skops file of the version the
``production`` alias points at into the BentoML store, with a :class:`ServedModel` record:
everything the service reports about what it serves, the decision threshold included, taken
from the registry. Nothing in the artifact decides how it is loaded: the file must be skops,
match the SHA256 recorded at registration (``model_sha256``) and hold only the project's
trusted types (:mod:`credit_risk.registry.model_artifact`); the service checks all of it
again before it serves the file (:mod:`credit_risk.serving.live_model`).
The training run's reference profile (drift reference) is copied along, its SHA256 recorded.
"""

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import bentoml
from pydantic import BaseModel, ConfigDict, ValidationError

from credit_risk.ml.contract import REASON_CODES_VERSION
from credit_risk.ml.fingerprints import file_sha256
from credit_risk.ml.profile import read_profile
from credit_risk.registry.lookups import production_version
from credit_risk.registry.model_artifact import MODEL_FILE, download_artifact, verified_model
from credit_risk.registry.names import (
    MODEL_NAME,
    PRODUCTION_ALIAS,
    PRODUCTION_STAGE,
    PROFILE_ARTIFACT,
    TAG_DATASET_HASH,
    TAG_MODEL_SHA256,
    TAG_SCORE_SCALE,
    TAG_SERVE_THRESHOLD,
)
from credit_risk.registry.store import configure_tracking, project_root, redact, tracking_errors
from credit_risk.serving.bento_store import BENTO_MODEL

SERVED_MODEL_KEY = "served_model"
"""The BentoML model's metadata key holding the :class:`ServedModel` record."""
PROFILE_FILE = PROFILE_ARTIFACT
"""The reference profile of the training run, in the BentoML model (when the run has one)."""


class ServedModel(BaseModel):
    """What is served: written at import, read by the service, shown by ``/model/info``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    model_version: str
    model_stage: str
    alias: str
    run_id: str
    dataset_hash: str
    model_sha256: str
    decision_threshold: float
    score_scale: dict[str, float]
    """:class:`~credit_risk.ml.scorecard.ScoreScale` as a dict."""
    reason_codes_version: int
    metrics: dict[str, float]
    trained_at: str
    imported_at: str
    tracking_uri: str
    """Where it was imported from, with any password redacted."""
    reference_profile_sha256: str = ""
    """SHA256 of the BentoML model's reference profile; empty if its run has none (logged
    before profiles existed)."""

    def key(self) -> tuple[str, str, str]:
        """What identifies the release: registry version, run and model file SHA256."""
        return self.model_version, self.run_id, self.model_sha256

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


def version_key(version) -> tuple[str, str, str | None]:
    """:meth:`ServedModel.key` of a registry ``ModelVersion``."""
    return str(version.version), version.run_id, version.tags.get(TAG_MODEL_SHA256)


class ImportRefused(RuntimeError):
    """There is nothing (valid) to import."""


def latest_import() -> bentoml.Model | None:
    """The newest ``credit-risk-model`` in the BentoML store, or None."""
    try:
        return bentoml.models.get(f"{BENTO_MODEL}:latest")
    except bentoml.exceptions.NotFound:
        return None


def import_production() -> str:
    """Import the Production version into the BentoML store (unless it is the newest there)."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = configure_tracking(project_root())
    client = MlflowClient()
    with tracking_errors(uri):
        version = production_version(client)
        if version is None:
            raise ImportRefused(
                f"MLflow at {redact(uri)} has no Production version of {MODEL_NAME} "
                f"(alias @{PRODUCTION_ALIAS}); nothing imported: run `dvc repro` (it registers "
                "the model and promotes it if it passes the gate)"
            )
        served = registry_record(client, uri, version, PRODUCTION_STAGE, PRODUCTION_ALIAS)
    with tempfile.TemporaryDirectory() as folder:
        profile = download_profile(client, uri, version.run_id, Path(folder))
        if profile is not None:
            served = served.model_copy(update={"reference_profile_sha256": file_sha256(profile)})
        current = latest_import()
        if current is not None and _same_release(current, served):
            return f"{current.tag} is already {MODEL_NAME} version {version.version} (Production)"
        model_file = download_verified(uri, served, Path(folder))
        with bentoml.models.create(
            BENTO_MODEL,
            labels={"registry_version": served.model_version, "run_id": served.run_id},
            metadata={SERVED_MODEL_KEY: served.model_dump()},
        ) as model:
            shutil.copyfile(model_file, model.path_of(MODEL_FILE))
            if profile is not None:
                shutil.copyfile(profile, model.path_of(PROFILE_FILE))
    return (
        f"imported {MODEL_NAME} version {version.version} (Production) from {redact(uri)} "
        f"as {model.tag}"
    )


def download_profile(client, uri: str, run_id: str, folder: Path) -> Path | None:
    """The training run's reference profile, downloaded into ``folder`` and checked; None if
    the run has none (logged before profiles existed)."""
    from mlflow.artifacts import download_artifacts

    with tracking_errors(uri):
        if PROFILE_ARTIFACT not in {artifact.path for artifact in client.list_artifacts(run_id)}:
            return None
        target = str(folder / "profile")
        profile = download_artifacts(
            run_id=run_id, artifact_path=PROFILE_ARTIFACT, dst_path=target, tracking_uri=uri
        )
    profile = Path(profile)
    read_profile(profile)
    return profile


def registry_record(client, uri: str, version, stage: str, alias: str) -> ServedModel:
    """The :class:`ServedModel` record of a registry ``version`` (a ``ModelVersion``); raises
    :class:`ImportRefused` when it lacks a tag the register stage sets."""
    with tracking_errors(uri):
        for tag in (TAG_SERVE_THRESHOLD, TAG_SCORE_SCALE, TAG_MODEL_SHA256):
            if tag not in version.tags:
                raise ImportRefused(
                    f"{MODEL_NAME} version {version.version} in MLflow at {redact(uri)} has no "
                    f"{tag} tag; run `dvc repro` (its register stage sets it)"
                )
        run = client.get_run(version.run_id)
    return ServedModel(
        model_name=MODEL_NAME,
        model_version=str(version.version),
        model_stage=stage,
        alias=alias,
        run_id=version.run_id,
        dataset_hash=run.data.tags.get(TAG_DATASET_HASH, ""),
        model_sha256=version.tags[TAG_MODEL_SHA256],
        decision_threshold=float(version.tags[TAG_SERVE_THRESHOLD]),
        score_scale=json.loads(version.tags[TAG_SCORE_SCALE]),
        reason_codes_version=REASON_CODES_VERSION,
        metrics=run.data.metrics,
        trained_at=datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(),
        imported_at=datetime.now(UTC).isoformat(),
        tracking_uri=redact(uri),
    )


def download_verified(uri: str, served: ServedModel, folder: Path) -> Path:
    """The model file of ``served``'s registry version, downloaded into ``folder`` and
    verified (:func:`verified_model_file`)."""
    artifact = download_artifact(served.model_version, uri, folder / "model")
    return verified_model_file(artifact, served)


def verified_model_file(artifact: Path, served: ServedModel) -> Path:
    """The artifact's skops file, once it is known to be the registered, loadable model."""
    verified_model(artifact, served.model_version, served.model_sha256)
    return artifact / MODEL_FILE


def verify_model_file(model: bentoml.Model, served: ServedModel) -> Path:
    """The imported model file, once its SHA256 is the one recorded at import."""
    path = Path(model.path_of(MODEL_FILE))
    digest = file_sha256(path)
    if digest != served.model_sha256:
        raise ValueError(
            f"BentoML model {model.tag}: {path} has SHA256 {digest}, but version "
            f"{served.model_version} was imported with {served.model_sha256}: refusing to serve"
        )
    return path


def served_profile(model: bentoml.Model, served: ServedModel) -> dict:
    """The imported model's reference profile, once its SHA256 is the one recorded at import."""
    if not served.reference_profile_sha256:
        raise ValueError(
            f"BentoML model {model.tag} ({MODEL_NAME} version {served.model_version}) has no "
            "reference profile: its training run was logged before profiles existed; run "
            "`dvc repro` (it adds the profile to the run), then `credit-risk import`"
        )
    path = Path(model.path_of(PROFILE_FILE))
    digest = file_sha256(path) if path.is_file() else "absent"
    if digest != served.reference_profile_sha256:
        raise ValueError(
            f"BentoML model {model.tag}: {path} has SHA256 {digest}, but "
            f"{served.reference_profile_sha256} was imported: refusing to use it"
        )
    return read_profile(path)


def _same_release(model: bentoml.Model, candidate: ServedModel) -> bool:
    try:
        current = ServedModel.of(model)
    except ValueError:
        return False
    fields = (
        "model_version",
        "run_id",
        "model_sha256",
        "decision_threshold",
        "score_scale",
        "reason_codes_version",
        "tracking_uri",
        "reference_profile_sha256",
    )
    return all(getattr(current, name) == getattr(candidate, name) for name in fields)
