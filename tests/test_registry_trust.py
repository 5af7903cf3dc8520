"""What the service trusts: only skops files holding the project's types whose SHA256 is the
registered one; tracking credentials never shown or stored; a recreated registry's version 1
never taken for the imported one.

Each attack is made for real on the stores: a pickled model registered as Production, an
artifact file replaced after registration, a skops file with other types, a BentoML store
edited after import, credentials in the tracking URI, another model registered as version 1.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pytest
import skops.io
from conftest import (
    CREDIT_RISK,
    PIPELINE,
    SERVICE,
    Server,
    free_port,
    make_project_folder,
    make_served_project,
    run,
    start_mlflow_server,
    stop,
)
from mlflow import MlflowClient
from sklearn.preprocessing import FunctionTransformer

from credit_risk.ml.model_file import TRUSTED_TYPES, load_model

pytestmark = pytest.mark.slow
MODEL = "credit-risk-model"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A project with Production version 1 in its embedded store, imported."""
    return make_served_project(tmp_path_factory.mktemp("trust"))


def register_as_production(env: dict, folder: Path, sk_model, **log_options) -> str:
    """Log ``sk_model`` as a new version, tagged as the register stage tags, and make it
    Production: what someone with write access to the registry could do."""
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    experiment = client.get_experiment_by_name("credit-risk-prediction").experiment_id
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(sk_model, name="model", **log_options)
    version = mlflow.register_model(info.model_uri, MODEL)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version.version}"))
    model_file = next(path for path in local.iterdir() if path.name.startswith("model."))
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    client.set_model_version_tag(MODEL, version.version, "model_sha256", digest)
    client.set_model_version_tag(MODEL, version.version, "serve_threshold", "0.3")
    scale = client.get_model_version(MODEL, "1").tags["score_scale"]
    client.set_model_version_tag(MODEL, version.version, "score_scale", scale)
    client.set_registered_model_alias(MODEL, "production", version.version)
    return version.version


def refused_import(env: dict, folder: Path, home: Path) -> str:
    """`credit-risk import` into an empty BentoML home that must refuse: its one line."""
    result = run([CREDIT_RISK, "import"], folder, env | {"BENTOML_HOME": str(home)}, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert not (home / "models" / MODEL).exists()
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.fixture
def production_back_to_version_1(served):
    yield
    MlflowClient(served[1]["MLFLOW_TRACKING_URI"]).set_registered_model_alias(
        MODEL, "production", "1"
    )


@pytest.mark.usefixtures("production_back_to_version_1")
def test_a_pickled_model_is_never_imported(served, tmp_path):
    folder, env = served
    version = register_as_production(
        env, folder, trained(folder), serialization_format="cloudpickle"
    )
    line = refused_import(env, folder, tmp_path / "home")
    assert f"version {version}" in line and "cloudpickle" in line and "only skops" in line


@pytest.mark.usefixtures("production_back_to_version_1")
def test_a_skops_file_with_other_types_is_never_imported(served, tmp_path):
    folder, env = served
    sneaky = FunctionTransformer(func=os.getcwd)
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(sneaky))
    register_as_production(
        env,
        folder,
        sneaky,
        serialization_format="skops",
        skops_trusted_types=[*TRUSTED_TYPES, *untrusted],
    )
    line = refused_import(env, folder, tmp_path / "home")
    assert "does not load" in line and "getcwd" in line


def trained(folder: Path):
    """The project's Production model, as a fitted pipeline."""
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")  # the registry too
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1")
    return load_model(Path(local) / "model.skops")


def test_an_artifact_changed_after_registration_is_never_imported(served, tmp_path):
    folder, env = served
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    stored = Path(client.get_model_version_download_uri(MODEL, "1").removeprefix("file://"))
    original = (stored / "model.skops").read_bytes()
    (stored / "model.skops").write_bytes(skops.io.dumps(trained(folder)))  # same model, new bytes
    try:
        line = refused_import(env, folder, tmp_path / "home")
    finally:
        (stored / "model.skops").write_bytes(original)
    assert "SHA256" in line and "changed after registration" in line


def test_a_bentoml_model_changed_after_import_is_never_served(served, tmp_path):
    folder, env = served
    env = env | {"BENTOML_HOME": str(tmp_path / "home")}
    run([CREDIT_RISK, "import"], folder, env)
    model_file = next((tmp_path / "home" / "models" / MODEL).glob("*/model.skops"))
    model_file.write_bytes(skops.io.dumps(trained(folder)))
    result = run(["bentoml", "serve", SERVICE, "--port", "0"], folder, env, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1 and "SHA256" in refusals[0]


def test_a_recreated_store_with_another_version_1_is_followed_not_confused(served, tmp_path):
    """A new store whose version 1 is another model (same number, other run and file): the
    service does not take the import for it, but fetches, verifies and serves that model."""
    folder, env = served
    other = make_project_folder(tmp_path / "other")
    params = (other / "params.yaml").read_text().replace("max_iter: 200", "max_iter: 150")
    (other / "params.yaml").write_text(params)
    other_uri = f"sqlite:///{other / 'mlflow.db'}"
    run([sys.executable, "-c", PIPELINE], other, env | {"MLFLOW_TRACKING_URI": other_uri})
    other_run = MlflowClient(other_uri).get_model_version(MODEL, "1").run_id
    env = env | {"MLFLOW_TRACKING_URI": other_uri,
                 "CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions")}  # fmt: skip
    server = Server(env, folder)
    try:
        info = httpx.get(f"{server.url}/model/info").json()
    finally:
        server.stop()
    assert info["run_id"] == other_run and info["loaded_from"].startswith("MLflow registry")
    assert "the imported version 1 is the fallback" in server.output.read_text()


def test_credentials_in_the_tracking_uri_are_never_shown_or_stored(tmp_path):
    """A tracking URI with a password: stage output, receipt, import, status, the BentoML
    model's record, /health and /model/info show it as ***; an unreachable https URI with
    credentials is reported as unreachable, not misparsed."""
    process, url = start_mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "server.log"
    )
    secret = "s3cr3t-p4ss"
    with_password = url.replace("http://", f"http://alice:{secret}@")
    try:
        folder, env = make_served_project(tmp_path / "project", MLFLOW_TRACKING_URI=with_password)
        shown = [
            run([sys.executable, "-c", PIPELINE], folder, env).stdout,
            (folder / "reports" / "registration.json").read_text(),
            run([CREDIT_RISK, "status", "--json"], folder, env).stdout,
            json.dumps(metadata_of_imports(Path(env["BENTOML_HOME"]))),
        ]
        server = Server(env, folder)
        try:
            shown += [httpx.get(f"{server.url}{path}").text for path in ("/health", "/model/info")]
            shown.append(server.output.read_text())
        finally:
            server.stop()
    finally:
        stop(process)
    assert all(secret not in text for text in shown)
    assert "alice:***@" in shown[2] and "alice:***@" in shown[3]

    unreachable = f"https://alice:{secret}@127.0.0.1:{free_port()}"
    result = run(
        [CREDIT_RISK, "import"], folder, env | {"MLFLOW_TRACKING_URI": unreachable}, check=False
    )
    assert result.returncode == 1 and "is unreachable" in result.stderr
    assert secret not in result.stderr and "alice:***@" in result.stderr
    assert "nonnumeric" not in result.stderr.lower()


def metadata_of_imports(home: Path) -> list[str]:
    """The model.yaml files of the BentoML store (where its metadata is stored)."""
    return [path.read_text() for path in (home / "models").rglob("model.yaml")]


def test_a_postgresql_password_is_not_printed(tmp_path):
    """The register stage against a PostgreSQL store named with a password."""
    from test_tracking_backends import postgres_database

    database = postgres_database()
    if database is None:
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432 (user postgres, trust auth)")
    uri = f"postgresql://postgres:pg-s3cr3t@127.0.0.1:5432/{database}"
    folder = tmp_path / "project"
    result = subprocess.run(
        [sys.executable, "-c", PIPELINE],
        cwd=make_project_folder(folder),
        env=os.environ | {"MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "pg-s3cr3t" not in result.stdout + result.stderr
    assert "postgres:***@127.0.0.1" in result.stdout
