"""Log a trained model to MLflow as a run, and register it as a version of the model.

The register stage calls these once per model: a run carries the model's fingerprint as its
last tag, so a finished run with that tag means the model is logged (see
:func:`credit_risk.registry.lookups.find_training_run`).
"""

import contextlib
import io
import shutil
import sys
import warnings
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import Model, infer_signature

import credit_risk
from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.ml.fingerprints import file_sha256
from credit_risk.ml.model import predict_default_probability
from credit_risk.ml.model_file import TRUSTED_TYPES, load_model
from credit_risk.pipeline.paths import (
    DATASET_FINGERPRINT,
    METRICS,
    MODEL,
    MODEL_INFO,
    PLOTS,
    REFERENCE_PROFILE,
    SPLIT_COLUMN,
    read_json,
    read_splits,
)
from credit_risk.registry.names import (
    MODEL_ARTIFACT,
    MODEL_NAME,
    PROFILE_ARTIFACT,
    TAG_DATASET_HASH,
    TAG_MODEL_FINGERPRINT,
    TAG_MODEL_SHA256,
    TAG_MODEL_URI,
)

MLFLOW_DIGEST_LENGTH = 32
"""MLflow's SQL stores keep a dataset digest in 36 characters: we use the hash's first 32."""
INPUT_EXAMPLE_ROWS = 5
RUNTIME_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")


def log_training_run(params: dict, experiment_id: str) -> str:
    """Log a new run: params, metrics, dataset input, plots, model (fingerprint tagged last)."""
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
        mlflow.log_artifact(str(REFERENCE_PROFILE))
        for path in sorted(PLOTS.glob("*.json")):
            mlflow.log_artifact(str(path), artifact_path="plots")
        model_info = Model.log(
            artifact_path=None,  # Model.log requires it; `name` replaces it
            name=MODEL_ARTIFACT,
            flavor=SklearnFlavorWithModelFile(MODEL),
            flavor_name="mlflow.sklearn",
            sk_model=model,
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            signature=infer_signature(example, predict_default_probability(model, example)),
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            code_paths=[str(Path(credit_risk.__file__).parent)],
            pip_requirements=_pip_requirements(),
        )
        mlflow.set_tag(TAG_DATASET_HASH, dataset_hash)
        mlflow.set_tag(TAG_MODEL_SHA256, file_sha256(MODEL))
        mlflow.set_tag(TAG_MODEL_URI, model_info.model_uri)
        mlflow.set_tag(TAG_MODEL_FINGERPRINT, fingerprint)
    return run.info.run_id


class SklearnFlavorWithModelFile:
    """``mlflow.sklearn`` for ``Model.log``, except that the logged skops file is ``model_file``
    itself: the registered artifact and the DVC output are the same bytes (a second skops dump
    of the same model would differ; see :mod:`credit_risk.ml.model_file`)."""

    def __init__(self, model_file: Path):
        self.model_file = model_file

    def save_model(self, path: str, **kwargs) -> None:
        mlflow.sklearn.save_model(path=path, **kwargs)
        written = Model.load(path).flavors["sklearn"]["pickled_model"]
        shutil.copyfile(self.model_file, Path(path) / written)


def ensure_reference_profile(client: MlflowClient, run_id: str) -> None:
    """Log the reference profile to a run logged before profiles existed (same model)."""
    if PROFILE_ARTIFACT not in {artifact.path for artifact in client.list_artifacts(run_id)}:
        client.log_artifact(run_id, str(REFERENCE_PROFILE))


REGISTRATION_NOTICES = ("Successfully registered model", "Registered model", "Created version")
"""What ``mlflow.register_model`` prints on stderr whatever the log level; the register stage
says it in its own line."""


def register_version(client: MlflowClient, run_id: str) -> ModelVersion:
    """Register the run's model as a new version, its tags copied from the run."""
    run = client.get_run(run_id)
    copied = (TAG_MODEL_FINGERPRINT, TAG_MODEL_SHA256, TAG_DATASET_HASH)
    tags = {name: run.data.tags[name] for name in copied}
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            return mlflow.register_model(run.data.tags[TAG_MODEL_URI], MODEL_NAME, tags=tags)
    finally:
        sys.stderr.writelines(
            line
            for line in printed.getvalue().splitlines(keepends=True)
            if not line.startswith(REGISTRATION_NOTICES)
        )


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
