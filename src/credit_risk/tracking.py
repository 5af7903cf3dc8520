"""MLflow: where runs go, what a run holds, and how a model is registered and promoted.

:func:`register` is the ``register`` stage. It is idempotent: a model is identified by its
*model fingerprint* (the SHA256 of its held-out predicted probabilities, written by the train
stage), so running it again for the same model finds the run, the registry version and the gate
decision it made before, and changes nothing. That is why ``dvc repro`` can run it every time
(see README), and it loads the model and the data only when it has a new run to log.
"""

import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import credit_risk
from credit_risk.contract import FEATURE_NAMES, TARGET
from credit_risk.files import (
    FINGERPRINT,
    METRICS,
    MODEL,
    MODEL_INFO,
    PLOTS,
    RECEIPT,
    SPLIT_COLUMN,
    read_json,
    write_json,
)

EXPERIMENT_NAME = "credit-risk-prediction"
MODEL_NAME = "credit-risk-model"
PRODUCTION_ALIAS = "production"
PRODUCTION_STAGE = "Production"
MODEL_ARTIFACT = "model"
FINGERPRINT_TAG = "model_fingerprint"
MODEL_URI_TAG = "model_uri"
MLFLOW_DIGEST_LENGTH = 32
"""MLflow's SQL stores keep a dataset digest in 36 characters: we use the hash's first 32."""
INPUT_EXAMPLE_ROWS = 5

_HTTP_DEFAULTS = {
    # MLflow retries a failing HTTP call 7 times with growing pauses (minutes in all); an
    # unreachable server should fail the stage in seconds. Explicit user settings win.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class TrackingError(RuntimeError):
    """MLflow cannot be used as configured; the message names the tracking URI."""


def project_root() -> Path:
    """The DVC project root, also from within ``dvc exp run``'s temporary copy.

    DVC sets ``DVC_ROOT`` for stage commands, and points it at the original project when it
    runs an experiment in a copy under ``.dvc/tmp/exps``.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def embedded_tracking_uri(root: Path) -> str:
    """The default store: a SQLite database in the project folder."""
    return f"sqlite:///{root / 'mlflow.db'}"


def configure_tracking(root: Path) -> str:
    """Use ``MLFLOW_TRACKING_URI`` if set, else the embedded store; check it answers."""
    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or embedded_tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    return uri


def _check_server(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"MLflow tracking server {uri} is unreachable: {reason}") from None


def register(params: dict) -> str:
    """The ``register`` stage: log the trained model (once), register it (once), and decide
    (once) whether it passes the gate in ``params["register"]``; promote it if so.

    A version that was decided on keeps its decision, so rerunning the pipeline never undoes a
    promotion made by hand. Writes the receipt; returns a summary.
    """
    root = project_root()
    uri = configure_tracking(root)
    fingerprint = read_json(MODEL_INFO)["model_fingerprint"]
    auc = read_json(METRICS)["roc_auc"]
    client = MlflowClient()
    try:
        experiment = get_or_create_experiment(client, root)
        run_id = _find_run(client, experiment, fingerprint) or _log_run(params, experiment)
        version = _find_version(client, run_id) or _register_version(client, run_id)
        decision = version.tags.get("gate_decision")
        if decision is None:
            decision, reason = _gate(client, version, auc, params["register"])
            if decision == "promoted":
                _promote(client, version)
            # Tagged last: a version without the tag has not been decided on yet.
            client.set_model_version_tag(MODEL_NAME, version.version, "gate_reason", reason)
            client.set_model_version_tag(MODEL_NAME, version.version, "gate_decision", decision)
        else:
            reason = f"decided before: {version.tags.get('gate_reason')}"
        production = production_version(client)
    except MlflowException as error:
        raise TrackingError(f"MLflow at {uri}: {error.message}") from error
    receipt = {
        "model_name": MODEL_NAME,
        "version": int(version.version),
        "run_id": run_id,
        "model_fingerprint": fingerprint,
        "decision": decision,
        "reason": reason,
        "production_version": int(production.version) if production else None,
    }
    write_json(RECEIPT, receipt)
    return (
        f"{MODEL_NAME} version {version.version}: {decision} ({reason}); "
        f"Production is version {receipt['production_version']} [{uri}]"
    )


def production_version(client: MlflowClient):
    """The version the ``production`` alias points at, or None."""
    try:
        return client.get_model_version_by_alias(MODEL_NAME, PRODUCTION_ALIAS)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def get_or_create_experiment(client: MlflowClient, root: Path) -> str:
    """The experiment's id, creating it (artifacts in the project for the embedded store)."""
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if mlflow.get_tracking_uri() == embedded_tracking_uri(root):
        artifact_location = (root / "mlartifacts").as_uri()
    return client.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location)


def _find_run(client: MlflowClient, experiment_id: str, model_fingerprint: str) -> str | None:
    """A finished run that already logged this model (the tag is set last)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{FINGERPRINT_TAG} = '{model_fingerprint}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _log_run(params: dict, experiment_id: str) -> str:
    """Log a new run: params, metrics, dataset input, plots, model (tagged last)."""
    from mlflow.models import infer_signature

    from credit_risk.model import TRUSTED_TYPES, load_model, predict_default_probability
    from credit_risk.pipeline import read_splits

    model = load_model(MODEL)
    fingerprint = read_json(MODEL_INFO)["model_fingerprint"]
    dataset = read_json(FINGERPRINT)
    dataset_hash = dataset["sha256"]
    train_rows, test_rows = read_splits()
    example = test_rows.loc[:, FEATURE_NAMES].head(INPUT_EXAMPLE_ROWS)
    logged_params = _flatten({key: params[key] for key in ("data", "prepare", "train")})
    run_name = f"{params['train']['model']}-{fingerprint[:8]}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({**logged_params, "dataset_hash": dataset_hash})
        mlflow.log_metrics(read_json(METRICS))
        with warnings.catch_warnings():
            # MLflow hints that the path could be a file or an artifact (it is a file), and
            # that the integer target could not hold missing values (it has none).
            warnings.simplefilter("ignore", UserWarning)
            training_data = mlflow.data.from_pandas(
                train_rows.drop(columns=SPLIT_COLUMN),
                source=str(params["data"]["raw"]),
                name="gmsc-train",
                targets=TARGET,
                digest=dataset_hash[:MLFLOW_DIGEST_LENGTH],
            )
            mlflow.log_input(training_data, context="training")
        mlflow.log_dict(dataset, "dataset_fingerprint.json")
        for path in sorted(PLOTS.glob("*.json")):
            mlflow.log_artifact(str(path), artifact_path="plots")
        model_info = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT,
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            signature=infer_signature(example, predict_default_probability(model, example)),
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            code_paths=[str(Path(credit_risk.__file__).parent)],
            pip_requirements=_pip_requirements(),
        )
        mlflow.set_tag("dataset_hash", dataset_hash)
        mlflow.set_tag(MODEL_URI_TAG, model_info.model_uri)
        mlflow.set_tag(FINGERPRINT_TAG, fingerprint)
    return run.info.run_id


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _pip_requirements() -> list[str]:
    """The model's runtime needs, pinned to what trained it (skips MLflow's slow inference)."""
    from importlib.metadata import version

    names = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")
    return [f"{name}=={version(name)}" for name in names]


def _find_version(client: MlflowClient, run_id: str):
    versions = client.search_model_versions(f"name = '{MODEL_NAME}' and run_id = '{run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _register_version(client: MlflowClient, run_id: str):
    run = client.get_run(run_id)
    tags = {name: run.data.tags[name] for name in (FINGERPRINT_TAG, "dataset_hash")}
    return mlflow.register_model(run.data.tags[MODEL_URI_TAG], MODEL_NAME, tags=tags)


def _gate(client: MlflowClient, version, auc: float, gate: dict) -> tuple[str, str]:
    """("promoted" | "rejected", why) for a newly registered version."""
    current = production_version(client)
    min_auc, max_drop = float(gate["min_auc"]), float(gate["max_auc_drop"])
    if auc < min_auc:
        return "rejected", f"test ROC AUC {auc:.4f} is below register.min_auc {min_auc}"
    if current is None:
        return "promoted", f"test ROC AUC {auc:.4f} >= register.min_auc {min_auc}; first Production"
    current_auc = client.get_run(current.run_id).data.metrics["roc_auc"]
    if auc < current_auc - max_drop:
        return "rejected", (
            f"test ROC AUC {auc:.4f} is more than register.max_auc_drop {max_drop} below "
            f"Production version {current.version} ({current_auc:.4f})"
        )
    return "promoted", (
        f"test ROC AUC {auc:.4f} >= register.min_auc {min_auc} and within {max_drop} of "
        f"Production version {current.version} ({current_auc:.4f}), which is archived"
    )


def _promote(client: MlflowClient, version) -> None:
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
                client.transition_model_version_stage(MODEL_NAME, other.version, "Archived")


def promote_by_hand(version: str) -> str:
    """Make ``version`` the Production model (alias and stage), bypassing the gate."""
    uri = configure_tracking(project_root())
    client = MlflowClient()
    try:
        model_version = client.get_model_version(MODEL_NAME, version)
        _promote(client, model_version)
        client.set_model_version_tag(MODEL_NAME, version, "gate_decision", "promoted_by_hand")
        client.set_model_version_tag(MODEL_NAME, version, "gate_reason", "promoted by hand")
    except MlflowException as error:
        raise TrackingError(f"MLflow at {uri}: {error.message}") from error
    return f"{MODEL_NAME} version {version} is now Production (alias @{PRODUCTION_ALIAS}) [{uri}]"


def main(argv: list[str] | None = None) -> None:
    """``python -m credit_risk.tracking promote VERSION``: promote a version by hand."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m credit_risk.tracking")
    commands = parser.add_subparsers(dest="command", required=True)
    promote = commands.add_parser("promote", help="make VERSION the Production model")
    promote.add_argument("version", type=int)
    args = parser.parse_args(argv)
    try:
        print(promote_by_hand(str(args.version)))
    except TrackingError as error:
        print(f"promote: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
