"""Rollout without downtime, with a real ``mlflow server``, real ``credit-risk promote`` and a
real ``bentoml serve``: the service follows the registry's Production alias under load, refuses
tampered versions while the last verified one keeps serving, and starts (or refuses to) as a
supervisor expects."""

import contextlib
import http.server
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import skops.io
import yaml
from conftest import (
    CREDIT_RISK,
    SERVICE,
    Server,
    abandon_predictions,
    answers_under_load,
    free_port,
    make_served_project,
    run,
    start_mlflow_server,
    stop,
    wait_for,
)
from mlflow import MlflowClient
from sklearn.preprocessing import FunctionTransformer

from credit_risk.ml.contract import EXAMPLE_APPLICANT
from credit_risk.ml.fingerprints import file_sha256
from credit_risk.registry.model_artifact import download_artifact
from credit_risk.serving.prediction_log import log_files, read_records

pytestmark = pytest.mark.slow
MODEL = "credit-risk-model"
RELEASE_TAGS = ("serve_threshold", "score_scale", "model_sha256")
TWO_WORKERS = {"CREDIT_RISK_WORKERS": "2"}  # each follows the registry on its own


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[tuple[Path, dict, str]]:
    """A real ``mlflow server`` holding a trained Production version 1 (imported into the
    project's BentoML home) and version 2: the same model file with a stricter threshold."""
    base = tmp_path_factory.mktemp("rollout")
    process, url = start_mlflow_server(
        f"sqlite:///{base / 'server.db'}", base / "artifacts", base / "mlflow.log"
    )
    try:
        folder, env = make_served_project(base / "project", MLFLOW_TRACKING_URI=url)
        env |= {"CREDIT_RISK_REGISTRY_CHECK_INTERVAL": "1", "CREDIT_RISK_APPROVER": "rollout-test"}
        second = registered_copy(url, base, "copy")
        MlflowClient(url).set_model_version_tag(MODEL, second, "serve_threshold", "0.001")
        yield folder, env, url
    finally:
        stop(process)


def promote(version: str, folder: Path, env: dict) -> None:
    reason = f"rollout test: version {version}"
    run([CREDIT_RISK, "promote", version, "--reason", reason, "--override-gate"], folder, env)


def answering(answers: list, version: str) -> bool:
    return bool(answers) and answers[-1][1].get("model_version") == version


def test_promotion_and_rollback_under_load_fail_no_request(registry, tmp_path):
    """Promote 2, roll back to 1, under load: every request answered 200, the answers (and
    their log records) switch version, version 2's threshold decides its answers, its records
    ship to ``serving-v2``; a restart after a promotion serves it without `credit-risk import`."""
    folder, env, url = registry
    env = env | {"CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions")}
    server = Server(env | TWO_WORKERS, folder)
    try:
        with answers_under_load(server.url, EXAMPLE_APPLICANT) as answers:
            wait_for(lambda: len(answers) > 50)
            promote("2", folder, env)
            wait_for(lambda: answering(answers, "2"), timeout=30)
            wait_for(lambda: len(answers) > 50 + len(answers) // 2)
            promote("1", folder, env)
            wait_for(lambda: answering(answers, "1"), timeout=30)
        failed = [answer for answer in answers if answer[0] != 200]
        assert not failed, failed[:5]
        # Each worker (its own log file, in the order it scored) switched at most once per
        # promotion: the workers follow the registry each on its own, a second or so apart,
        # and the load may end before the last one has answered with version 1 again.
        for log_file in log_files(tmp_path / "predictions"):
            versions = [json.loads(line)["model_version"] for line in log_file.open()]
            switches = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
            assert "".join(switches) in "121", (log_file.name, switches)
        by_version = {v: {body["prediction"] for _, body in answers if body["model_version"] == v}
                      for v in ("1", "2")}  # fmt: skip
        probability = answers[0][1]["probability"]
        assert by_version["2"] == {int(probability >= 0.001)} != by_version["1"]
        logged = {
            r["prediction_id"]: r["model_version"] for r in read_records(tmp_path / "predictions")
        }
        assert all(logged[body["prediction_id"]] == body["model_version"] for _, body in answers)
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "ok" and health["registry"]["production_version"] == "1"

        client = MlflowClient(url)
        shipped = wait_for(lambda: client.search_runs(
            [client.get_experiment_by_name("credit-risk-prediction").experiment_id],
            "tags.serving_model_version = '2'"))  # fmt: skip
        assert shipped[0].info.run_name == "serving-v2"
        assert shipped[0].data.tags["model_run_id"] == client.get_model_version(MODEL, "2").run_id
    finally:
        server.stop()

    promote("2", folder, env)
    try:
        restarted = Server(env, folder)
        try:
            info = httpx.get(f"{restarted.url}/model/info").json()
            assert info["loaded_from"].startswith("MLflow registry")
            assert info["model_version"] == "2"
            assert "version 2 (Production) from" in restarted.output.read_text()
        finally:
            restarted.stop()
        # The drift report measures what is served now, against version 2's own reference.
        output = tmp_path / "drift"
        command = [CREDIT_RISK, "drift", str(tmp_path / "predictions"), "--output", str(output)]
        assert run(command, folder, env, check=False).returncode in (0, 3)
        report = json.loads((output / "drift.json").read_text())
        assert report["model"]["version"] == "2"
        second_run = MlflowClient(url).get_model_version(MODEL, "2").run_id
        assert report["model"]["reference_from"] == f"training run {second_run}"
    finally:
        promote("1", folder, env)


def registered_copy(url: str, tmp_path: Path, kind: str) -> str:
    """A new registry version, from a run of its own, of version 1's artifact: as it is
    (``copy``), or as an attacker with registry write access would make it: the model file
    replaced (``pickle``, ``foreign`` types), or the SHA256 tag wrong (``sha256``). Its tags
    otherwise those of version 1, the SHA256 one matching the file."""
    client = MlflowClient(url)
    first = client.get_model_version(MODEL, "1")
    artifact = download_artifact("1", url, tmp_path / kind)
    model_file = artifact / "model.skops"
    if kind == "pickle":
        model_file.write_bytes(pickle.dumps({"not": "a model"}))
    elif kind == "foreign":
        model_file.write_bytes(skops.io.dumps(FunctionTransformer(print)))
    run_id = client.create_run(
        client.get_experiment_by_name("credit-risk-prediction").experiment_id
    ).info.run_id
    client.log_artifacts(run_id, str(artifact), "model")
    profile = client.download_artifacts(first.run_id, "reference_profile.json", str(tmp_path))
    client.log_artifact(run_id, profile)
    client.set_terminated(run_id)
    version = client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id)
    for tag in RELEASE_TAGS:
        client.set_model_version_tag(MODEL, version.version, tag, first.tags[tag])
    sha256 = "0" * 64 if kind == "sha256" else file_sha256(model_file)
    client.set_model_version_tag(MODEL, version.version, "model_sha256", sha256)
    return version.version


TAMPERED = {"sha256": "was registered", "pickle": "does not load", "foreign": "builtins.print"}
"""Each way of tampering with a version, and what the refusal says."""


def refused(server: Server, version: str) -> dict | None:
    health = httpx.get(f"{server.url}/health").json()
    refusal = health["registry"]["last_refusal"]
    return health if refusal and refusal["version"] == version else None


def test_tampered_production_versions_are_refused_while_the_last_verified_one_serves(
    registry, tmp_path
):
    """A wrong SHA256 tag, a pickle, a skops file with foreign types: each promoted in turn
    under load, each refused (one log line naming the check, ``degraded``) while version 1
    answers every request; promoting version 1 again clears the degradation."""
    folder, env, url = registry
    env = env | {"CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions")}
    bad = {kind: registered_copy(url, tmp_path, kind) for kind in TAMPERED}
    server = Server(env | TWO_WORKERS, folder)
    try:
        with answers_under_load(server.url, EXAMPLE_APPLICANT, clients=2) as answers:
            for kind, named in TAMPERED.items():
                promote(bad[kind], folder, env)
                health = wait_for(lambda: refused(server, bad[kind]))  # noqa: B023
                assert health["status"] == "degraded" and health["model_version"] == "1"
                error = health["registry"]["error"]
                assert named in error and f"version {bad[kind]} failed verification" in error
            promote("1", folder, env)
            wait_for(lambda: httpx.get(f"{server.url}/health").json()["status"] == "ok")
        assert answers and {(status, body["model_version"]) for status, body in answers} == {
            (200, "1")
        }
        # One line per worker that saw the version (a worker may see Production only after
        # the next promotion), each naming its check.
        lines = [line for line in server.output.read_text().splitlines() if "refused" in line]
        for kind, named in TAMPERED.items():
            about = [line for line in lines if f"version {bad[kind]} (Production) refused" in line]
            assert 1 <= len(about) <= 2 and all(named in line for line in about), lines
        assert len(lines) <= 2 * len(TAMPERED), lines
    finally:
        server.stop()


def post(server: Server) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", json=EXAMPLE_APPLICANT)


def test_strict_mode_stops_answering_on_a_refused_version_and_refuses_to_start(registry, tmp_path):
    folder, env, url = registry
    env = env | {"CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions"),
                 "CREDIT_RISK_REQUIRE_REGISTRY": "1"}  # fmt: skip
    bad = registered_copy(url, tmp_path, "sha256")
    server = Server(env | TWO_WORKERS, folder)
    try:
        promote(bad, folder, env)
        wait_for(lambda: httpx.get(f"{server.url}/health").status_code == 503)
        # every worker: a few answers in a row (each a new connection, any worker) are 503
        wait_for(lambda: all(post(server).status_code == 503 for _ in range(6)))
        refused = post(server)
        assert refused.status_code == 503 and f"version {bad} failed verification" in refused.text
        started = run(
            ["bentoml", "serve", SERVICE, "--port", str(free_port())], folder, env, check=False
        )
        lines = [line for line in started.stderr.splitlines() if "refusing to start" in line]
        assert started.returncode == 1 and len(lines) == 1 and f"version {bad} refused" in lines[0]
    finally:
        server.stop()
        promote("1", folder, env)


@pytest.fixture
def offline_project(registry, tmp_path) -> tuple[Path, dict]:
    """The project with a copy of its BentoML home and a registry that does not answer."""
    folder, env, _ = registry
    shutil.copytree(env["BENTOML_HOME"], tmp_path / "bentoml")
    dead = f"http://127.0.0.1:{free_port()}"
    return folder, env | {"BENTOML_HOME": str(tmp_path / "bentoml"), "MLFLOW_TRACKING_URI": dead,
                          "CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions")}  # fmt: skip


@pytest.mark.parametrize("kind", ["pickle", "foreign"])
def test_a_bad_model_file_in_the_bentoml_store_means_exit_1_and_one_line(offline_project, kind):
    """The imported file replaced, and ``model_sha256`` in ``model.yaml`` edited to match:
    `bentoml serve` refuses before any worker starts, registry or not."""
    folder, env = offline_project
    (model_dir,) = (Path(env["BENTOML_HOME"]) / "models" / MODEL).glob("*/")
    model_file = model_dir / "model.skops"
    if kind == "pickle":
        model_file.write_bytes(pickle.dumps({"not": "a model"}))
    else:
        model_file.write_bytes(skops.io.dumps(FunctionTransformer(print)))
    info = yaml.safe_load((model_dir / "model.yaml").read_text())
    info["metadata"]["served_model"]["model_sha256"] = file_sha256(model_file)
    (model_dir / "model.yaml").write_text(yaml.safe_dump(info))

    started = run(["bentoml", "serve", SERVICE, "--port", str(free_port())], folder, env,
                  check=False, timeout=120)  # fmt: skip
    refusals = [line for line in started.stderr.splitlines() if "refusing to start" in line]
    assert started.returncode == 1, started.stderr[-2000:]
    assert len(refusals) == 1 and "does not load" in refusals[0] and "model.skops" in refusals[0]
    assert "Traceback" not in started.stderr and "worker" not in started.stderr.lower()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_stopping_bentoml_serve_leaves_no_process_behind(offline_project, sig):
    """A signal to `bentoml serve`'s process group (with SIGKILL only the arbiter dies: the
    workers run in sessions of their own) leaves no worker or shipping process; the port is
    free again. Clients that left without their answers hold nothing up (a request that ended
    without a response once kept its worker alive for BentoML's 60-s request timeout)."""
    folder, env = offline_project
    server = Server(env | TWO_WORKERS, folder)
    arbiter = psutil.Process(server.process.pid)

    def commands() -> list[str]:  # /readyz answers once one worker is ready
        return [" ".join(p.cmdline()) for p in arbiter.children(recursive=True)]

    wait_for(lambda: sum("shipping_process" in command for command in commands()) == 1)
    assert sum("_bentoml_impl.worker.service" in command for command in commands()) == 2
    abandon_predictions(server.port, 200, json.dumps(EXAMPLE_APPLICANT).encode())
    time.sleep(1)
    processes = [arbiter, *arbiter.children(recursive=True)]
    os.killpg(server.process.pid, sig)
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    with socket.socket() as sock:  # as servers bind: only a listening socket is in the way
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))


@contextlib.contextmanager
def registry_that_hangs() -> Iterator[str]:
    """An HTTP server whose ``/health`` answers and whose every other call never does: a
    registry that holds `bentoml serve`'s start check; yields its URI."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/health":
                time.sleep(120)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_killing_bentoml_serve_during_its_start_check_ends_the_check(offline_project):
    """`kill -9` of `bentoml serve` while its start check (a child process) waits on the
    registry: the check ends within seconds, not when the registry's timeouts run out."""
    folder, env = offline_project
    with registry_that_hangs() as uri:
        env = env | {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
        command = ["bentoml", "serve", SERVICE, "--port", str(free_port())]
        with open(folder / "serve.log", "w") as output:
            serve = subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=output)
        try:
            (check,) = wait_for(lambda: psutil.Process(serve.pid).children())
            time.sleep(5)  # the check has loaded the model and waits on the registry
            assert check.is_running() and not check.children()  # no worker started
            serve.kill()
            serve.wait()
            _, alive = psutil.wait_procs([check], timeout=15)
            assert not alive, (folder / "serve.log").read_text()
        finally:
            serve.kill()
            serve.wait()
