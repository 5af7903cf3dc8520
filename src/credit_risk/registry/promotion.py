"""The promotion gate and the move of the Production alias and stage between versions."""

import warnings

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from credit_risk.registry.lookups import production_version
from credit_risk.registry.names import (
    ARCHIVED_STAGE,
    MODEL_NAME,
    PRODUCTION_ALIAS,
    PRODUCTION_STAGE,
    TAG_GATE_DECISION,
    TAG_GATE_REASON,
)
from credit_risk.registry.registration_lock import registration_lock
from credit_risk.registry.store import configure_tracking, project_root, redact, tracking_errors

PROMOTED, REJECTED, PROMOTED_BY_HAND = "promoted", "rejected", "promoted_by_hand"


def gate(client: MlflowClient, metrics: dict[str, float], settings: dict) -> tuple[str, str]:
    """(``promoted`` | ``rejected``, why) for a new version with these test-split ``metrics``.

    ``settings`` is params.yaml's ``register`` section: ``min_auc``, ``max_calibration_error``
    and ``max_auc_drop`` (the most the AUC may fall below the current Production version's).
    """
    auc, calibration = metrics["roc_auc"], metrics["calibration_error"]
    min_auc, max_drop = float(settings["min_auc"]), float(settings["max_auc_drop"])
    max_calibration = float(settings["max_calibration_error"])
    if auc < min_auc:
        return REJECTED, f"test ROC AUC {auc:.4f} is below register.min_auc {min_auc}"
    if calibration > max_calibration:
        return REJECTED, (
            f"test calibration error {calibration:.4f} is above register.max_calibration_error "
            f"{max_calibration}"
        )
    current = production_version(client)
    if current is None:
        return PROMOTED, f"test ROC AUC {auc:.4f} >= register.min_auc {min_auc}; first Production"
    current_auc = client.get_run(current.run_id).data.metrics["roc_auc"]
    if auc < current_auc - max_drop:
        return REJECTED, (
            f"test ROC AUC {auc:.4f} is more than register.max_auc_drop {max_drop} below "
            f"Production version {current.version} ({current_auc:.4f})"
        )
    return PROMOTED, (
        f"test ROC AUC {auc:.4f} >= register.min_auc {min_auc} and within {max_drop} of "
        f"Production version {current.version} ({current_auc:.4f}), which is archived"
    )


def record_decision(client: MlflowClient, version: str, decision: str, reason: str) -> None:
    """Tag the version with the decision; the decision tag last, as the version's "decided"."""
    client.set_model_version_tag(MODEL_NAME, version, TAG_GATE_REASON, reason)
    client.set_model_version_tag(MODEL_NAME, version, TAG_GATE_DECISION, decision)


def promote(client: MlflowClient, version: ModelVersion) -> None:
    """Point the alias and the (deprecated, still shown) stage at this version; archive the
    previous Production version.

    Archiving is done version by version: ``archive_existing_versions=True`` fails on
    PostgreSQL-backed servers (MLflow compares the integer version column with a string).
    """
    client.set_registered_model_alias(MODEL_NAME, PRODUCTION_ALIAS, version.version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated
        if client.get_model_version(MODEL_NAME, version.version).current_stage != PRODUCTION_STAGE:
            client.transition_model_version_stage(MODEL_NAME, version.version, PRODUCTION_STAGE)
        for other in client.search_model_versions(f"name = '{MODEL_NAME}'"):
            if other.current_stage == PRODUCTION_STAGE and other.version != version.version:
                client.transition_model_version_stage(MODEL_NAME, other.version, ARCHIVED_STAGE)


def promote_by_hand(version: int) -> str:
    """Make ``version`` the Production model (alias and stage), bypassing the gate."""
    uri = configure_tracking(project_root())
    client = MlflowClient()
    with tracking_errors(uri), registration_lock(client, "promote"):
        model_version = client.get_model_version(MODEL_NAME, str(version))
        promote(client, model_version)
        record_decision(client, str(version), PROMOTED_BY_HAND, "promoted by hand")
    where = redact(uri)
    return f"{MODEL_NAME} version {version} is now Production (alias @{PRODUCTION_ALIAS}) [{where}]"
