"""Shared fixtures: the project copied into temporary git repositories, real MLflow servers."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from threadpoolctl import threadpool_limits

PROJECT = Path(__file__).resolve().parent.parent
REAL_DATA = PROJECT.parent / "shared" / "data" / "gmsc" / "cs-training.csv"
SERVICE = "credit_risk.serving.service:CreditRiskService"
CREDIT_RISK = str(Path(sys.executable).parent / "credit-risk")
BENTOML = str(Path(sys.executable).parent / "bentoml")
PIPELINE = (
    "from credit_risk.params import load_params; "
    "from credit_risk.pipeline import prepare, fingerprint, train, register; p = load_params(); "
    "[print(step(p)) for step in (prepare.prepare, fingerprint.fingerprint, train.train, "
    "register.register)]"
)
"""The four stages in one process (no DVC): for tests that need a registered model fast."""
TRAIN = (
    "from credit_risk.params import load_params; "
    "from credit_risk.pipeline import prepare, fingerprint, train; p = load_params(); "
    "[step(p) for step in (prepare.prepare, fingerprint.fingerprint, train.train)]"
)
REGISTER = "from credit_risk.pipeline.runner import run_stage; from credit_risk.pipeline.register "
REGISTER += "import register; run_stage(register)"
"""The first three stages, then the register stage as DVC runs it (its errors as one line)."""
PIPELINE_FILES = [
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "stages",
    "src",
    "data/gmsc-synthetic.csv",
]


def pipeline_env(**overrides: str) -> dict[str, str]:
    """The environment the README's commands run in: the venv first on PATH, no tracking URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    # MLflow 3's server starts a job runner (7 processes) for GenAI jobs this project never uses.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # Trainings' OpenMP threads sleep while they wait instead of spinning: the tests run side by
    # side on every core (the model's bytes do not depend on it).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    env.update(overrides)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
    """Run a command; on an unexpected failure, show its output in the test report."""
    result = subprocess.run(
        args, cwd=cwd, env=env or pipeline_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def make_project_repo(path: Path) -> Path:
    """A fresh git repository holding the pipeline (no dvc.lock, no outputs, no MLflow store)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        source, target = PROJECT / name, path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    run(["git", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "pipeline"], path)
    return path


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than cores. The end-to-end tests spend much of their time
    waiting for servers, trainings in other processes and containers."""
    return (os.cpu_count() or 1) + 1


LONGEST_FILES = [
    "test_containers.py",
    "test_docs.py",
    "test_promotion.py",
    "test_docs_pipeline.py",
    "test_pipeline_dvc.py",
    "test_rollout.py",
    "test_service.py",
]
"""The test files that take longest (about 17 to 4 minutes each on 2 busy cores, images built
from scratch, 2026-12-07), longest first."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hand the longest files to the xdist workers first (``--no-loadscope-reorder`` keeps this
    order), so that no long file starts last while the other workers run out of work."""
    rank = {name: position for position, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    """Models fitted in the test process use one OpenMP thread: on a busy 2-core machine a fit
    with two busy-waiting threads takes 10 to 30 times longer. Stages set their own limit."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture
def project_repo(tmp_path: Path) -> Path:
    return make_project_repo(tmp_path / "project")


def make_project_folder(folder: Path, data: Path = PROJECT / "data" / "gmsc-synthetic.csv") -> Path:
    """A folder with the project's params and a copy of ``data`` (the synthetic data unless
    told), no store, no git."""
    raw = folder / "data" / "raw.csv"
    raw.parent.mkdir(parents=True)
    shutil.copy(data, raw)
    params = (PROJECT / "params.yaml").read_text(encoding="utf-8")
    (folder / "params.yaml").write_text(params.replace("data/gmsc-synthetic.csv", "data/raw.csv"))
    return folder


def make_served_project(
    folder: Path, data: Path = PROJECT / "data" / "gmsc-synthetic.csv", **environment: str
) -> tuple[Path, dict]:
    """A project folder with a Production model trained on ``data`` in its own MLflow store
    (``mlflow.db`` unless ``MLFLOW_TRACKING_URI`` is given) imported into its own BentoML home;
    and the environment using them."""
    make_project_folder(folder, data)
    defaults = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "BENTOML_HOME": str(folder / "bentoml"),
        "CREDIT_RISK_PREDICTION_LOG": str(folder / "predictions"),
        "CREDIT_RISK_SHIP_INTERVAL": "1",
        "BENTOML_DO_NOT_TRACK": "true",
    }
    env = pipeline_env(**(defaults | environment))
    run([sys.executable, "-c", PIPELINE], folder, env)
    run([CREDIT_RISK, "import"], folder, env)
    return folder, env


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A served project (see :func:`make_served_project`) shared by the session's tests."""
    return make_served_project(tmp_path_factory.mktemp("project"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float = 60, every: float = 0.2):
    """Call ``condition`` every ``every`` s until it returns something true (returned), or
    fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return result


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_mlflow_server(
    backend_store_uri: str, artifacts: Path, log: Path, port: int | None = None,
    options: tuple[str, ...] = (), **environment: str,
) -> tuple:  # fmt: skip
    """Start ``mlflow server`` on ``port`` (else a free loopback port) with more ``options``
    and ``environment``; returns (process, url)."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            backend_store_uri,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            *options,
        ],  # fmt: skip
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env=pipeline_env(**environment),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process)
    except Exception:
        process.kill()
        raise RuntimeError(f"mlflow server did not start:\n{log.read_text()}") from None
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real ``mlflow server`` process with a SQLite backend; yields its URL."""
    process, url = start_mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}",
        tmp_path / "server-artifacts",
        tmp_path / "mlflow.log",
    )
    yield url
    stop(process)


class Server:
    """`bentoml serve` of the service (or of a bento) in its own process group; one worker
    unless ``env`` sets ``CREDIT_RISK_WORKERS`` (the tests of several workers do)."""

    def __init__(
        self,
        env: dict,
        cwd: Path,
        target: str = SERVICE,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = cwd / f"serve-{self.port}.log"
        with self.output.open("w") as output:
            self.process = subprocess.Popen(
                [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(self.port)],
                env={"CREDIT_RISK_WORKERS": "1"} | env,
                cwd=cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited:\n{self.output.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop(signal.SIGKILL)
        pytest.fail(f"server not ready after 120 s:\n{self.output.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server and its workers (they run in sessions of their own); wait. A
        process that ends meanwhile (a shipping process its worker stopped) is skipped."""
        processes = [psutil.Process(self.process.pid)]
        processes += processes[0].children(recursive=True)
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)
        psutil.wait_procs(processes, timeout=30)


def abandon_predictions(port: int, count: int, body: bytes) -> None:
    """``count`` clients send ``POST /predict`` with ``body`` and leave without their answer;
    one more leaves half-way through its body."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        connections.append(connection)
    cut_short = socket.create_connection(("127.0.0.1", port))
    cut_short.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:8])
    connections.append(cut_short)
    for connection in connections:
        connection.close()


@contextlib.contextmanager
def hammering(url: str, body: dict, clients: int = 8, key: str | None = None
              ) -> Iterator[list[str]]:  # fmt: skip
    """``clients`` threads posting ``body`` to ``url``'s ``/predict`` (with API ``key`` if
    given) until the block ends (or the service goes away); yields the ids of the acknowledged
    predictions as they arrive."""
    acknowledged = []

    def take(status: int, answer: dict) -> bool:
        if status == 200:
            acknowledged.append(answer["prediction_id"])
        return status != 0  # a transport error: the service is gone, this client stops

    with posting(url, body, clients, take, key):
        yield acknowledged


@contextlib.contextmanager
def answers_under_load(url: str, body: dict, clients: int = 4, key: str | None = None
                       ) -> Iterator[list[tuple[int, dict]]]:  # fmt: skip
    """``clients`` threads posting ``body`` to ``/predict`` (with API ``key`` if given) until
    the block ends; yields every answer as (status, body) as it arrives, transport errors as
    status 0."""
    answers = []

    def take(status: int, answer: dict) -> bool:
        answers.append((status, answer))
        return True  # every client goes on until the block ends

    with posting(url, body, clients, take, key):
        yield answers


@contextlib.contextmanager
def posting(url: str, body: dict, clients: int, take, key: str | None = None) -> Iterator[None]:
    """``clients`` threads posting ``body`` to ``url``'s ``/predict`` (with API ``key`` if
    given) until the block ends, each answer passed to ``take(status, json)`` (status 0, with
    the error, for a transport error); a thread stops when ``take`` returns false."""
    done = threading.Event()
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def post():
        with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
            while not done.is_set():
                try:
                    answer = client.post("/predict", json=body)
                except httpx.HTTPError as error:
                    status, json = 0, {"error": repr(error)}
                else:
                    is_json = answer.headers.get("content-type") == "application/json"
                    status, json = answer.status_code, answer.json() if is_json else {}
                if not take(status, json):
                    return

    threads = [threading.Thread(target=post) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join()
