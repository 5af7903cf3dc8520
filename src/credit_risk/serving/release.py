"""Release: the registry's Production version into the BentoML model store, verified.

:func:`import_production` (``credit-risk import``) copies the skops file of the version the
``production`` alias points at into the BentoML store, with a :class:`ServedModel` record:
everything the service reports about what it serves, the decision threshold included, taken
from the registry. Nothing in the artifact decides how it is loaded: the file must be skops,
match the SHA256 recorded at registration (``model_sha256``) and hold only the project's
trusted types; :func:`load_served_model` checks the hash again before the service uses it.
The training run's reference profile (drift reference) is copied along, its SHA256 recorded.
"""

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import bentoml
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from credit_risk.ml.contract import REASON_CODES_VERSION
from credit_risk.ml.fingerprints import file_sha256
from credit_risk.ml.profile import read_profile
from credit_risk.registry.lookups import production_version
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

BENTO_MODEL = MODEL_NAME
"""The BentoML store name; each import adds a version."""
SERVED_MODEL_KEY = "served_model"
"""The BentoML model's metadata key holding the :class:`ServedModel` record."""
MODEL_FILE = "model.skops"
"""The model file, in the MLflow artifact and in the BentoML model."""
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


def latest_import() -> bentoml.Model | None:
    """The newest ``credit-risk-model`` in the BentoML store, or None."""
    try:
        return bentoml.models.get(f"{BENTO_MODEL}:latest")
    except bentoml.exceptions.NotFound:
        return None


def import_production() -> str:
    """Import the Production version into the BentoML store (unless it is the newest there)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = configure_tracking(project_root())
    client = MlflowClient()
    with tracking_errors(uri):
        version = production_version(client)
        if version is None:
            raise ImportRefused(
                f"MLflow at {redact(uri)} has no Production version of {MODEL_NAME} "
                f"(alias @{PRODUCTION_ALIAS}); nothing imported"
            )
        for tag in (TAG_SERVE_THRESHOLD, TAG_SCORE_SCALE, TAG_MODEL_SHA256):
            if tag not in version.tags:
                raise ImportRefused(
                    f"{MODEL_NAME} version {version.version} in MLflow at {redact(uri)} has no "
                    f"{tag} tag; run `dvc repro` (its register stage sets it)"
                )
        run = client.get_run(version.run_id)
        artifacts = {artifact.path for artifact in client.list_artifacts(version.run_id)}
    served = ServedModel(
        model_name=MODEL_NAME,
        model_version=str(version.version),
        model_stage=PRODUCTION_STAGE,
        alias=PRODUCTION_ALIAS,
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
    with tempfile.TemporaryDirectory() as folder:
        profile = None
        if PROFILE_ARTIFACT in artifacts:
            with tracking_errors(uri):
                profile = Path(download_artifacts(run_id=version.run_id,
                    artifact_path=PROFILE_ARTIFACT, dst_path=f"{folder}/profile"))  # fmt: skip
            read_profile(profile)
            served = served.model_copy(update={"reference_profile_sha256": file_sha256(profile)})
        current = latest_import()
        if current is not None and _same_release(current, served):
            return f"{current.tag} is already {MODEL_NAME} version {version.version} (Production)"
        with tracking_errors(uri):
            artifact = download_artifacts(
                f"models:/{MODEL_NAME}/{version.version}", dst_path=f"{folder}/model"
            )
        model_file = verified_model_file(Path(artifact), served)
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


def verified_model_file(artifact: Path, served: ServedModel) -> Path:
    """The artifact's skops file, once it is known to be the registered, loadable model."""
    where = f"{MODEL_NAME} version {served.model_version}"
    try:
        flavor = yaml.safe_load((artifact / "MLmodel").read_text())["flavors"]["sklearn"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise ImportRefused(
            f"{where}: the artifact has no scikit-learn MLmodel; refusing"
        ) from None
    stored = (flavor.get("serialization_format"), flavor.get("pickled_model"))
    if stored != ("skops", MODEL_FILE):
        raise ImportRefused(
            f"{where}: the model is stored as {stored[0]!r} in {stored[1]!r}, not as skops in "
            f"{MODEL_FILE!r}; only skops files are loaded: refusing"
        )
    model_file = artifact / MODEL_FILE
    digest = file_sha256(model_file)
    if digest != served.model_sha256:
        raise ImportRefused(
            f"{where}: {MODEL_FILE} has SHA256 {digest}, but {served.model_sha256} was "
            "registered; the artifact was changed after registration: refusing"
        )
    from credit_risk.ml.model_file import load_model  # skops and scikit-learn: slow to import

    try:
        load_model(model_file)
    except Exception as error:  # noqa: BLE001 - skops refuses untrusted types in many ways
        raise ImportRefused(f"{where}: {MODEL_FILE} does not load: {error}") from None
    return model_file


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


def load_served_model(model: bentoml.Model, served: ServedModel):
    """The imported model's sklearn Pipeline, its file checked once more."""
    from credit_risk.ml.model_file import load_model

    return load_model(verify_model_file(model, served))


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
