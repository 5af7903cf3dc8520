"""The pipeline against real MLflow tracking servers, and against one that is not there."""

import hashlib
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import CREDIT_RISK, free_port, pipeline_env, run, start_mlflow_server, stop
from test_pipeline_dvc import registry_state, set_param

from credit_risk.ml.contract import FEATURE_NAMES
from credit_risk.ml.model_file import TRUSTED_TYPES
from credit_risk.pipeline.paths import read_splits
from credit_risk.registry.names import EXPERIMENT_NAME, MODEL_NAME

pytestmark = pytest.mark.slow


def retrain_and_promote(repo: Path, env: dict, uri: str) -> None:
    """A second, better model becomes Production; the first is archived."""
    set_param(repo, "train.hist_gradient_boosting", "learning_rate", 0.03)
    run(["dvc", "repro"], repo, env)
    assert registry_state(uri) == {
        "runs": 2, "versions": [1, 2], "production": 2, "stages": {1: "Archived", 2: "Production"}
    }  # fmt: skip


def test_pipeline_logs_to_a_tracking_server(project_repo: Path, mlflow_server: str):
    env = pipeline_env(MLFLOW_TRACKING_URI=mlflow_server)
    run(["dvc", "repro"], project_repo, env)
    assert registry_state(mlflow_server) == {
        "runs": 1, "versions": [1], "production": 1, "stages": {1: "Production"}
    }  # fmt: skip
    assert not (project_repo / "mlflow.db").exists()
    run(["dvc", "repro"], project_repo, env)
    assert registry_state(mlflow_server)["versions"] == [1]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    logged = client.search_runs([experiment.experiment_id])[0]
    fingerprint = (project_repo / "data/dataset_fingerprint.json").read_text()
    assert logged.data.params["dataset_hash"] in fingerprint
    assert logged.inputs.dataset_inputs[0].dataset.digest in logged.data.params["dataset_hash"]
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "plots")}
    assert artifacts == {"plots/roc.json", "plots/precision_recall.json", "plots/calibration.json"}
    served_model_loads_and_predicts(mlflow_server, project_repo)
    registered_artifact_is_the_dvc_output(mlflow_server, project_repo)
    retrain_and_promote(project_repo, env, mlflow_server)


def served_model_loads_and_predicts(uri: str, repo: Path) -> None:
    """The registered model: skops format, signature, input example; predicts probabilities."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    model_uri = f"models:/{MODEL_NAME}@production"
    model = mlflow.pyfunc.load_model(model_uri)
    flavor = model.metadata.flavors["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert set(flavor["skops_trusted_types"]) == set(TRUSTED_TYPES)
    assert model.metadata.get_input_schema().input_names() == list(FEATURE_NAMES)
    assert model.metadata.saved_input_example_info is not None
    _, test_rows = read_splits(repo)
    probabilities = model.predict(test_rows.loc[:, FEATURE_NAMES].head(50))
    assert probabilities.shape == (50, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def registered_artifact_is_the_dvc_output(uri: str, repo: Path) -> None:
    """The registry version's skops file is byte for byte models/model.skops, and its
    model_sha256 tag is that file's hash."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    version = mlflow.MlflowClient().get_model_version(MODEL_NAME, "1")
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/1"))
    dvc_output = (repo / "models/model.skops").read_bytes()
    assert (folder / "model.skops").read_bytes() == dvc_output
    assert version.tags["model_sha256"] == hashlib.sha256(dvc_output).hexdigest()


def postgres_database() -> str | None:
    """A new empty database on the local PostgreSQL, or None if it does not answer."""
    import psycopg

    name = f"mlflow_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres "
                             "connect_timeout=3", autocommit=True) as connection:  # fmt: skip
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        return None
    return name


def test_pipeline_with_a_postgresql_backed_server(project_repo: Path, tmp_path: Path):
    database = postgres_database()
    if database is None:
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432 (user postgres, trust auth)")
    process, url = start_mlflow_server(
        f"postgresql://postgres@127.0.0.1:5432/{database}",
        tmp_path / "pg-artifacts",
        tmp_path / "mlflow-pg.log",
    )
    env = pipeline_env(MLFLOW_TRACKING_URI=url)
    try:
        run(["dvc", "repro"], project_repo, env)
        assert registry_state(url) == {
            "runs": 1, "versions": [1], "production": 1, "stages": {1: "Production"}
        }  # fmt: skip
        retrain_and_promote(project_repo, env, url)
    finally:
        stop(process)


def test_unreachable_server_fails_fast_and_registers_nothing(project_repo: Path):
    run(["dvc", "repro", "train"], project_repo)
    url = f"http://127.0.0.1:{free_port()}"
    result = run(["dvc", "repro"], project_repo, pipeline_env(MLFLOW_TRACKING_URI=url),
                 check=False, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert f"register: error: MLflow tracking server {url} is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project_repo / "reports/registration.json").exists()


def test_unreachable_server_fails_dvc_repro_before_training(project_repo: Path):
    """Nothing trained yet: the train stage checks the server first, in one line naming it."""
    url = f"http://127.0.0.1:{free_port()}"
    result = run(["dvc", "repro"], project_repo, pipeline_env(MLFLOW_TRACKING_URI=url),
                 check=False, timeout=120)  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors == [
        f"train: error: MLflow tracking server {url} is unreachable: Connection refused"
    ]
    assert not (project_repo / "models/model.skops").exists()


@pytest.mark.parametrize("command", [["import"], ["status"], ["promote", "1", "--reason", "test"]])
def test_a_database_server_that_is_down_fails_a_command_in_seconds(command, tmp_path):
    """A direct ``postgresql://`` store on a closed port: one line, not a minute of retries."""
    uri = "postgresql://postgres:secret@127.0.0.1:1/mlflow"
    env = pipeline_env(MLFLOW_TRACKING_URI=uri, BENTOML_HOME=str(tmp_path / "bentoml"))
    result = run([CREDIT_RISK, *command], tmp_path, env, check=False, timeout=20)
    assert result.returncode == 1 and "secret" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{command[0]}: error: MLflow tracking database postgresql://postgres:***@127.0.0.1:1/mlflow"
        " is unreachable: Connection refused"
    ]
