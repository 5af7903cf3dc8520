"""Stage ``register``: log the trained model to MLflow once, register it once, gate it once.

The gate (:mod:`credit_risk.registry.promotion`) compares the model with Production on this
data's test split. A model that passes becomes Production, except under ``dvc exp run`` or with
``register.promote: manual``: then it gets the alias ``challenger`` (see docs/promotion.md).

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
    MODEL,
    MODEL_INFO,
    RECEIPT,
    REFERENCE_PROFILE,
    read_json,
    read_splits,
    write_json,
)
from credit_risk.registry.names import MODEL_NAME, TAG_SCORE_SCALE, TAG_SERVE_THRESHOLD
from credit_risk.registry.store import embedded_tracking_uri, project_root, redact, tracking_uri

PROMOTE_MODES = ("auto", "manual")


def register(params: dict) -> str:
    """Log, register and tag the trained model, and let the gate judge it: a model that passes
    becomes Production, unless it was trained by ``dvc exp run`` or ``register.promote`` is
    ``manual`` (then it gets the alias ``challenger``).

    A version that was decided on keeps its decision, so rerunning the pipeline never undoes a
    promotion made by hand. Writes the receipt; returns a summary.
    """
    held_back = _held_back(params)
    tags = serving_tags(params)
    root = project_root()
    fingerprint = read_json(MODEL_INFO)["model_fingerprint"]
    uri = tracking_uri(root)
    profile = file_sha256(REFERENCE_PROFILE)
    receipt = _unchanged_receipt(root, uri, fingerprint, tags)
    if receipt is None or receipt.get("reference_profile_sha256") != profile:
        receipt = _register_in_mlflow(params, root, fingerprint, tags, held_back)
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


def _held_back(params: dict) -> str | None:
    """Why a model that passes the gate is not to be promoted, or None (promote it).

    ``dvc exp run`` sets ``DVC_EXP_NAME`` in the environment of the stages it runs.
    """
    mode = params["register"].get("promote", "auto")
    if mode not in PROMOTE_MODES:
        raise ValueError(f"params.yaml: register.promote must be auto or manual, got {mode!r}")
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        return f"experiment {experiment} (dvc exp run) never deploys"
    return "register.promote is manual" if mode == "manual" else None


def serving_tags(params: dict) -> dict[str, str]:
    """How the version is to be served, as registry tags: ``serve.threshold`` and ``score``."""
    scale = ScoreScale.from_params(params["score"])
    return {
        TAG_SERVE_THRESHOLD: str(decision_threshold(params)),
        TAG_SCORE_SCALE: json.dumps(asdict(scale), sort_keys=True),
    }


def _register_in_mlflow(params: dict, root: Path, fingerprint: str, tags: dict,
                        held_back: str | None) -> dict:  # fmt: skip
    """The MLflow work of the stage; returns the receipt. The gate is judged before anything
    is written, so a failure leaves the store as it was."""
    from mlflow import MlflowClient

    from credit_risk.registry.history import user_at_host
    from credit_risk.registry.lookups import (
        find_training_run,
        find_version,
        get_or_create_experiment,
        production_version,
    )
    from credit_risk.registry.names import GATE_EVIDENCE_TAGS, TAG_GATE_DECISION, TAG_GATE_REASON
    from credit_risk.registry.promotion import (
        CHALLENGER,
        PROMOTED,
        REJECTED,
        make_challenger,
        promote,
        record_decision,
    )
    from credit_risk.registry.registration import (
        ensure_reference_profile,
        log_training_run,
        register_version,
    )
    from credit_risk.registry.registration_lock import registration_lock
    from credit_risk.registry.store import configure_tracking, tracking_errors

    uri = configure_tracking(root, create=True)
    client = MlflowClient()
    with tracking_errors(uri), registration_lock(client, "register"):
        experiment = get_or_create_experiment(client, uri, root)
        run_id = find_training_run(client, experiment, fingerprint)
        version = find_version(client, run_id) if run_id else None
        decision = version.tags.get(TAG_GATE_DECISION) if version else None
        if decision is None:
            passed, reason, evidence = _judge(params, uri, production_version(client))
        run_id = run_id or log_training_run(params, experiment)
        ensure_reference_profile(client, run_id)
        version = version or register_version(client, run_id)
        for name, value in tags.items():
            if version.tags.get(name) != value:
                client.set_model_version_tag(MODEL_NAME, version.version, name, value)
        if decision is None:
            if not passed:
                decision = REJECTED
            elif held_back:
                decision = CHALLENGER
                reason = f"{reason}; not deployed: {held_back}; alias @challenger"
                make_challenger(client, version.version)
            else:
                decision = PROMOTED
                gate_tags = evidence | {TAG_GATE_DECISION: decision, TAG_GATE_REASON: reason}
                promote(client, version, "gate", user_at_host(), None, gate_tags)
            record_decision(client, version.version, decision, reason, evidence)
        else:
            evidence = {
                name: version.tags[name] for name in GATE_EVIDENCE_TAGS if name in version.tags
            }
            reason = f"decided before: {version.tags.get(TAG_GATE_REASON)}"
        production = production_version(client)
    return {
        "model_name": MODEL_NAME,
        "version": int(version.version),
        "run_id": run_id,
        "model_fingerprint": fingerprint,
        "decision": decision,
        "reason": reason,
        "gate_evidence": evidence,
        "serving_tags": tags,
        "production_version": int(production.version) if production else None,
        "tracking_uri": redact(uri),
    }


def _judge(params: dict, uri: str, production) -> tuple[bool, str, dict[str, str]]:
    """The gate's verdict on the trained model (:func:`credit_risk.registry.promotion.judge`),
    scored with Production's model on this data's test split."""
    from credit_risk.ml.contract import FEATURE_NAMES
    from credit_risk.ml.model import predict_default_probability
    from credit_risk.ml.model_file import load_model
    from credit_risk.registry.promotion import judge

    _, test_rows = read_splits()
    probability = predict_default_probability(load_model(MODEL), test_rows.loc[:, FEATURE_NAMES])
    return judge(uri, production, read_json(METRICS), params["register"], test_rows, probability)


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
