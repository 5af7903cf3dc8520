"""Stage ``register``: log the trained model to MLflow once, register it once, gate it once.

It is idempotent: a model is identified by its *model fingerprint* (see
:mod:`credit_risk.ml.fingerprints`), so running it again for the same model finds the run, the
registry version and the gate decision it made before, and changes nothing but the version's
``serve_threshold`` tag when ``serve.threshold`` changed. That is why ``dvc repro`` can run it
every time (see README); it loads the model and the data only when it has a new run to log.
"""

import warnings
from pathlib import Path

import mlflow
from mlflow import MlflowClient

import credit_risk
from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.params import decision_threshold
from credit_risk.pipeline.paths import (
    DATASET_FINGERPRINT,
    METRICS,
    MODEL,
    MODEL_INFO,
    PLOTS,
    RECEIPT,
    SPLIT_COLUMN,
    read_json,
    read_splits,
    write_json,
)
from credit_risk.registry.lookups import (
    find_training_run,
    find_version,
    get_or_create_experiment,
    production_version,
)
from credit_risk.registry.names import (
    MODEL_ARTIFACT,
    MODEL_NAME,
    TAG_DATASET_HASH,
    TAG_GATE_DECISION,
    TAG_GATE_REASON,
    TAG_MODEL_FINGERPRINT,
    TAG_MODEL_URI,
    TAG_SERVE_THRESHOLD,
)
from credit_risk.registry.promotion import PROMOTED, gate, promote, record_decision
from credit_risk.registry.store import configure_tracking, project_root, tracking_errors

MLFLOW_DIGEST_LENGTH = 32
"""MLflow's SQL stores keep a dataset digest in 36 characters: we use the hash's first 32."""
INPUT_EXAMPLE_ROWS = 5
RUNTIME_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")


def register(params: dict) -> str:
    """Log, register and tag the trained model; promote it if it passes ``params["register"]``.

    A version that was decided on keeps its decision, so rerunning the pipeline never undoes a
    promotion made by hand. Writes the receipt; returns a summary.
    """
    threshold = decision_threshold(params)
    root = project_root()
    uri = configure_tracking(root)
    fingerprint = read_json(MODEL_INFO)["model_fingerprint"]
    auc = read_json(METRICS)["roc_auc"]
    client = MlflowClient()
    with tracking_errors(uri):
        experiment = get_or_create_experiment(client, root)
        run_id = find_training_run(client, experiment, fingerprint) or _log_run(params, experiment)
        version = find_version(client, run_id) or _register_version(client, run_id)
        if version.tags.get(TAG_SERVE_THRESHOLD) != str(threshold):
            client.set_model_version_tag(
                MODEL_NAME, version.version, TAG_SERVE_THRESHOLD, str(threshold)
            )
        decision = version.tags.get(TAG_GATE_DECISION)
        if decision is None:
            decision, reason = gate(client, auc, params["register"])
            if decision == PROMOTED:
                promote(client, version)
            record_decision(client, version.version, decision, reason)
        else:
            reason = f"decided before: {version.tags.get(TAG_GATE_REASON)}"
        production = production_version(client)
    receipt = {
        "model_name": MODEL_NAME,
        "version": int(version.version),
        "run_id": run_id,
        "model_fingerprint": fingerprint,
        "decision": decision,
        "reason": reason,
        "serve_threshold": threshold,
        "production_version": int(production.version) if production else None,
    }
    write_json(RECEIPT, receipt)
    return (
        f"{MODEL_NAME} version {version.version}: {decision} ({reason}); "
        f"Production is version {receipt['production_version']} [{uri}]"
    )


def _log_run(params: dict, experiment_id: str) -> str:
    """Log a new run: params, metrics, dataset input, plots, model (fingerprint tagged last)."""
    from mlflow.models import infer_signature

    from credit_risk.ml.model import TRUSTED_TYPES, load_model, predict_default_probability

    model = load_model(MODEL)
    fingerprint = read_json(MODEL_INFO)["model_fingerprint"]
    dataset = read_json(DATASET_FINGERPRINT)
    dataset_hash = dataset["sha256"]
    train_rows, test_rows = read_splits()
    example = test_rows.loc[:, FEATURE_NAMES].head(INPUT_EXAMPLE_ROWS)
    logged_params = _flatten({key: params[key] for key in ("data", "prepare", "train")})
    run_name = f"{params['train']['model']}-{fingerprint[:8]}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({**logged_params, TAG_DATASET_HASH: dataset_hash})
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
        mlflow.set_tag(TAG_DATASET_HASH, dataset_hash)
        mlflow.set_tag(TAG_MODEL_URI, model_info.model_uri)
        mlflow.set_tag(TAG_MODEL_FINGERPRINT, fingerprint)
    return run.info.run_id


def _register_version(client: MlflowClient, run_id: str):
    run = client.get_run(run_id)
    tags = {name: run.data.tags[name] for name in (TAG_MODEL_FINGERPRINT, TAG_DATASET_HASH)}
    return mlflow.register_model(run.data.tags[TAG_MODEL_URI], MODEL_NAME, tags=tags)


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

    return [f"{name}=={version(name)}" for name in RUNTIME_PACKAGES]
