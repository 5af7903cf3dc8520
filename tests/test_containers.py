"""The images and the compose stack, built and run with a real engine (podman, else docker).

Each image is built once per session from the working tree, under the names compose.yaml uses
(``credit-risk-{train,mlflow,service}:latest``). Containers, networks, volumes and compose
projects made here have names unique to the session and are removed afterwards. Skipped only
where no container engine works.
"""

import hashlib
import json
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
import test_docs
import yaml
from conftest import (
    CREDIT_RISK,
    PROJECT,
    REAL_DATA,
    answers_under_load,
    free_port,
    hammering,
    make_served_project,
    pipeline_env,
    run,
)
from test_repository import hadolint_problems
from test_service import SAMPLE, mlflow_records

from credit_risk.ml.data import load_applicants
from credit_risk.ml.fingerprints import dataset_sha256
from credit_risk.registry.names import (
    EXPERIMENT_NAME,
    MODEL_NAME,
    TAG_DATASET_HASH,
    TAG_MODEL_FINGERPRINT,
    TAG_SERVING_MODEL_VERSION,
)
from credit_risk.serving.image import ImageError, container_engine

pytestmark = pytest.mark.slow

TRAIN_IMAGE, MLFLOW_IMAGE, SERVICE_IMAGE = (
    f"credit-risk-{name}:latest" for name in ("train", "mlflow", "service")
)
PREDICTION_LOG = "/var/lib/credit-risk/predictions"
SESSION = uuid.uuid4().hex[:8]
TOOLS = Path(sys.executable).parent


class Engine:
    """The container engine's command line, and compose through it."""

    def __init__(self, name: str):
        self.name = name
        self.compose_command = [str(TOOLS / "podman-compose")] if name == "podman" else [
            "docker", "compose"
        ]  # fmt: skip

    def __call__(self, *args: str, check: bool = True, timeout: float = 1200, env=None):
        """Run the engine; fail with its output when ``check`` and it fails."""
        return self._run([self.name, *args], check, timeout, env)

    def compose(self, project: str, *args: str, env: dict, check: bool = True):
        """``compose -p project ARGS`` in the project folder."""
        return self._run([*self.compose_command, "-p", project, *args], check, 1200, env)

    @staticmethod
    def _run(command: list[str], check: bool, timeout: float, env) -> subprocess.CompletedProcess:
        result = subprocess.run(
            command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n"
                        f"{result.stderr}")  # fmt: skip
        return result

    def is_healthy(self, container: str) -> bool:
        """Whether the container's own healthcheck passes (podman here runs it on demand)."""
        if self.name == "podman":
            return self("healthcheck", "run", container, check=False).returncode == 0
        status = self("inspect", "--format", "{{.State.Health.Status}}", container).stdout
        return status.strip() == "healthy"

    def compose_container(self, project: str, service: str) -> str:
        """The id of the compose project's container of ``service``."""
        ids = self(
            "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(ids) == 1, f"{project}/{service}: containers {ids}"
        return ids[0]


@pytest.fixture(scope="session")
def engine() -> Engine:
    try:
        return Engine(container_engine())
    except ImageError as error:
        pytest.skip(f"no container engine: {error}")


@pytest.fixture(scope="session")
def train_image(engine: Engine) -> str:
    engine("build", "-t", TRAIN_IMAGE, ".")
    return TRAIN_IMAGE


@pytest.fixture(scope="session")
def mlflow_image(engine: Engine) -> str:
    engine("build", "-f", "docker/mlflow/Dockerfile", "-t", MLFLOW_IMAGE, ".")
    return MLFLOW_IMAGE


def wait_until(condition, what: str, timeout: float = 180) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def network(engine: Engine) -> Iterator[str]:
    name = f"credit-risk-test-{SESSION}"
    engine("network", "create", name)
    yield name
    engine("network", "rm", "-f", name, check=False)


PASSWORD_FILES = ("admin-password", "secret-key", "trainer-password", "api-password")


def password_folder(folder: Path) -> Path:
    """The tracking server's password files as docs/containers.md makes them: a folder only
    its owner enters, files each container's user can read."""
    folder.mkdir(mode=0o700)
    for name in PASSWORD_FILES:
        (folder / name).write_text(secrets.token_hex(24) + "\n")
        (folder / name).chmod(0o644)
    return folder


def mounted_password(folder: Path, user: str) -> list[str]:
    """Run options: ``user``'s password file mounted as compose mounts a secret, and the
    variables that make the project's commands use it."""
    target = f"/run/secrets/{user}-password"
    return ["-v", f"{folder / f'{user}-password'}:{target}:ro",
            "-e", f"MLFLOW_TRACKING_USERNAME={user}",
            "-e", f"MLFLOW_TRACKING_PASSWORD_FILE={target}"]  # fmt: skip


def with_user(url: str, folder: Path, user: str) -> str:
    """``url`` with ``user`` and its password in it (MLflow's clients send them)."""
    password = (folder / f"{user}-password").read_text().strip()
    return url.replace("http://", f"http://{user}:{password}@", 1)


def set_up_users(url: str, folder: Path) -> str:
    """`credit-risk tracking-users` from the host, as the guide runs it; its output."""
    command = [CREDIT_RISK, "tracking-users", str(folder)]
    return run(command, PROJECT, pipeline_env(MLFLOW_TRACKING_URI=url)).stdout


@pytest.fixture(scope="session")
def passwords(tmp_path_factory) -> Path:
    return password_folder(tmp_path_factory.mktemp("tracking") / "secrets")


@pytest.fixture(scope="session")
def tracking(engine: Engine, mlflow_image: str, network: str, passwords: Path) -> Iterator[str]:
    """The MLflow image serving on the session network as ``mlflow``, its secrets mounted as
    compose mounts them, the users set up; yields its host URL with the trainer's user."""
    port = free_port()
    name = f"credit-risk-test-mlflow-{SESSION}"
    secrets_options = []
    for secret, variable in (("admin-password", "MLFLOW_AUTH_ADMIN_PASSWORD_FILE"),
                             ("secret-key", "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE")):  # fmt: skip
        target = f"/run/secrets/mlflow-{secret}"
        secrets_options += ["-v", f"{passwords / secret}:{target}:ro", "-e", f"{variable}={target}"]
    engine("run", "-d", "--name", name, "--network", network, "--network-alias", "mlflow",
           "-p", f"127.0.0.1:{port}:5000", *secrets_options, mlflow_image)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{url}/health"), f"mlflow server {url}")
    set_up_users(url, passwords)
    yield with_user(url, passwords, "trainer")
    engine("rm", "-f", name, check=False)


@pytest.fixture(scope="session")
def trained(engine: Engine, train_image: str, tracking: str, network: str, passwords: Path) -> str:
    """The training image's default command (``dvc repro``) run against ``tracking`` as the
    trainer."""
    result = engine("run", "--rm", "--network", network, *mounted_password(passwords, "trainer"),
                    "-e", "MLFLOW_TRACKING_URI=http://mlflow:5000", train_image)  # fmt: skip
    assert "Production is version 1 [http://mlflow:5000]" in result.stdout, result.stdout
    return tracking


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bentoml")


def containerize(engine: Engine, tracking_url: str, home: Path, image: str = SERVICE_IMAGE,
                 **environment: str) -> str:  # fmt: skip
    """`credit-risk containerize` as the README runs it: the Production version -> ``image``
    (another name than the README's for a test whose registry is its own)."""
    env = pipeline_env(MLFLOW_TRACKING_URI=tracking_url, BENTOML_HOME=str(home),
                       BENTOML_DO_NOT_TRACK="true", **environment)  # fmt: skip
    tag = [] if image == SERVICE_IMAGE else ["--tag", image]
    result = subprocess.run(
        [str(TOOLS / "credit-risk"), "containerize", "--engine", engine.name, *tag],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "containerize: importing the registry's Production version"
    assert lines[1].startswith(f"imported {MODEL_NAME} version 1 (Production)")
    assert lines[2] == "containerize: building the bento of bentofile.yaml"
    assert lines[3].startswith(f"containerize: building image {image} from ")
    assert re.fullmatch(rf"built image {re.escape(image)} .* with {engine.name} in \d+ s", lines[4])
    assert len(lines) == 5, result.stdout  # the engine's output only when it fails
    return image


def test_a_failed_image_build_shows_the_engines_last_lines_and_one_error(engine, tmp_path):
    """BentoML logs a failed build and returns: containerize still fails, naming the cause."""
    folder, env = make_served_project(tmp_path / "project")
    result = subprocess.run(
        [str(TOOLS / "credit-risk"), "containerize", "--engine", engine.name, "--tag", "Bad!"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.splitlines()[-1].startswith("containerize: building image Bad! from ")
    errors = result.stderr.splitlines()
    assert errors[-1].startswith(f"containerize: error: {engine.name} could not build ")
    assert "invalid reference format" in errors[-1] and "invalid reference format" in errors[-2]


@pytest.fixture(scope="session")
def service_image(engine: Engine, trained: str, bentoml_home: Path) -> str:
    return containerize(engine, trained, bentoml_home)


def test_training_image_registers_a_production_version_with_dataset_hash(trained):
    """`dvc repro` in the image: version 1 is Production, tagged with the dataset's hash, and
    its model file is byte for byte the one dvc.lock records."""
    client = mlflow.MlflowClient(trained)
    version = client.get_model_version_by_alias(MODEL_NAME, "production")
    assert version.version == "1"
    expected = dataset_sha256(load_applicants(PROJECT / "data" / "gmsc-synthetic.csv"))
    assert version.tags[TAG_DATASET_HASH] == expected
    assert client.get_run(version.run_id).data.params[TAG_DATASET_HASH] == expected
    lock = yaml.safe_load((PROJECT / "dvc.lock").read_text())
    locked = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.skops")
    mlflow.set_tracking_uri(trained)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/1"))
    assert hashlib.md5((folder / "model.skops").read_bytes()).hexdigest() == locked["md5"]


LEFTOVERS = [
    "mlflow.db", "mlartifacts/1/model.skops", "mlflow-server-artifacts/1/model.skops",
    "reports/drift/drift.html", "dvc_plots/index.html", ".dvc/config.local", ".dvc/tmp/exps/x",
    "monitoring/predictions/predictions-1.jsonl", "src/credit_risk/__pycache__/cli.pyc",
    ".venv/bin/python", "notes.txt",
]  # fmt: skip
"""What a working tree holds besides the project: stores, reports, plots, local settings."""


def test_the_build_context_is_the_projects_inputs_not_the_working_trees_leftovers(engine, tmp_path):
    """A copy of the tracked files plus LEFTOVERS: what `COPY . .` gets is only tracked files,
    among them everything the training image needs."""
    context = tmp_path / "project"
    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    for name in tracked + LEFTOVERS:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        source = PROJECT / name
        (context / name).write_bytes(source.read_bytes() if name in tracked else b"leftover")
    listing = tmp_path / "Dockerfile.listing"
    listing.write_text("FROM python:3.11.7-slim-bookworm\nCOPY . /context\n")
    tag = f"credit-risk-context-{SESSION}:latest"
    engine("build", "-q", "-f", str(listing), "-t", tag, str(context))
    try:
        found = engine("run", "--rm", tag, "find", "/context", "-type", "f").stdout.split()
    finally:
        engine("rmi", "-f", tag, check=False)
    copied = {name.removeprefix("/context/") for name in found}
    assert copied <= set(tracked), copied - set(tracked)
    needed = {"README.md", "pyproject.toml", "constraints.txt", "params.yaml", "dvc.yaml"}
    needed |= {name for name in tracked if name.startswith(("src/", "stages/", "data/"))}
    assert needed <= copied, needed - copied


def test_images_run_as_a_non_root_user(engine, train_image, mlflow_image, service_image):
    for image in (train_image, mlflow_image, service_image):
        uid = engine("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
        assert uid.isdigit() and uid != "0", f"{image} runs as {uid}"


def refusal_to_start(engine: Engine, *run_arguments: str, marker: str = "refusing to start"):
    """Run an image (``podman run --rm RUN_ARGUMENTS``) that must not start: it exits with
    status 1 and no traceback; its one line containing ``marker``."""
    result = engine("run", "--rm", *run_arguments, check=False, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if marker in line]
    assert len(lines) == 1, output
    return lines[0]


def test_the_service_image_refuses_to_start_without_keys(engine, service_image):
    """No keys file and no explicit anonymous access: one line, exit 1, nothing served."""
    assert refusal_to_start(engine, service_image) == (
        "credit-risk service: refusing to start: no API keys: set CREDIT_RISK_API_KEYS_FILE to a "
        "keys file (`credit-risk keys add NAME`), or CREDIT_RISK_ALLOW_ANONYMOUS=1 to serve "
        "without keys"
    )


def test_the_service_image_refuses_a_keys_file_its_user_cannot_read(
    engine, service_image, tmp_path
):
    """The keys file as `credit-risk keys add` makes it (owner only), mounted as compose does:
    one line naming the file and the reason, exit 1."""
    folder = tmp_path / "keys"
    folder.mkdir()
    run([CREDIT_RISK, "keys", "add", "owner-only", "--file", str(folder / "api-keys")], tmp_path)
    assert refusal_to_start(
        engine, "-v", f"{folder}:/run/credit-risk/keys:ro",
        "-e", "CREDIT_RISK_API_KEYS_FILE=/run/credit-risk/keys/api-keys", service_image,
    ) == (
        "credit-risk service: refusing to start: cannot read the keys file "
        "/run/credit-risk/keys/api-keys: [Errno 13] Permission denied: "
        "'/run/credit-risk/keys/api-keys'"
    )  # fmt: skip


def test_the_mlflow_image_does_not_start_without_readable_secrets(engine, mlflow_image, tmp_path):
    """No secret key, no admin password: MLflow refuses (it ships no default password); a
    password file its user cannot read (owner-only, as `umask 077` makes it): one line
    naming it."""
    for settings, refusal in (([], "A static secret key needs to be set"),
                              (["-e", "MLFLOW_FLASK_SERVER_SECRET_KEY=test"],
                               "MLflow ships no default admin password")):  # fmt: skip
        result = engine("run", "--rm", *settings, mlflow_image, check=False, timeout=300)
        assert result.returncode == 1 and refusal in result.stderr, result.stderr
    secret = tmp_path / "admin-password"
    secret.write_text(secrets.token_hex(24))
    secret.chmod(0o600)
    target = "/run/secrets/mlflow-admin-password"
    assert refusal_to_start(
        engine, "-v", f"{secret}:{target}:ro", "-e", f"MLFLOW_AUTH_ADMIN_PASSWORD_FILE={target}",
        mlflow_image, marker="credit-risk-mlflow:",
    ) == (
        f"credit-risk-mlflow: MLFLOW_AUTH_ADMIN_PASSWORD_FILE: {target} is not readable by uid 1000"
    )  # fmt: skip


def test_generated_service_dockerfile_passes_hadolint(service_image, bentoml_home):
    bentos = bentoml_home / "bentos" / "credit-risk-service"
    dockerfile = bentos / (bentos / "latest").read_text().strip() / "env" / "docker" / "Dockerfile"
    assert "build-essential" not in dockerfile.read_text()
    assert hadolint_problems(dockerfile) is None


class Container:
    """The service image running on the session network, published on a loopback port."""

    def __init__(self, engine: Engine, image: str, network: str, volume: str, passwords: Path,
                 **env: str):  # fmt: skip
        self.engine, self.port = engine, free_port()
        self.name = f"credit-risk-test-api-{uuid.uuid4().hex[:8]}"
        self.url = f"http://127.0.0.1:{self.port}"
        options = [f"--env={key}={value}" for key, value in env.items()]
        options += mounted_password(passwords, "api")
        engine("run", "-d", "--name", self.name, "--network", network, *options,
               "-v", f"{volume}:{PREDICTION_LOG}", "-p", f"127.0.0.1:{self.port}:3000",
               image)  # fmt: skip
        try:
            wait_until(lambda: answers(f"{self.url}/readyz"), f"service container {self.name}")
        except BaseException:
            self.remove()
            raise

    def shipping(self) -> dict:
        """The ``prediction_log.mlflow`` part of ``/health``."""
        return httpx.get(f"{self.url}/health", timeout=10).json()["prediction_log"]["mlflow"]

    def remove(self) -> None:
        self.engine("rm", "-f", self.name, check=False)


@pytest.fixture
def volume(engine: Engine) -> Iterator[str]:
    name = f"credit-risk-test-predictions-{uuid.uuid4().hex[:8]}"
    engine("volume", "create", name)
    yield name
    engine("volume", "rm", "-f", name, check=False)


def verify(url: str, key: str | None = None) -> str:
    """tests/verify.sh against ``url`` (with API ``key`` if given); its output."""
    env = pipeline_env(CREDIT_RISK_API_KEY=key) if key else pipeline_env()
    result = subprocess.run([str(PROJECT / "tests" / "verify.sh"), url], capture_output=True,
                            text=True, timeout=120, env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_service_image_killed_under_load_loses_no_acknowledged_prediction(
    engine, service_image, trained, network, volume, passwords
):
    """verify.sh passes; SIGKILL mid-burst (nothing shipped yet); a new container on the same
    volume ships every acknowledged prediction to MLflow."""
    first = Container(engine, service_image, network, volume, passwords,
                      MLFLOW_TRACKING_URI="http://mlflow:5000", CREDIT_RISK_ALLOW_ANONYMOUS="1",
                      CREDIT_RISK_SHIP_INTERVAL="3600")  # fmt: skip
    try:
        assert "credit-risk-model v1 Production" in verify(first.url)
        with hammering(first.url, SAMPLE) as acknowledged:
            wait_until(lambda: len(acknowledged) > 200, "200 acknowledged predictions", 120)
            engine("kill", "--signal", "KILL", first.name)
        assert engine("inspect", "--format", "{{.State.Running}}", first.name).stdout.strip() in (
            "false", "False"
        )  # fmt: skip
    finally:
        first.remove()

    second = Container(engine, service_image, network, volume, passwords,
                       MLFLOW_TRACKING_URI="http://mlflow:5000", CREDIT_RISK_ALLOW_ANONYMOUS="1",
                       CREDIT_RISK_SHIP_INTERVAL="1")  # fmt: skip
    try:
        wait_until(lambda: (s := second.shipping())["pending_bytes"] == 0 and s["shipped_records"],
                   "shipment after the restart")  # fmt: skip
        shipping = second.shipping()
    finally:
        second.remove()
    assert shipping["ok"] and shipping["shipped_records"] >= len(acknowledged), shipping
    shipped = mlflow_records({"MLFLOW_TRACKING_URI": trained}, shipping["run_id"])
    assert set(acknowledged) <= shipped.keys()


class Stack:
    """One compose project of compose.yaml, on free loopback ports, the api's keys file and
    the tracking server's password files in ``folder``."""

    def __init__(self, engine: Engine, folder: Path, **settings: str):
        self.engine, self.project = engine, f"crtest{uuid.uuid4().hex[:8]}"
        self.api_port, self.mlflow_port = free_port(), free_port()
        keys_folder = folder / "keys"
        self.keys_file = keys_folder / "api-keys"
        self.secrets = password_folder(folder / "mlflow-secrets")
        # Its own api image: the model in credit-risk-service:latest comes from another registry
        # (the docs tests build that name too, maybe at the same time).
        self.service_image = f"credit-risk-service:{self.project}"
        self.env = pipeline_env(CREDIT_RISK_API_PORT=str(self.api_port),
                                CREDIT_RISK_MLFLOW_PORT=str(self.mlflow_port),
                                CREDIT_RISK_API_KEYS_DIR=str(keys_folder),
                                CREDIT_RISK_SERVICE_IMAGE=self.service_image,
                                CREDIT_RISK_MLFLOW_SECRETS=str(self.secrets),
                                CREDIT_RISK_SHIP_INTERVAL="1", **settings)  # fmt: skip
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.mlflow = f"http://127.0.0.1:{self.mlflow_port}"

    def set_up_users(self) -> str:
        return set_up_users(self.mlflow, self.secrets)

    def url(self, user: str) -> str:
        """The tracking server's URL with ``user`` and its password in it."""
        return with_user(self.mlflow, self.secrets, user)

    def as_user(self, user: str) -> dict[str, str]:
        """The host's settings for a command run as ``user``, as the guide gives them."""
        password_file = str(self.secrets / f"{user}-password")
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD_FILE": password_file}

    def secret_values(self) -> list[str]:
        return [(self.secrets / name).read_text().strip() for name in PASSWORD_FILES]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.engine.compose(self.project, *args, env=self.env, check=check)

    def wait_for(self, service: str, url: str) -> None:
        """Until ``url`` answers and the service's container passes its healthcheck; else
        fail with the end of the service's log."""
        try:
            wait_until(lambda: answers(url), f"{service} at {url}")
        except pytest.fail.Exception as failure:
            log = self("logs", "--tail", "40", service, check=False)
            pytest.fail(f"{failure}\n{service}'s log:\n{log.stdout}{log.stderr}")
        container = self.engine.compose_container(self.project, service)
        wait_until(lambda: self.engine.is_healthy(container), f"{service} healthcheck")

    def train(self) -> str:
        """`compose run --rm trainer`; its output."""
        return self("run", "--rm", "trainer").stdout

    def add_key(self, name: str) -> str:
        """A new key in the api's keys file (readable by the api's user, as documented)."""
        self.keys_file.parent.mkdir(exist_ok=True)
        key = run([CREDIT_RISK, "keys", "add", name, "--file", str(self.keys_file)], PROJECT)
        self.keys_file.chmod(0o644)
        return key.stdout.strip()

    def revoke_key(self, name: str) -> None:
        run([CREDIT_RISK, "keys", "revoke", name, "--file", str(self.keys_file)], PROJECT)

    def remove(self) -> None:
        self("down", "-v", check=False)
        self.engine("rmi", "-f", self.service_image, check=False)


@pytest.fixture
def stack(engine, train_image, mlflow_image, tmp_path) -> Iterator[Stack]:
    stack = Stack(engine, tmp_path)
    yield stack
    stack.remove()


def registry_snapshot(url: str) -> dict:
    """Training runs, registry versions and Production, serving runs' shipped totals."""
    client = mlflow.MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    runs = client.search_runs([experiment])
    return {
        "training_runs": sorted(
            r.info.run_id for r in runs if TAG_MODEL_FINGERPRINT in r.data.tags
        ),
        "versions": sorted(v.version for v in client.search_model_versions(f"name='{MODEL_NAME}'")),
        "production": client.get_model_version_by_alias(MODEL_NAME, "production").version,
        "shipped": {r.info.run_id: r.data.metrics.get("predictions_total")
                    for r in runs if TAG_SERVING_MODEL_VERSION in r.data.tags},
    }  # fmt: skip


def shipping_state(stack: Stack) -> dict:
    """The ``prediction_log.mlflow`` part of the api's ``/health``."""
    return httpx.get(f"{stack.api}/health", timeout=10).json()["prediction_log"]["mlflow"]


def shipped_everything(stack: Stack, total: int) -> bool:
    shipping = shipping_state(stack)
    return shipping["shipped_records"] == total and shipping["pending_bytes"] == 0


def wait_until_shipped(stack: Stack, total: int) -> None:
    """Until the api has shipped ``total`` records; else fail with its ``/health``."""
    try:
        wait_until(lambda: shipped_everything(stack, total), f"{total} predictions shipped")
    except pytest.fail.Exception as failure:
        health = httpx.get(f"{stack.api}/health", timeout=10).text
        pytest.fail(f"{failure}\n/health: {health}")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def lockdown(engine: Engine, container: str) -> dict:
    """What the engine says of a container's lockdown, and what its first process has."""
    host = json.loads(engine("inspect", container).stdout)[0]["HostConfig"]
    status = engine("exec", container, "cat", "/proc/1/status").stdout
    return {
        "read_only": host["ReadonlyRootfs"],
        "no_new_privileges": any("no-new-privileges" in o for o in host["SecurityOpt"] or []),
        "process": process_lockdown(status),
    }


def process_lockdown(status: str) -> dict:
    """The bounding capabilities and no_new_privs flag in a ``/proc/PID/status``."""
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return {"CapBnd": fields["CapBnd"].strip(), "NoNewPrivs": fields["NoNewPrivs"].strip()}


LOCKED = {"CapBnd": "0000000000000000", "NoNewPrivs": "1"}


def refuses_without_a_user(url: str) -> bool:
    """Whether the tracking server at ``url`` answers 401 to reads and writes without a user,
    with MLflow's old default admin password and with a wrong password."""
    requests = [("GET", "/api/2.0/mlflow/experiments/search", {"max_results": 5}),
                ("POST", "/api/2.0/mlflow/experiments/create", {"name": "anonymous"})]  # fmt: skip
    statuses = set()
    for auth in (None, ("admin", "password1234"), ("trainer", secrets.token_hex(24))):
        for method, path, body in requests:
            where = {"params": body} if method == "GET" else {"json": body}
            statuses.add(httpx.request(method, url + path, auth=auth, **where).status_code)
    return statuses == {401}


def test_compose_stack_end_to_end_and_restarts_without_data_loss(engine, stack, tmp_path):
    """The README's order: up mlflow, its users, run trainer, containerize, a key, up api,
    verify; then `restart api`, `down` (volumes kept) and `up`: runs, versions, shipped counts
    and users remain. MLflow answers only its users; the trainer registers and promotes, the
    api reads and ships but may not promote, and follows a new password file; no password in
    any log or container setting. The api answers only with a key, logs its name, and follows
    the keys file; the containers are locked down."""
    stack("up", "-d", "mlflow")
    stack.wait_for("mlflow", f"{stack.mlflow}/health")
    assert refuses_without_a_user(stack.mlflow)
    users = stack.set_up_users()
    assert "tracking-users: user 'trainer': created" in users
    assert "tracking-users: user 'api': created" in users
    assert "Production is version 1 [http://mlflow:5000]" in stack.train()
    containerize(engine, stack.mlflow, tmp_path / "bentoml", stack.service_image,
                 **stack.as_user("trainer"))  # fmt: skip
    key = stack.add_key("compose-test")
    stack("up", "-d", "api")
    stack.wait_for("api", f"{stack.api}/readyz")
    assert "credit-risk-model v1 Production" in verify(stack.api, key)
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        for _ in range(20):
            assert client.post("/predict", json=SAMPLE, headers=bearer(key)).status_code == 200
        assert client.post("/predict", json=SAMPLE).status_code == 401
        assert client.get("/model/info", headers=bearer(key[:-1] + "x")).status_code == 401
    wait_until_shipped(stack, 21)
    before = registry_snapshot(stack.url("trainer"))
    assert len(before["training_runs"]) == 1 and before["versions"] == ["1"]
    assert list(before["shipped"].values()) == [21]
    (serving_run,) = before["shipped"]
    shipped = mlflow_records({"MLFLOW_TRACKING_URI": stack.url("trainer")}, serving_run)
    assert {record["api_key"] for record in shipped.values()} == {"compose-test"}
    assert key not in json.dumps(shipped) and key not in stack("logs", "api").stdout
    logs = stack("logs").stdout + stack("logs").stderr
    settings = engine("inspect", *(engine.compose_container(stack.project, service)
                                   for service in ("mlflow", "api"))).stdout  # fmt: skip
    for secret in stack.secret_values():
        assert secret not in logs and secret not in settings

    for service in ("mlflow", "api"):
        container = engine.compose_container(stack.project, service)
        assert lockdown(engine, container) == {
            "read_only": True, "no_new_privileges": True, "process": LOCKED
        }, service  # fmt: skip
    trainer = stack("run", "--rm", "trainer", "cat", "/proc/self/status").stdout
    assert process_lockdown(trainer) == LOCKED

    stack("restart", "api")
    stack.wait_for("api", f"{stack.api}/readyz")
    assert shipped_everything(stack, 21)

    stack("down")
    stack("up", "-d", "mlflow", "api")
    stack.wait_for("mlflow", f"{stack.mlflow}/health")
    stack.wait_for("api", f"{stack.api}/readyz")
    assert registry_snapshot(stack.url("trainer")) == before
    assert shipped_everything(stack, 21)
    verify(stack.api, key)
    wait_until_shipped(stack, 22)
    assert list(registry_snapshot(stack.url("trainer"))["shipped"].values()) == [22]

    # Rollout: the trainer registers an experiment, a reviewer promotes it from the host; the
    # running api serves it, with no restart and no failed request.
    with answers_under_load(stack.api, SAMPLE, clients=2, key=key) as answers:
        experiment = ["dvc", "exp", "run", "-S", "train.model=logistic_regression"]
        stack("run", "--rm", "trainer", *experiment)
        promote = [CREDIT_RISK, "promote", "2", "--reason", "compose rollout", "--override-gate"]
        run(promote, tmp_path, pipeline_env(MLFLOW_TRACKING_URI=stack.mlflow,
                                            **stack.as_user("trainer")))  # fmt: skip
        wait_until(lambda: answers and answers[-1][1].get("model_version") == "2", "version 2")
    assert {status for status, _ in answers} == {200}
    scored = sorted((body["timestamp"], body["model_version"]) for _, body in answers)
    assert scored[0][1] == "1" and scored[-1][1] == "2"  # in the order they were scored
    back = [CREDIT_RISK, "promote", "1", "--reason", "the api's choice", "--override-gate"]
    refused = run(back, tmp_path, pipeline_env(MLFLOW_TRACKING_URI=stack.mlflow,
                                               **stack.as_user("api")), check=False)  # fmt: skip
    assert refused.returncode == 1 and refused.stderr.startswith(
        f"promote: error: MLflow at {stack.mlflow}: user 'api' may not call "
    ), refused.stderr
    assert registry_snapshot(stack.url("trainer"))["production"] == "2"

    # Rotation in the running container: a new key, the old one revoked.
    successor = stack.add_key("compose-test-2")
    stack.revoke_key("compose-test")
    info = f"{stack.api}/model/info"
    wait_until(lambda: httpx.get(info, headers=bearer(key)).status_code == 401, "revoked", 30)
    assert httpx.get(info, headers=bearer(successor)).status_code == 200

    # A new password for the api's MLflow user: its file rewritten in place (the container
    # sees the change), then tracking-users. The running api ships with it, no restart.
    wait_until(lambda: shipping_state(stack)["pending_bytes"] == 0, "all shipped")
    total = shipping_state(stack)["shipped_records"]
    (stack.secrets / "api-password").write_text(secrets.token_hex(24) + "\n")
    assert "tracking-users: user 'api': password changed" in stack.set_up_users()
    verify(stack.api, successor)
    wait_until_shipped(stack, total + 1)


@pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"{REAL_DATA} is not on this machine")
def test_trainer_reads_the_file_named_by_credit_risk_data(
    engine, train_image, mlflow_image, tmp_path
):
    """CREDIT_RISK_DATA mounts the real Kaggle file (read-only) where the trainer reads it."""
    stack = Stack(engine, tmp_path, CREDIT_RISK_DATA=str(REAL_DATA))
    try:
        stack("up", "-d", "mlflow")
        stack.wait_for("mlflow", f"{stack.mlflow}/health")
        stack.set_up_users()
        output = stack.train()
        assert "Production is version 1 [http://mlflow:5000]" in output, output
        version = mlflow.MlflowClient(stack.url("trainer")).get_model_version(MODEL_NAME, "1")
    finally:
        stack.remove()
    assert version.tags[TAG_DATASET_HASH] == dataset_sha256(load_applicants(REAL_DATA))


def test_containers_document_commands_work_as_written(tmp_path):
    """docs/containers.md as written (the check of ``tests/test_docs.py``). In this file, after
    the tests above: the document builds and runs the images under the names they use
    (``credit-risk-*:latest``), so it reuses them and never retags them while they run."""
    test_docs.run_document(test_docs.CONTAINERS, tmp_path)
