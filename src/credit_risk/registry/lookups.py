"""Lookups in the tracking store: the experiment, runs by model fingerprint, versions."""

from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from credit_risk.registry.names import (
    EXPERIMENT_NAME,
    MODEL_NAME,
    PRODUCTION_ALIAS,
    TAG_MODEL_FINGERPRINT,
)
from credit_risk.registry.store import embedded_tracking_uri


def production_version(client: MlflowClient) -> ModelVersion | None:
    """The version the ``production`` alias points at, or None."""
    return registry_version(client, PRODUCTION_ALIAS)


def registry_version(client: MlflowClient, reference: str) -> ModelVersion | None:
    """The version ``reference`` names (a version number, else an alias), or None."""
    try:
        if reference.isdigit():
            return client.get_model_version(MODEL_NAME, reference)
        return client.get_model_version_by_alias(MODEL_NAME, reference)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def get_or_create_experiment(client: MlflowClient, uri: str, root: Path) -> str:
    """The experiment's id in the store at ``uri``, creating it (for the embedded store of the
    project at ``root``, with artifacts in the project's ``mlartifacts/``)."""
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri == embedded_tracking_uri(root):
        artifact_location = (root / "mlartifacts").as_uri()
    return client.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location)


def find_training_run(client: MlflowClient, experiment_id: str, fingerprint: str) -> str | None:
    """A finished run that already logged the model with this fingerprint (tagged last)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{TAG_MODEL_FINGERPRINT} = '{fingerprint}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def find_version(client: MlflowClient, run_id: str) -> ModelVersion | None:
    """The first registry version made from ``run_id``, or None."""
    versions = client.search_model_versions(f"name = '{MODEL_NAME}' and run_id = '{run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None
