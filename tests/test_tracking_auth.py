"""The tracking server with MLflow's basic-auth app, configured as the compose stack's image
configures it (docker/mlflow/basic_auth.ini), in a real `mlflow server --app-name basic-auth`
process: who may do what, `credit-risk tracking-users`, and the one-line errors of the
project's commands when the server refuses them."""

import json
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import (
    CREDIT_RISK,
    PIPELINE,
    PROJECT,
    make_project_folder,
    pipeline_env,
    run,
    start_mlflow_server,
    stop,
)
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from test_prediction_log import records

from credit_risk.registry.names import EXPERIMENT_NAME, MODEL_NAME, TAG_SERVING_MODEL_VERSION
from credit_risk.registry.registration_lock import LOCK_NAME
from credit_risk.serving.prediction_log import PredictionLog
from credit_risk.serving.shipping import Shipper

pytestmark = pytest.mark.slow

AUTH_CONFIG = PROJECT / "docker" / "mlflow" / "basic_auth.ini"
IMAGE_AUTH_DATABASE = "sqlite:////mlflow/db/basic_auth.db"
PASSWORD_FILES = ("admin-password", "trainer-password", "api-password")


@dataclass
class AuthServer:
    """A basic-auth tracking server, its password files (as compose's secrets folder), and a
    project folder to run the commands in."""

    url: str
    secrets: Path
    folder: Path
    setup: subprocess.CompletedProcess
    before_training: subprocess.CompletedProcess

    def password(self, user: str) -> str:
        return (self.secrets / f"{user}-password").read_text().strip()

    def env(self, user: str | None = None, **more: str) -> dict[str, str]:
        """The commands' environment: this server, as ``user`` (its password file) if given."""
        env = {"MLFLOW_TRACKING_URI": self.url, "BENTOML_HOME": str(self.folder / "bentoml")}
        if user:
            env["MLFLOW_TRACKING_USERNAME"] = user
            env["MLFLOW_TRACKING_PASSWORD_FILE"] = str(self.secrets / f"{user}-password")
        return pipeline_env(**env | more)

    def command(self, user: str | None, *args: str, check: bool = True, **more: str):
        """``credit-risk ARGS`` as ``user``."""
        return run([CREDIT_RISK, *args], self.folder, self.env(user, **more), check=check)

    def tracking_users(self, check: bool = True) -> subprocess.CompletedProcess:
        return self.command(None, "tracking-users", str(self.secrets), check=check)

    def client(self, user: str) -> MlflowClient:
        """An MLflow client of ``user`` (credentials in the URI, as MLflow allows)."""
        netloc = f"{user}:{self.password(user)}@{self.url.removeprefix('http://')}"
        return MlflowClient(f"http://{netloc}", f"http://{netloc}")


def new_password() -> str:
    return secrets.token_hex(24)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> Iterator[AuthServer]:
    """The server as the image runs it (its config, the admin's password at the first start);
    `credit-risk tracking-users`; the api's `status` before anything is registered; then the
    pipeline as the trainer: version 1 is Production."""
    folder = tmp_path_factory.mktemp("auth")
    config = AUTH_CONFIG.read_text()
    assert IMAGE_AUTH_DATABASE in config
    (folder / "basic_auth.ini").write_text(
        config.replace(IMAGE_AUTH_DATABASE, f"sqlite:///{folder / 'basic_auth.db'}")
    )
    password_folder = folder / "secrets"
    password_folder.mkdir(mode=0o700)
    for name in PASSWORD_FILES:
        (password_folder / name).write_text(new_password() + "\n")
    process, url = start_mlflow_server(
        f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", folder / "server.log",
        options=("--app-name", "basic-auth"),
        MLFLOW_AUTH_CONFIG_PATH=str(folder / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_PASSWORD=(password_folder / "admin-password").read_text().strip(),
        MLFLOW_FLASK_SERVER_SECRET_KEY=new_password(),
    )  # fmt: skip
    try:
        server = AuthServer(url, password_folder, make_project_folder(folder / "project"),
                            None, None)  # fmt: skip
        server.setup = server.tracking_users()
        server.before_training = server.command("api", "status", "--json")
        run([sys.executable, "-c", PIPELINE], server.folder, server.env("trainer"))
        yield server
    finally:
        stop(process)


def test_anonymous_and_unknown_users_and_wrong_passwords_get_401(auth_server):
    """No read, no write without a user that exists and its password; MLflow's old default
    admin password is no password here. Only /health is open."""
    alias = {"name": MODEL_NAME, "alias": "production"}
    requests = [
        ("GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": EXPERIMENT_NAME}),
        ("GET", "/api/2.0/mlflow/registered-models/alias", alias),
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": "anonymous"}),
        ("POST", "/api/2.0/mlflow/registered-models/alias", alias | {"version": "1"}),
    ]
    users = [None, ("admin", "password1234"), ("nobody", new_password()),
             ("trainer", new_password())]  # fmt: skip
    for auth in users:
        for method, path, body in requests:
            where = {"params": body} if method == "GET" else {"json": body}
            answer = httpx.request(method, auth_server.url + path, auth=auth, **where)
            assert answer.status_code == 401, (auth, method, path, answer.text)
            assert answer.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
    assert httpx.get(f"{auth_server.url}/health").status_code == 200
    trainer = auth_server.client("trainer")
    assert trainer.get_experiment_by_name("anonymous") is None
    assert trainer.get_model_version_by_alias(MODEL_NAME, "production").version == "1"


def test_tracking_users_sets_up_users_and_permissions_then_changes_nothing(auth_server):
    url = auth_server.url
    assert auth_server.setup.stdout.splitlines() == [
        f"tracking-users: admin 'admin' at {url}: password unchanged",
        f"tracking-users: experiment {EXPERIMENT_NAME} (id 1): created",
        f"tracking-users: registered model {MODEL_NAME}: created",
        "tracking-users: user 'trainer': created",
        f"tracking-users: user 'trainer': MANAGE on experiment {EXPERIMENT_NAME}: granted",
        f"tracking-users: user 'trainer': MANAGE on registered model {MODEL_NAME}: granted",
        "tracking-users: user 'api': created",
        f"tracking-users: user 'api': EDIT on experiment {EXPERIMENT_NAME}: granted",
        f"tracking-users: user 'api': READ on registered model {MODEL_NAME}: granted",
    ]
    assert auth_server.tracking_users().stdout.splitlines() == [
        f"tracking-users: admin 'admin' at {url}: password unchanged",
        f"tracking-users: experiment {EXPERIMENT_NAME} (id 1): exists",
        f"tracking-users: registered model {MODEL_NAME}: exists",
        "tracking-users: user 'trainer': password unchanged",
        f"tracking-users: user 'trainer': MANAGE on experiment {EXPERIMENT_NAME}: unchanged",
        f"tracking-users: user 'trainer': MANAGE on registered model {MODEL_NAME}: unchanged",
        "tracking-users: user 'api': password unchanged",
        f"tracking-users: user 'api': EDIT on experiment {EXPERIMENT_NAME}: unchanged",
        f"tracking-users: user 'api': READ on registered model {MODEL_NAME}: unchanged",
    ]


def test_before_the_first_registration_the_api_sees_no_production_version(auth_server):
    """tracking-users creates the registered model: without it, the server would answer the
    api's question for Production with 403 (it does so for every missing model)."""
    status = json.loads(auth_server.before_training.stdout)
    assert status["production"] is None and status["tracking_uri"] == auth_server.url


def test_a_user_without_grants_can_do_nothing_with_the_projects_resources(auth_server):
    admin = ("admin", auth_server.password("admin"))
    auditor = ("auditor", new_password())
    created = httpx.post(f"{auth_server.url}/api/2.0/mlflow/users/create", auth=admin,
                         json={"username": auditor[0], "password": auditor[1]})  # fmt: skip
    assert created.status_code == 200, created.text
    experiment = auth_server.client("trainer").get_experiment_by_name(EXPERIMENT_NAME)
    for path, params in [
        ("/api/2.0/mlflow/experiments/get", {"experiment_id": experiment.experiment_id}),
        ("/api/2.0/mlflow/registered-models/get", {"name": MODEL_NAME}),
        ("/api/2.0/mlflow/registered-models/alias", {"name": MODEL_NAME, "alias": "production"}),
    ]:
        answer = httpx.get(auth_server.url + path, params=params, auth=auditor)
        assert answer.status_code == 403, (path, answer.text)


def test_the_trainer_registers_and_promotes_and_the_api_may_not_promote(auth_server):
    """Another training as the trainer registers version 2 (rejected by the gate); the api's
    promotion is refused in one line and changes nothing; the trainer's goes through."""
    params = auth_server.folder / "params.yaml"
    original = params.read_text()
    experiment = original.replace("model: hist_gradient_boosting", "model: logistic_regression")
    params.write_text(experiment)
    try:
        run([sys.executable, "-c", PIPELINE], auth_server.folder, auth_server.env("trainer"))
    finally:
        params.write_text(original)
    trainer = auth_server.client("trainer")
    assert trainer.get_model_version(MODEL_NAME, "2").tags["gate_decision"] == "rejected"

    promote = ["promote", "2", "--reason", "auth test", "--override-gate"]
    refused = auth_server.command("api", *promote, check=False)
    assert refused.returncode == 1 and refused.stdout == "", refused
    assert re.fullmatch(
        rf"promote: error: MLflow at {re.escape(auth_server.url)}: user 'api' may not call "
        r"/api/2\.0/mlflow/\S+ \(HTTP 403 Permission denied\): the MLflow admin grants "
        r"permissions \(docs/security\.md\)\n",
        refused.stderr,
    ), refused.stderr
    assert trainer.get_model_version_by_alias(MODEL_NAME, "production").version == "1"
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        auth_server.client("admin").get_registered_model(LOCK_NAME)  # the api released it

    promoted = auth_server.command("trainer", *promote)
    assert "version 2 is now Production" in promoted.stdout
    auth_server.command("trainer", "promote", "1", "--reason", "auth test: back")
    assert trainer.get_model_version_by_alias(MODEL_NAME, "production").version == "1"


def test_the_api_reads_the_registry_and_ships_to_its_serving_run(auth_server, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    """`credit-risk import` as the api, and its shipper: the run serving-v1 with the records,
    where `credit-risk drift` run as the trainer logs its report. The api cannot delete a run
    nor move an alias."""
    imported = auth_server.command("api", "import")
    assert imported.stdout.startswith(f"imported {MODEL_NAME} version 1 (Production)")
    for name, value in auth_server.env("api").items():
        if name.startswith("MLFLOW_"):
            monkeypatch.setenv(name, value)
    directory = tmp_path / "log"
    PredictionLog(directory).append([r | {"score": 600, "reasons": []} for r in records(3)])
    shipper = Shipper(directory, auth_server.url)
    shipper.ship_once()
    status = shipper.status("1")
    assert status["shipped_records"] == 3 and status["pending_bytes"] == 0, status
    run = auth_server.client("trainer").get_run(status["run_id"])
    assert run.info.run_name == "serving-v1" and run.data.tags[TAG_SERVING_MODEL_VERSION] == "1"
    assert run.data.metrics["predictions_total"] == 3

    drift = auth_server.command("trainer", "drift", str(directory), "--output", str(tmp_path / "r"),
                                check=False)  # fmt: skip
    assert drift.returncode == 3, drift  # three records of one applicant: drifted
    assert f"logged to MLflow run serving-v1 ({status['run_id']})" in drift.stdout, drift.stdout

    api = auth_server.client("api")
    with pytest.raises(MlflowException, match="403"):
        api.delete_run(status["run_id"])
    with pytest.raises(MlflowException, match="403"):
        api.set_registered_model_alias(MODEL_NAME, "production", "2")


def test_refusals_are_one_line_naming_the_user_never_the_password(auth_server, tmp_path):
    """401 without a user, with a wrong password (in a file or in the URI) and an unreadable
    password file: one line each, exit status 1, no traceback, no password."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text(new_password())
    url = auth_server.url
    in_uri = f"http://trainer:{wrong.read_text()}@{url.removeprefix('http://')}"
    cases = [
        ({}, f"MLflow at {url} needs a user (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
             "MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_USERNAME": "trainer", "MLFLOW_TRACKING_PASSWORD_FILE": str(wrong)},
         f"MLflow at {url} refused user 'trainer': wrong username or password (HTTP 401; "
         "MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_PASSWORD_FILE)"),
        ({"MLFLOW_TRACKING_URI": in_uri},
         f"MLflow at http://trainer:***@{url.removeprefix('http://')} refused user 'trainer': "
         "wrong username or password (HTTP 401; MLFLOW_TRACKING_USERNAME, "
         "MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_PASSWORD_FILE)"),
        ({"MLFLOW_TRACKING_USERNAME": "trainer",
          "MLFLOW_TRACKING_PASSWORD_FILE": str(tmp_path / "missing")},
         f"MLFLOW_TRACKING_PASSWORD_FILE: cannot read the tracking password from "
         f"{tmp_path / 'missing'}: No such file or directory"),
    ]  # fmt: skip
    for settings, line in cases:
        result = auth_server.command(None, "status", check=False, **settings)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"status: error: {line}\n"
        assert wrong.read_text() not in result.stderr


def test_tracking_users_changes_a_users_password_and_the_admins(auth_server):
    """A new password file for the api: its password changes (the old one is refused). The
    admin's changes with the one that still works in admin-password.previous; without it, a
    new admin password is refused in one line saying so."""
    api_file = auth_server.secrets / "api-password"
    old = api_file.read_text().strip()
    api_file.write_text(new_password() + "\n")
    output = auth_server.tracking_users().stdout
    assert "tracking-users: user 'api': password changed\n" in output
    assert "tracking-users: user 'trainer': password unchanged\n" in output
    assert httpx.get(f"{auth_server.url}/api/2.0/mlflow/users/current",
                     auth=("api", old)).status_code == 401  # fmt: skip
    assert auth_server.command("api", "status").returncode == 0

    admin_file = auth_server.secrets / "admin-password"
    previous = auth_server.secrets / "admin-password.previous"
    shutil.copy(admin_file, previous)
    admin_file.write_text(new_password() + "\n")
    admin = f"tracking-users: admin 'admin' at {auth_server.url}: password"
    first, second = auth_server.tracking_users().stdout, auth_server.tracking_users().stdout
    assert first.startswith(f"{admin} changed\n") and second.startswith(f"{admin} unchanged\n")
    previous.unlink()

    admin_file.write_text(new_password() + "\n")
    refused = auth_server.tracking_users(check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"tracking-users: error: MLflow at {auth_server.url} refused user 'admin' with the "
        f"password in {admin_file} (HTTP 401); if that is a new password, put the one that "
        f"still works in {previous}\n"
    )
    admin_file.write_text("too-short\n")
    refused = auth_server.tracking_users(check=False)
    assert refused.stderr == (
        f"tracking-users: error: {admin_file}: MLflow needs a password of 12 characters or "
        "more, the file has 9\n"
    )


def test_tracking_users_needs_a_tracking_server_with_users(mlflow_server, tmp_path):
    """A server without the basic-auth app, and the embedded SQLite store: one line each."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    for name in PASSWORD_FILES:
        (folder / name).write_text(new_password())
    command = [CREDIT_RISK, "tracking-users", str(folder)]
    plain = run(command, tmp_path, pipeline_env(MLFLOW_TRACKING_URI=mlflow_server), check=False)
    assert plain.stderr == (
        f"tracking-users: error: MLflow at {mlflow_server} has no users: it does not run the "
        "basic-auth app (`mlflow server --app-name basic-auth`; /api/2.0/mlflow/users/current "
        "answered 404)\n"
    )
    embedded = run(command, tmp_path, pipeline_env(), check=False)
    assert embedded.returncode == 1 and embedded.stderr.startswith(
        f"tracking-users: error: sqlite:///{tmp_path}/mlflow.db is not a tracking server"
    ), embedded.stderr
