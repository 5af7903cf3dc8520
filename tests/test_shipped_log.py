"""Outcomes shipped to MLflow, and the shipped log read back (``--from-mlflow``), against a real
``mlflow server``: each prediction and each outcome once, whatever retries, re-shipments and
hosts; outcomes of predictions logged elsewhere; a tracking server that is down or mute.

Two services on two hosts, end to end, are in ``test_replicas.py``.
"""

import fcntl
import json
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import CREDIT_RISK, free_port, make_project_folder, pipeline_env, start_mlflow_server
from conftest import stop as stop_process
from mlflow import MlflowClient
from test_outcomes import outcomes_csv
from test_prediction_log import records

from credit_risk.ml.contract import TARGET
from credit_risk.ml.data import DataError
from credit_risk.monitoring import shipped_log
from credit_risk.monitoring.drift import DriftError, read_log
from credit_risk.monitoring.log_source import LogDirectory
from credit_risk.monitoring.log_tally import Tally
from credit_risk.monitoring.outcomes import take_in_outcomes
from credit_risk.monitoring.performance import PerformanceError
from credit_risk.monitoring.performance_report import performance_report
from credit_risk.monitoring.shipped_log import ShippedLog
from credit_risk.monitoring.training_data import write_training_data
from credit_risk.registry.names import EXPERIMENT_NAME, OUTCOMES_RUN
from credit_risk.serving.outcome_shipping import STATE_FILE, read_outcome_state, ship_outcomes
from credit_risk.serving.prediction_log import PredictionLog
from credit_risk.serving.shipping import Shipper
from credit_risk.serving.shipping_state import STATE_FILE as LOG_STATE_FILE
from credit_risk.serving.shipping_state import read_state

pytestmark = pytest.mark.slow


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A real ``mlflow server`` of the test's own (SQLite backend); the test runs in a folder
    without a store of its own."""
    folder = tmp_path / "tracking"
    process, url = start_mlflow_server(
        f"sqlite:///{folder / 'server.db'}", folder / "artifacts", tmp_path / "server.log"
    )
    monkeypatch.chdir(make_project_folder(tmp_path / "project"))
    yield url
    stop_process(process)


def outcomes_run(url: str):
    """The run ``outcomes`` (there is one) and the names of its chunks."""
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    (run,) = client.search_runs([experiment], f"attributes.run_name = '{OUTCOMES_RUN}'")
    names = sorted(Path(a.path).name for a in client.list_artifacts(run.info.run_id, "outcomes"))
    return run, names


def test_outcomes_are_shipped_once_even_when_a_shipment_is_retried(tmp_path, tracking):
    directory = tmp_path / "log"
    logged = records(12, version="3")
    PredictionLog(directory).append(logged)
    ids = [record["prediction_id"] for record in logged]
    take_in_outcomes(outcomes_csv(tmp_path / "a.csv", [(i, 1, "2027-05-01") for i in ids[:4]]),
                     directory)  # fmt: skip
    assert ship_outcomes(directory, tracking) == 4
    assert ship_outcomes(directory, tracking) == 0  # nothing new: no new chunk
    run, names = outcomes_run(tracking)
    source = read_outcome_state(directory)["source"]
    assert names == [f"outcomes-{source}-000000000000-{names[0].split('-')[3]}-4r-4p.jsonl"]
    # The offset of that shipment was lost (as if saving it had failed); more outcomes arrive.
    state = read_outcome_state(directory)
    (directory / STATE_FILE).write_text(json.dumps(state | {"offset": 0}))
    take_in_outcomes(outcomes_csv(tmp_path / "b.csv", [(i, 0, "2027-06-01") for i in ids[4:10]]),
                     directory)  # fmt: skip
    assert ship_outcomes(directory, tracking) == 10  # again from the start, longer
    run, names = outcomes_run(tracking)
    assert len(names) == 2
    metrics = MlflowClient(tracking).get_run(run.info.run_id).data.metrics
    assert (metrics["outcomes_total"], metrics["defaults_total"]) == (10, 4)
    shipped = ShippedLog(tracking).outcomes()
    assert {i: o.defaulted for i, o in shipped.items()} == {i: int(n < 4) for n, i in
                                                           enumerate(ids[:10])}  # fmt: skip
    assert shipped[ids[0]].observed_at == "2027-05-01"


def test_the_shipper_ships_outcomes_stored_while_mlflow_was_down(tmp_path, tracking):
    directory = tmp_path / "log"
    logged = records(5, version="4")
    PredictionLog(directory).append(logged)
    rows = [(record["prediction_id"], 0, "2027-05-01") for record in logged]
    down = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [CREDIT_RISK, "outcomes", str(outcomes_csv(tmp_path / "o.csv", rows)), str(directory)],
        env=pipeline_env(MLFLOW_TRACKING_URI=down), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"outcomes: 5 rows read from {tmp_path / 'o.csv'}: 5 new, 0 already known; 5 outcomes "
        f"in {directory / 'outcomes.jsonl'}; not shipped yet (MLflow tracking server {down} is "
        "unreachable: Connection refused): a service's shipper or the next run ships them\n"
    )
    assert read_outcome_state(directory)["offset"] == 0
    Shipper(directory, tracking).ship_once()  # a round of the service's shipper
    assert read_outcome_state(directory)["offset"] == (directory / "outcomes.jsonl").stat().st_size
    assert set(ShippedLog(tracking).outcomes()) == {row[0] for row in rows}
    # While outcomes are being taken in (the file locked), the shipper leaves them alone.
    with (directory / "outcomes.jsonl").open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert ship_outcomes(directory, tracking, wait=False) is None


def shipped_ids(log) -> list[str]:
    return [record["prediction_id"] for record in log.records()]


def test_the_shipped_log_holds_each_prediction_once(tmp_path, tracking, monkeypatch):
    """Two hosts, two versions, a retried shipment and a log folder whose ``shipped.json`` was
    lost (shipped again in chunks cut elsewhere): every prediction is read once."""
    first, second = tmp_path / "host-a", tmp_path / "host-b"
    logs = {first: PredictionLog(first), second: PredictionLog(second)}
    logs[first].append(records(7, version="5"))
    logs[second].append(records(4, version="5", start=100) + records(3, version="6", start=200))
    for directory in logs:
        Shipper(directory, tracking).ship_once()
    # Host a: a shipment retried longer (its progress could not be saved).
    (first / LOG_STATE_FILE).write_text(json.dumps(before_last_shipment_of(first)))
    logs[first].append(records(5, version="5", start=7))
    Shipper(first, tracking).ship_once()
    # Host b: shipped.json lost after more records; everything shipped again from the start.
    logs[second].append(records(6, version="6", start=300))
    Shipper(second, tracking).ship_once()
    (second / LOG_STATE_FILE).unlink()
    logs[second].append(records(2, version="5", start=400))
    Shipper(second, tracking).ship_once()

    expected = shipped_ids(LogDirectory(first)) + shipped_ids(LogDirectory(second))
    assert len(expected) == len(set(expected)) == 7 + 5 + 4 + 3 + 6 + 2
    log = ShippedLog(tracking)
    assert sorted(shipped_ids(log)) == sorted(expected)
    monkeypatch.setattr(shipped_log, "BATCH_BYTES", 1)  # a batch per log file
    batches = [[path.name for path in batch] for batch in log.batches()]
    assert batches == [[name] for name in sorted(log.path.name for log in logs.values())]


def before_last_shipment_of(directory: Path) -> dict:
    """The state of ``directory`` as it was before its last shipment (as if saving had failed)."""
    state = read_state(directory)
    return state | {"offsets": dict.fromkeys(state["offsets"], 0), "shipped": 0}


def test_a_host_takes_in_outcomes_of_predictions_another_host_logged(tmp_path, tracking):
    here, there = tmp_path / "here", tmp_path / "there"
    PredictionLog(here).append(records(3, version="7"))
    logged_there = records(4, version="7", start=50)
    PredictionLog(there).append(logged_there)
    Shipper(there, tracking).ship_once()
    rows = [(record["prediction_id"], 1, "2027-05-01") for record in logged_there]
    csv = outcomes_csv(tmp_path / "there.csv", rows)
    with pytest.raises(
        DataError,
        match=r"line 2: .* is not in the prediction log .*here \(logged "
        r"by another host\? --from-mlflow looks in the log every host shipped\)",
    ):
        take_in_outcomes(csv, here)  # fmt: skip
    shipped = ShippedLog(tracking)
    assert take_in_outcomes(csv, here, shipped).startswith(
        f"outcomes: 4 rows read from {csv}: 4 new, 0 already known"
    )
    ship_outcomes(here, tracking)
    # Known from the shipped outcomes, wherever they were taken in; a contradiction is refused.
    again = take_in_outcomes(csv, tmp_path / "elsewhere", ShippedLog(tracking))
    assert ": 0 new, 4 already known; 0 outcomes in" in again
    contradiction = outcomes_csv(tmp_path / "no.csv", [(rows[2][0], 0, "2027-06-01")])
    with pytest.raises(DataError, match=f"{TARGET} 0 contradicts the stored outcome 1"):
        take_in_outcomes(contradiction, tmp_path / "elsewhere", ShippedLog(tracking))
    unknown = outcomes_csv(tmp_path / "unknown.csv", [("f" * 32, 0, "2027-06-01")])
    with pytest.raises(DataError, match=r"is not in the log shipped to MLflow at http"):
        take_in_outcomes(unknown, tmp_path / "elsewhere", ShippedLog(tracking))


COMMANDS = [
    ["drift", "--from-mlflow"],
    ["compare", "--from-mlflow"],
    ["performance", "--from-mlflow"],
    ["training-data", "--from-mlflow", "--output", "out.csv"],
    ["outcomes", "o.csv", "--from-mlflow"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
def test_a_tracking_server_down_or_mute_is_one_line(tmp_path, command):
    folder = make_project_folder(tmp_path / "project")
    outcomes_csv(folder / "o.csv", [("a" * 32, 1, "2027-05-01")])
    down = f"http://127.0.0.1:{free_port()}"
    with socket.socket() as mute:  # accepts connections, never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        for uri, reason in (
            (down, "Connection refused"),
            (f"http://127.0.0.1:{mute.getsockname()[1]}", "no answer within 5 s"),
        ):
            result = subprocess.run(
                [CREDIT_RISK, *command], cwd=folder, env=pipeline_env(MLFLOW_TRACKING_URI=uri),
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 1
            assert result.stderr == (
                f"{command[0]}: error: MLflow tracking server {uri} is unreachable: {reason}\n"
            )
            assert not (folder / "out.csv").exists() and not (folder / "monitoring").exists()


def test_a_store_without_shipped_predictions_or_outcomes_says_so(tmp_path, tracking):
    log = ShippedLog(tracking)
    with pytest.raises(DriftError, match=f"^no shipped predictions in MLflow at {tracking} "):
        read_log(log, Tally, {}, "1", None, None)
    with pytest.raises(DataError, match=r"no outcomes shipped yet \(credit-risk outcomes"):
        write_training_data(log, tmp_path / "out.csv")
    directory = tmp_path / "log"
    PredictionLog(directory).append(records(3, version="9"))
    Shipper(directory, tracking).ship_once()
    with pytest.raises(PerformanceError, match=f"^the log shipped to MLflow at {tracking}: no "):
        performance_report(ShippedLog(tracking), None, None, tmp_path / "report")
    assert not (tmp_path / "out.csv").exists()
