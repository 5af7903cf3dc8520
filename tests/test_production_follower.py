"""Serving through registry outages and a registry without Production, with a real
``mlflow server`` that is stopped and started again, and a real ``bentoml serve``."""

import httpx
import pytest
from conftest import (
    SERVICE,
    Server,
    make_served_project,
    run,
    start_mlflow_server,
    stop,
    wait_for,
)
from mlflow import MlflowClient

from credit_risk.ml.contract import EXAMPLE_APPLICANT

pytestmark = pytest.mark.slow
MODEL = "credit-risk-model"


def test_a_registry_outage_degrades_a_restart_instead_of_stopping_it(tmp_path):
    """MLflow down at start: the imported model is served unverified (``degraded``), and
    verified once MLflow is back; with no Production version at all the service stops
    answering predictions until there is one; when MLflow goes away again, the model is no
    longer ``production_verified``; strict mode refuses to start without the
    registry. (Production moving to another version: tests/test_rollout.py.)"""
    database, artifacts = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts"
    process, url = start_mlflow_server(database, artifacts, tmp_path / "server.log")
    port = int(url.rsplit(":", 1)[1])
    folder, env = make_served_project(tmp_path / "project", MLFLOW_TRACKING_URI=url)
    env |= {"CREDIT_RISK_REGISTRY_CHECK_INTERVAL": "1", "CREDIT_RISK_SHIP_INTERVAL": "1"}
    stop(process)

    strict = run(
        ["bentoml", "serve", SERVICE, "--port", "0"],
        folder,
        env | {"CREDIT_RISK_REQUIRE_REGISTRY": "1"},
        check=False,
    )
    refusals = [line for line in strict.stderr.splitlines() if "refusing to start" in line]
    assert strict.returncode == 1 and len(refusals) == 1 and "unreachable" in refusals[0]

    server = Server(env, folder)
    try:
        assert "serving the imported model unverified" in server.output.read_text()
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "degraded" and health["production_verified"] is False
        assert "registry not reachable" in health["registry"]["error"]
        answer = httpx.post(f"{server.url}/predict", json=EXAMPLE_APPLICANT)
        assert answer.status_code == 200

        process, _ = start_mlflow_server(database, artifacts, tmp_path / "server.log", port)
        try:
            health = wait_for(lambda: ok_health(server))
            assert health["production_verified"] is True
            assert health["prediction_log"]["mlflow"]["shipped_records"] >= 1

            client = MlflowClient(url)
            client.delete_registered_model_alias(MODEL, "production")  # no Production at all
            wait_for(lambda: httpx.get(f"{server.url}/health").status_code == 503)
            refused = httpx.post(f"{server.url}/predict", json=EXAMPLE_APPLICANT)
            assert refused.status_code == 503 and "no Production version" in refused.json()["error"]
            health = httpx.get(f"{server.url}/health").json()
            assert health["status"] == "failing" and health["registry"]["serving"] is False
            client.set_registered_model_alias(MODEL, "production", "1")
            assert wait_for(lambda: ok_health(server))["production_verified"] is True
        finally:
            stop(process)
        # The registry gone after a verified start: no longer verified, and /health says so.
        health = wait_for(lambda: unverified_health(server))
        assert health["status"] == "degraded" and "not reachable" in health["registry"]["error"]
    finally:
        server.stop()


def ok_health(server: Server) -> dict | None:
    health = httpx.get(f"{server.url}/health").json()
    return health if health["status"] == "ok" else None


def unverified_health(server: Server) -> dict | None:
    health = httpx.get(f"{server.url}/health").json()
    return health if health["production_verified"] is False else None
