"""The promotion gate, the move of Production between versions, and promotion by hand.

The gate scores the candidate and the current Production model on the same rows, the
candidate's test split, and lets the candidate through only if it is at least as good there
(``register.max_auc_drop``, the most it may be worse): Production never ratchets down and the
order in which candidates arrive does not decide which one ends in Production. Every change of
Production is recorded in :mod:`credit_risk.registry.history`.
"""

import json
import warnings

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from credit_risk.ml.auc_comparison import AucComparison, paired_auc_comparison
from credit_risk.registry.history import (
    approver,
    describe_changes,
    now,
    production_changes,
    record_change,
)
from credit_risk.registry.lookups import production_version
from credit_risk.registry.names import (
    ARCHIVED_STAGE,
    CHALLENGER_ALIAS,
    GATE_EVIDENCE_TAGS,
    MODEL_NAME,
    PRODUCTION_ALIAS,
    PRODUCTION_STAGE,
    TAG_GATE_DECISION,
    TAG_GATE_REASON,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_OVERRODE_GATE,
    TAG_PROMOTION_REASON,
    TAG_PROMOTION_REPLACED,
)
from credit_risk.registry.registration_lock import registration_lock
from credit_risk.registry.store import configure_tracking, project_root, redact, tracking_errors

PROMOTED, CHALLENGER, REJECTED = "promoted", "challenger", "rejected"
PASSED = (PROMOTED, CHALLENGER)
"""Gate decisions of a version that passed (a challenger passed but was not promoted)."""
MAX_REASON_LENGTH = 1000


class GateRefusal(RuntimeError):
    """A promotion by hand of a version the gate did not pass, without ``--override-gate``."""


def gate(
    metrics: dict[str, float],
    settings: dict,
    production: str | None,
    comparison: AucComparison | None,
) -> tuple[bool, str]:
    """(passed, why) for a candidate with these test-split ``metrics``, compared with
    Production version ``production`` on the same rows (None: there is no Production yet).

    ``settings`` is params.yaml's ``register`` section: ``min_auc``, ``max_calibration_error``
    and ``max_auc_drop`` (the most the candidate's AUC may be below Production's on its rows).
    """
    auc, calibration = metrics["roc_auc"], metrics["calibration_error"]
    min_auc, max_drop = float(settings["min_auc"]), float(settings["max_auc_drop"])
    max_calibration = float(settings["max_calibration_error"])
    if auc < min_auc:
        return False, f"test ROC AUC {auc:.4f} is below register.min_auc {min_auc}"
    if calibration > max_calibration:
        return False, (
            f"test calibration error {calibration:.4f} is above register.max_calibration_error "
            f"{max_calibration}"
        )
    if comparison is None:
        return True, f"test ROC AUC {auc:.4f} >= register.min_auc {min_auc}; first Production"
    on_rows = (
        f"on the {comparison.rows} test rows, ROC AUC {comparison.candidate_auc:.4f} vs "
        f"{comparison.baseline_auc:.4f} for Production version {production}, "
        f"{comparison.describe()}"
    )
    if comparison.difference < -max_drop:
        return False, f"{on_rows}: worse by more than register.max_auc_drop {max_drop:g}"
    return True, f"{on_rows}: at least as good (register.max_auc_drop {max_drop:g})"


def judge(
    uri: str,
    production: ModelVersion | None,
    metrics: dict[str, float],
    settings: dict,
    test_rows: pd.DataFrame,
    candidate_probability: np.ndarray,
) -> tuple[bool, str, dict[str, str]]:
    """The gate for the candidate, Production's model loaded from the registry and verified as
    ``credit-risk import`` does; (passed, why, evidence tags). Writes nothing."""
    if production is None:
        return *gate(metrics, settings, None, None), {}
    from credit_risk.ml.contract import FEATURE_NAMES, TARGET
    from credit_risk.ml.model import predict_default_probability
    from credit_risk.registry.model_artifact import download_verified_model

    model = download_verified_model(production, uri)
    baseline = predict_default_probability(model, test_rows.loc[:, FEATURE_NAMES])
    labels = test_rows[TARGET].to_numpy()
    comparison = paired_auc_comparison(labels, candidate_probability, baseline)
    passed, reason = gate(metrics, settings, production.version, comparison)
    aucs = (comparison.candidate_auc, comparison.baseline_auc, comparison.difference,
            comparison.low, comparison.high)  # fmt: skip
    values = (production.version, comparison.rows, *(f"{auc:.6f}" for auc in aucs),
              comparison.confidence)  # fmt: skip
    return passed, reason, dict(zip(GATE_EVIDENCE_TAGS, map(str, values), strict=True))


def record_decision(
    client: MlflowClient, version: str, decision: str, reason: str, evidence: dict[str, str]
) -> None:
    """Tag the version with the gate's evidence and decision; the decision tag last, as the
    version's "decided". The gate's tags are never changed afterwards."""
    for name, value in {**evidence, TAG_GATE_REASON: reason, TAG_GATE_DECISION: decision}.items():
        client.set_model_version_tag(MODEL_NAME, version, name, value)


def gate_record(tags: dict[str, str]) -> dict[str, str]:
    """The gate's decision, reason and evidence among a version's tags."""
    names = (TAG_GATE_DECISION, TAG_GATE_REASON, *GATE_EVIDENCE_TAGS)
    return {name.removeprefix("gate_"): tags[name] for name in names if name in tags}


def promote(client: MlflowClient, version: ModelVersion, how: str, by: str, reason: str | None,
            gate_tags: dict[str, str]) -> str | None:  # fmt: skip
    """Point the alias and the (deprecated, still shown) stage at this version, archive the
    previous Production version, record the change; returns the replaced version, if any.

    Archiving is done version by version: ``archive_existing_versions=True`` fails on
    PostgreSQL-backed servers (MLflow compares the integer version column with a string).
    """
    previous = production_version(client)
    client.set_registered_model_alias(MODEL_NAME, PRODUCTION_ALIAS, version.version)
    if version.aliases and CHALLENGER_ALIAS in version.aliases:
        client.delete_registered_model_alias(MODEL_NAME, CHALLENGER_ALIAS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated
        if client.get_model_version(MODEL_NAME, version.version).current_stage != PRODUCTION_STAGE:
            client.transition_model_version_stage(MODEL_NAME, version.version, PRODUCTION_STAGE)
        for other in client.search_model_versions(f"name = '{MODEL_NAME}'"):
            if other.current_stage == PRODUCTION_STAGE and other.version != version.version:
                client.transition_model_version_stage(MODEL_NAME, other.version, ARCHIVED_STAGE)
    replaced = str(previous.version) if previous else None
    change = {"at": now(), "from": replaced, "to": str(version.version), "how": how, "by": by,
              "reason": reason, "gate": gate_record(gate_tags)}  # fmt: skip
    record_change(client, change)
    return replaced


def make_challenger(client: MlflowClient, version: str) -> None:
    """Point the ``challenger`` alias at this version (Production untouched)."""
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER_ALIAS, version)


def promote_by_hand(version: int, reason: str, override_gate: bool) -> str:
    """Make ``version`` the Production model, recording who approved it, when and why.

    A version the gate did not pass needs ``override_gate``, which is recorded too.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise ValueError("promote: --reason must say why this version should be Production")
    if len(reason) > MAX_REASON_LENGTH:
        raise ValueError(f"promote: --reason is longer than {MAX_REASON_LENGTH} characters")
    uri = configure_tracking(project_root())
    client = MlflowClient()
    where = redact(uri)
    with tracking_errors(uri), registration_lock(client, "promote"):
        model_version = client.get_model_version(MODEL_NAME, str(version))
        current = production_version(client)
        if current is not None and str(current.version) == str(model_version.version):
            return f"{MODEL_NAME} version {version} is already Production: nothing changed"
        decision = model_version.tags.get(TAG_GATE_DECISION)
        overrides = decision not in PASSED
        if overrides and not override_gate:
            raise GateRefusal(
                f"{MODEL_NAME} version {version} did not pass the gate ({decision or 'no decision'}"
                f": {model_version.tags.get(TAG_GATE_REASON, 'never gated')}); add --override-gate "
                "to promote it anyway (recorded)"
            )
        by = approver()
        how = "hand, overriding the gate" if overrides else "hand"
        replaced = str(current.version) if current else "none"
        promotion = {TAG_PROMOTED_AT: now(), TAG_PROMOTED_BY: by, TAG_PROMOTION_REASON: reason,
                     TAG_PROMOTION_REPLACED: replaced,
                     TAG_PROMOTION_OVERRODE_GATE: str(overrides).lower()}  # fmt: skip
        for name, value in promotion.items():
            client.set_model_version_tag(MODEL_NAME, model_version.version, name, value)
        promote(client, model_version, how, by, reason, model_version.tags)
    overridden = f", overriding the gate's {decision or 'missing'} decision" if overrides else ""
    return (
        f"{MODEL_NAME} version {version} is now Production (alias @{PRODUCTION_ALIAS}), replacing "
        f"version {replaced}; approved by {by}{overridden}: {reason} [{where}]"
    )


def show_history(as_json: bool) -> str:
    """``credit-risk history``: every change of Production, newest first (text or JSON)."""
    uri = configure_tracking(project_root())
    client = MlflowClient()
    with tracking_errors(uri):
        changes = production_changes(client)
        production = production_version(client)
    current = str(production.version) if production else None
    if as_json:
        return json.dumps({"production": current, "changes": changes}, indent=2)
    return describe_changes(changes, current)
