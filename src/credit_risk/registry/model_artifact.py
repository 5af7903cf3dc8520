"""A registry version's model, loaded only once it is known to be the registered one.

Nothing in the artifact decides how it is loaded: the file must be skops, match the SHA256
recorded at registration (``model_sha256``) and hold only the project's trusted types. Used by
``credit-risk import`` and by the promotion gate to score the Production model.
"""

import os
import tempfile
from pathlib import Path

import yaml
from mlflow.entities.model_registry import ModelVersion

from credit_risk.ml.fingerprints import file_sha256
from credit_risk.registry.names import MODEL_NAME, TAG_MODEL_SHA256
from credit_risk.registry.store import tracking_errors

MODEL_FILE = "model.skops"
"""The model file in the MLflow artifact."""


class ModelRefused(RuntimeError):
    """The artifact is not the registered, loadable skops model."""


def verified_model(artifact: Path, version: str, sha256: str):
    """The sklearn Pipeline in the downloaded ``artifact`` of ``version``, registered with
    ``sha256``; raises :class:`ModelRefused` for anything else."""
    where = f"{MODEL_NAME} version {version}"
    try:
        flavor = yaml.safe_load((artifact / "MLmodel").read_text())["flavors"]["sklearn"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise ModelRefused(f"{where}: the artifact has no scikit-learn MLmodel; refusing") from None
    stored = (flavor.get("serialization_format"), flavor.get("pickled_model"))
    if stored != ("skops", MODEL_FILE):
        raise ModelRefused(
            f"{where}: the model is stored as {stored[0]!r} in {stored[1]!r}, not as skops in "
            f"{MODEL_FILE!r}; only skops files are loaded: refusing"
        )
    model_file = artifact / MODEL_FILE
    digest = file_sha256(model_file)
    if digest != sha256:
        raise ModelRefused(
            f"{where}: {MODEL_FILE} has SHA256 {digest}, but {sha256} was "
            "registered; the artifact was changed after registration: refusing"
        )
    from credit_risk.ml.model_file import load_model  # skops and scikit-learn: slow to import

    try:
        return load_model(model_file)
    except Exception as error:  # noqa: BLE001 - skops refuses untrusted types in many ways
        raise ModelRefused(f"{where}: {MODEL_FILE} does not load: {error}") from None


def download_artifact(version: str, uri: str, folder: str | Path) -> Path:
    """Download ``version``'s model artifact from the registry at ``uri`` into ``folder``."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not MLflow's global settings
    with tracking_errors(uri):
        source = client.get_model_version_download_uri(MODEL_NAME, version)
        return Path(download_artifacts(source, dst_path=str(folder), tracking_uri=uri))


def download_verified_model(version: ModelVersion, uri: str):
    """Download ``version`` from the registry at ``uri`` and load it, verified."""
    sha256 = version.tags.get(TAG_MODEL_SHA256)
    if sha256 is None:
        raise ModelRefused(
            f"{MODEL_NAME} version {version.version} has no {TAG_MODEL_SHA256} tag: refusing"
        )
    with tempfile.TemporaryDirectory() as folder:
        artifact = download_artifact(version.version, uri, folder)
        return verified_model(artifact, version.version, sha256)
