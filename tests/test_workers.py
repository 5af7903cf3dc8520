"""The service on every core, and BentoML's own clients, against a real `bentoml serve`.

The module's server runs two workers (``CREDIT_RISK_WORKERS=2``, what the default gives on a
2-core machine) with API keys and shipping to a real MLflow store: one shipping process for the
log directory, one log file per worker, one answer whichever worker is asked.
"""

import asyncio
import contextlib
import signal
from collections import Counter

import bentoml
import httpx
import psutil
import pytest
from bentoml.exceptions import BentoMLException
from conftest import Server, answers_under_load, hammering, wait_for
from test_api_keys import added_key
from test_service import serve_refused

from credit_risk.ml.contract import EXAMPLE_APPLICANT as SAMPLE
from credit_risk.serving.prediction_log import log_files, read_records
from credit_risk.serving.service import workers_setting

pytestmark = pytest.mark.slow  # real `bentoml serve` with two workers
SHIPPING_PROCESS = "credit_risk.serving.shipping_process"


@pytest.fixture(scope="module")
def served(project, tmp_path_factory):
    """A two-worker `bentoml serve` with the key ``bentoml-client``; yields (server, key, log
    directory)."""
    folder, env = project
    directory = tmp_path_factory.mktemp("workers")
    keys_file, log = directory / "api-keys", directory / "predictions"
    key = added_key(keys_file, "bentoml-client")
    environment = {
        "CREDIT_RISK_WORKERS": "2",
        "CREDIT_RISK_API_KEYS_FILE": str(keys_file),
        "CREDIT_RISK_PREDICTION_LOG": str(log),
    }
    server = Server(env | environment, folder)
    yield server, key, log
    server.stop()


def service_processes(server: Server) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The workers and the shipping processes of a server."""
    commands = {}
    for process in psutil.Process(server.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # gone, or a zombie not yet reaped
            commands[process] = " ".join(process.cmdline())
    shipping = [p for p, command in commands.items() if SHIPPING_PROCESS in command]
    workers = [p for p, command in commands.items() if "_bentoml_impl.worker.service" in command]
    return workers, shipping


def health(server: Server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=10).json()


def test_the_default_is_a_worker_per_core_and_a_bad_setting_is_named(monkeypatch):
    monkeypatch.delenv("CREDIT_RISK_WORKERS", raising=False)
    assert workers_setting() == ("cpu_count", None)
    monkeypatch.setenv("CREDIT_RISK_WORKERS", "3")
    assert workers_setting() == (3, None)
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("CREDIT_RISK_WORKERS", bad)
        assert workers_setting()[1] == (
            f"CREDIT_RISK_WORKERS must be a whole number of workers from 1, got {bad!r}"
        )


def test_serve_refuses_a_bad_number_of_workers(project, tmp_path):
    folder, env = project
    refusal = serve_refused(env | {"CREDIT_RISK_WORKERS": "many"}, folder)
    assert "refusing to start: CREDIT_RISK_WORKERS must be a whole number" in refusal


def test_two_workers_one_shipping_process_one_log_file_each(served):
    server, key, log = served
    # /readyz answers once a worker is ready; the first worker starts the shipping process.
    workers, shipping = wait_for(lambda: (found := service_processes(server))[1] and found)
    assert len(workers) == 2 and len(shipping) == 1, [p.cmdline() for p in workers + shipping]
    assert shipping[0].parent().pid in {worker.pid for worker in workers}
    headers = {"Authorization": f"Bearer {key}"}
    with hammering(server.url, SAMPLE, clients=8, key=key) as acknowledged:
        for _ in range(40):  # a connection each: both workers take some
            answer = httpx.post(f"{server.url}/predict", json=SAMPLE, headers=headers)
            acknowledged.append(answer.json()["prediction_id"])
        wait_for(lambda: len(acknowledged) >= 400)
    writers = Counter(record["prediction_id"] in acknowledged for record in read_records(log))
    assert writers[True] == len(set(acknowledged))  # every answered prediction logged once
    assert len(log_files(log)) == 2  # one file per worker: both answered

    # Every worker reports the directory's one shipper, which ships everything once.
    def shipped_everything() -> bool:
        reports = [health(server)["prediction_log"]["mlflow"] for _ in range(8)]
        done = all(r["pending_bytes"] == 0 and r["ok"] for r in reports)
        return done and {r["shipped_records"] for r in reports} == {len(read_records(log))}

    wait_for(shipped_everything)
    reports = [health(server)["prediction_log"]["mlflow"] for _ in range(8)]
    assert {(r["role"], r["alive"], r["run_id"]) for r in reports} == {
        ("shipping", True, reports[0]["run_id"])
    }


def mapped_libraries(process: psutil.Process) -> set[str]:
    """The packages of the site-packages files a process has mapped (its extension modules)."""
    return {
        mapping.path.split("site-packages/")[1].split("/")[0]
        for mapping in process.memory_maps()
        if "site-packages/" in mapping.path
    }


def test_bentoml_serves_own_process_loads_no_model_stack(served):
    """The start check ran in a child: ``bentoml serve`` itself holds neither scikit-learn nor
    MLflow's pandas; the workers, which score, do."""
    server, _, _ = served
    workers, _ = wait_for(lambda: (found := service_processes(server))[1] and found)
    heavy = {"sklearn", "scipy", "pandas"}
    assert heavy <= mapped_libraries(workers[0])
    assert not heavy & mapped_libraries(psutil.Process(server.process.pid))


def test_bentoml_clients_find_and_call_the_api_methods(served):
    """`SyncHTTPClient`/`AsyncHTTPClient` with the key as token: the same answer, the same
    log record (with the key's name) as plain HTTP; without the token, 401."""
    server, key, log = served
    with bentoml.SyncHTTPClient(server.url, token=key) as client:
        assert set(client.endpoints) == {"predict", "predict_batch"}
        answer = client.predict(**SAMPLE)
        (batch,) = client.predict_batch(applicants=[SAMPLE])["predictions"]
    plain = httpx.post(
        f"{server.url}/predict", json=SAMPLE, headers={"Authorization": f"Bearer {key}"}
    ).json()
    for prediction in (answer, batch):
        assert set(prediction) == set(plain)
        for field in ("probability", "prediction", "score", "reasons", "model_version"):
            assert prediction[field] == plain[field], field

    async def asynchronous():
        async with bentoml.AsyncHTTPClient(server.url, token=key) as client:
            return await client.predict(**SAMPLE)

    assert asyncio.run(asynchronous())["probability"] == plain["probability"]
    records = {r["prediction_id"]: r for r in read_records(log)}
    for prediction in (answer, batch):
        record = records[prediction["prediction_id"]]
        assert record["api_key"] == "bentoml-client" and record["inputs"] == SAMPLE
    assert key not in "".join(str(r) for r in records.values())

    with bentoml.SyncHTTPClient(server.url) as anonymous, pytest.raises(BentoMLException) as error:
        anonymous.predict(**SAMPLE)
    assert error.value.error_code == 401


def test_a_killed_worker_is_replaced_and_shipping_goes_on(served):
    """SIGKILL of the worker that runs the shipping process, under load: BentoML starts the
    worker again, which starts a new shipping process; every answer is 200 or a transport
    error of the killed worker's connections, and every acknowledged prediction ships."""
    server, key, log = served
    (old,) = wait_for(lambda: service_processes(server)[1])
    worker = old.parent()
    with answers_under_load(server.url, SAMPLE, clients=4, key=key) as answers:
        wait_for(lambda: len(answers) > 50)
        worker.send_signal(signal.SIGKILL)
        wait_for(lambda: not old.is_running() or old.status() == psutil.STATUS_ZOMBIE)
        workers, shipping = wait_for(
            lambda: (found := service_processes(server))[1] and len(found[0]) == 2 and found
        )
        served_after = len(answers)
        wait_for(lambda: len(answers) > served_after + 50)
    assert len(shipping) == 1 and shipping[0].pid != old.pid
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {200, 0}, statuses  # 0: a connection of the killed worker
    records = len(read_records(log))

    def shipped() -> bool:  # records count as shipped once their run's totals are logged
        report = health(server)["prediction_log"]["mlflow"]
        return report["pending_bytes"] == 0 and report["shipped_records"] == records

    wait_for(shipped)
    reports = [health(server)["prediction_log"]["mlflow"] for _ in range(6)]  # both workers'
    assert all(r["alive"] and r["ok"] for r in reports), reports
    assert {r["shipped_records"] for r in reports} == {records}
