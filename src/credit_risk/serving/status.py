"""``credit-risk status``: what the registry and the BentoML store hold, and if they agree."""

import json

from mlflow import MlflowClient

from credit_risk.registry.lookups import production_version
from credit_risk.registry.names import (
    MODEL_NAME,
    PRODUCTION_ALIAS,
    TAG_DATASET_HASH,
    TAG_GATE_DECISION,
    TAG_GATE_REASON,
    TAG_MODEL_SHA256,
    TAG_SCORE_SCALE,
    TAG_SERVE_THRESHOLD,
)
from credit_risk.registry.store import configure_tracking, project_root, redact, tracking_errors
from credit_risk.serving.bento_store import BENTO_MODEL, bentoml_store_path
from credit_risk.serving.release import ServedModel, latest_import


def release_status() -> dict:
    """What the registry and the BentoML store hold, and whether the import is current."""
    uri = configure_tracking(project_root())
    client = MlflowClient()
    with tracking_errors(uri):
        version = production_version(client)
        run = client.get_run(version.run_id) if version else None
    production = None
    if version is not None:
        production = {
            "version": str(version.version),
            "run_id": version.run_id,
            "dataset_hash": run.data.tags.get(TAG_DATASET_HASH),
            "gate_decision": version.tags.get(TAG_GATE_DECISION),
            "gate_reason": version.tags.get(TAG_GATE_REASON),
            "serve_threshold": version.tags.get(TAG_SERVE_THRESHOLD),
            "score_scale": version.tags.get(TAG_SCORE_SCALE),
            "model_sha256": version.tags.get(TAG_MODEL_SHA256),
            "roc_auc": run.data.metrics.get("roc_auc"),
        }
    model = latest_import()
    imported = None
    if model is not None:
        try:
            served = ServedModel.of(model)
            imported = {"tag": str(model.tag)} | served.model_dump(
                include={
                    "model_version",
                    "run_id",
                    "model_sha256",
                    "decision_threshold",
                    "score_scale",
                    "imported_at",
                }
            )
        except ValueError as error:
            imported = {"tag": str(model.tag), "error": str(error)}
    current = (
        production is not None
        and imported is not None
        and imported.get("model_version") == production["version"]
        and imported.get("run_id") == production["run_id"]
        and imported.get("model_sha256") == production["model_sha256"]
        and str(imported.get("decision_threshold")) == production["serve_threshold"]
        and imported.get("score_scale") == json.loads(production["score_scale"] or "null")
    )
    return {
        "tracking_uri": redact(uri),
        "model_name": MODEL_NAME,
        "production": production,
        "bentoml_store": str(bentoml_store_path()),
        "imported": imported,
        "import_is_current": current,
    }


def describe_status(status: dict) -> str:
    """:func:`release_status` as lines for a person."""
    lines = [f"tracking store: {status['tracking_uri']}"]
    production = status["production"]
    if production is None:
        lines.append(f"registry: no Production version of {MODEL_NAME}")
    else:
        lines += [
            f"registry: {MODEL_NAME} version {production['version']} is Production "
            f"(alias @{PRODUCTION_ALIAS})",
            f"  run {production['run_id']}, test ROC AUC {production['roc_auc']}",
            f"  dataset hash {production['dataset_hash']}",
            f"  gate decision: {production['gate_decision']} ({production['gate_reason']})",
            f"  serve threshold: {production['serve_threshold']}",
        ]
    imported = status["imported"]
    lines.append(f"BentoML store: {status['bentoml_store']}")
    if imported is None:
        lines.append(f"  no {BENTO_MODEL} imported")
    elif "error" in imported:
        lines.append(f"  {imported['tag']}: {imported['error']}")
    else:
        lines.append(
            f"  {imported['tag']} holds version {imported['model_version']} "
            f"(threshold {imported['decision_threshold']}, imported {imported['imported_at']})"
        )
    if status["import_is_current"]:
        lines.append("the imported model is the registry's Production version: up to date")
    elif production is not None:
        lines.append(
            "the imported model is not the Production version: a service with this registry "
            "fetches Production itself; run `credit-risk import` to make it the model a bento "
            "serves without the registry"
        )
    return "\n".join(lines)
