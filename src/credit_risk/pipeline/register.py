"""Stage ``register``: log the trained model to MLflow once, register it once, gate it once.

It is idempotent: a model is identified by its *model fingerprint* (see
:mod:`credit_risk.ml.fingerprints`), so running it again for the same model finds the run, the
registry version and the gate decision it made before, and changes nothing but the version's
serving tags (``serve_threshold``, ``score_scale``) when ``serve.threshold`` or ``score``
changed. That is why ``dvc repro`` runs it
every time (see README).

Its receipt, ``reports/registration.json``, records what it found or did. When the receipt
is for this model fingerprint, reference profile, serving tags and tracking URI, and the store
is the embedded SQLite file unchanged since the receipt was written (same inode, size and
modification time), the store cannot hold anything new: the stage reports the receipt without
starting MLflow. (A run logged before reference profiles existed gets the profile then.)
"""

import json
import os
from dataclasses import asdict
from pathlib import Path

from credit_risk.ml.fingerprints import file_sha256
from credit_risk.ml.scorecard import ScoreScale
from credit_risk.params import decision_threshold
from credit_risk.pipeline.paths import (
    METRICS,
    MODEL_INFO,
    RECEIPT,
    REFERENCE_PROFILE,
    read_json,
    write_json,
)
from credit_risk.registry.names import MODEL_NAME, TAG_SCORE_SCALE, TAG_SERVE_THRESHOLD
from credit_risk.registry.store import embedded_tracking_uri, project_root, redact, tracking_uri


def register(params: dict) -> str:
    """Log, register and tag the trained model; promote it if it passes ``params["register"]``.

    A version that was decided on keeps its decision, so rerunning the pipeline never undoes a
    promotion made by hand. Writes the receipt; returns a summary.
    """
    tags = serving_tags(params)
    root = project_root()
    fingerprint = read_json(MODEL_INFO)["model_fingerprint"]
    uri = tracking_uri(root)
    profile = file_sha256(REFERENCE_PROFILE)
    receipt = _unchanged_receipt(root, uri, fingerprint, tags)
    if receipt is None or receipt.get("reference_profile_sha256") != profile:
        receipt = _register_in_mlflow(params, root, fingerprint, tags)
        receipt["embedded_store_file"] = _embedded_store_file(root, uri)
        receipt["reference_profile_sha256"] = profile
        write_json(RECEIPT, receipt)
        checked = ""
    else:
        checked = "; store unchanged since the last check"
    return (
        f"{MODEL_NAME} version {receipt['version']}: {receipt['decision']} "
        f"({receipt['reason']}); Production is version {receipt['production_version']} "
        f"[{receipt['tracking_uri']}{checked}]"
    )


def serving_tags(params: dict) -> dict[str, str]:
    """How the version is to be served, as registry tags: ``serve.threshold`` and ``score``."""
    scale = ScoreScale.from_params(params["score"])
    return {
        TAG_SERVE_THRESHOLD: str(decision_threshold(params)),
        TAG_SCORE_SCALE: json.dumps(asdict(scale), sort_keys=True),
    }


def _register_in_mlflow(params: dict, root: Path, fingerprint: str, tags: dict) -> dict:
    """The MLflow work of the stage; returns the receipt."""
    from mlflow import MlflowClient

    from credit_risk.registry.lookups import (
        find_training_run,
        find_version,
        get_or_create_experiment,
        production_version,
    )
    from credit_risk.registry.names import TAG_GATE_DECISION, TAG_GATE_REASON
    from credit_risk.registry.promotion import PROMOTED, gate, promote, record_decision
    from credit_risk.registry.registration import (
        ensure_reference_profile,
        log_training_run,
        register_version,
    )
    from credit_risk.registry.registration_lock import registration_lock
    from credit_risk.registry.store import configure_tracking, tracking_errors

    uri = configure_tracking(root)
    client = MlflowClient()
    with tracking_errors(uri), registration_lock(client, "register"):
        experiment = get_or_create_experiment(client, uri, root)
        run_id = find_training_run(client, experiment, fingerprint) or log_training_run(
            params, experiment
        )
        ensure_reference_profile(client, run_id)
        version = find_version(client, run_id) or register_version(client, run_id)
        for name, value in tags.items():
            if version.tags.get(name) != value:
                client.set_model_version_tag(MODEL_NAME, version.version, name, value)
        decision = version.tags.get(TAG_GATE_DECISION)
        if decision is None:
            decision, reason = gate(client, read_json(METRICS), params["register"])
            if decision == PROMOTED:
                promote(client, version)
            record_decision(client, version.version, decision, reason)
        else:
            reason = f"decided before: {version.tags.get(TAG_GATE_REASON)}"
        production = production_version(client)
    return {
        "model_name": MODEL_NAME,
        "version": int(version.version),
        "run_id": run_id,
        "model_fingerprint": fingerprint,
        "decision": decision,
        "reason": reason,
        "serving_tags": tags,
        "production_version": int(production.version) if production else None,
        "tracking_uri": redact(uri),
    }


def _embedded_store_file(root: Path, uri: str) -> list[int] | None:
    """Inode, size and modification time (ns) of the embedded store's file, if that is in use."""
    if uri != embedded_tracking_uri(root):
        return None
    try:
        state = os.stat(root / "mlflow.db")
    except FileNotFoundError:
        return None
    return [state.st_ino, state.st_size, state.st_mtime_ns]


def _unchanged_receipt(root: Path, uri: str, fingerprint: str, tags: dict) -> dict | None:
    """The last receipt, if it still describes the store (see the module docstring)."""
    try:
        receipt = read_json(RECEIPT)
    except (FileNotFoundError, ValueError):
        return None
    store_file = _embedded_store_file(root, uri)
    unchanged = (
        store_file is not None
        and receipt.get("embedded_store_file") == store_file
        and receipt.get("tracking_uri") == redact(uri)
        and receipt.get("model_fingerprint") == fingerprint
        and receipt.get("serving_tags") == tags
    )
    return receipt if unchanged else None
