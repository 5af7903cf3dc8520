"""The prediction log and its shipping under real faults: a file-size limit, a full disk,
corrupt lines and state, several writers, model upgrades, another tracking store, retention.

The shipper runs in this process or, as in the service, in its shipping process, against a
real ``mlflow server``; the faults are real (an ``RLIMIT_FSIZE`` in a child process, a full
tmpfs mounted for the test, ``SIGKILL``).
"""

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import start_mlflow_server, stop, wait_for
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from credit_risk.ml.contract import EXAMPLE_APPLICANT
from credit_risk.serving.prediction_log import PredictionLog, log_files, read_records
from credit_risk.serving.shipping import Shipper
from credit_risk.serving.shipping_process import ShipperProcess
from credit_risk.serving.shipping_state import STATE_FILE, read_progress, read_state


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A real ``mlflow server`` (SQLite backend) for the module's shipping tests."""
    folder = tmp_path_factory.mktemp("tracking")
    process, url = start_mlflow_server(
        f"sqlite:///{folder / 'server.db'}", folder / "artifacts", folder / "server.log"
    )
    yield url
    stop(process)


def records(count: int, version: str = "1", start: int = 0) -> list[dict]:
    """``count`` prediction records as the service writes them."""
    return [
        {
            "prediction": i % 2,
            "probability": 0.25 + (i % 2) * 0.5,
            "model_version": version,
            "prediction_id": f"{version}-{i:08d}",
            "timestamp": "2026-11-26T00:00:00+00:00",
            "inputs": EXAMPLE_APPLICANT,
        }
        for i in range(start, start + count)
    ]


def shipped_totals(url: str, run_id: str) -> tuple[float, set[str]]:
    """The run's ``predictions_total`` metric and the ids in its artifacts."""
    client = MlflowClient(url)
    ids = set()
    for artifact in client.list_artifacts(run_id, "predictions"):
        local = Path(client.download_artifacts(run_id, artifact.path))
        ids |= {json.loads(line)["prediction_id"] for line in local.read_text().splitlines()}
    return client.get_run(run_id).data.metrics["predictions_total"], ids


def serving_runs(url: str) -> dict[str, list[str]]:
    """Run ids of the serving runs, per served model version."""
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("credit-risk-prediction")
    runs = client.search_runs([experiment.experiment_id], "tags.serving_model_version != ''")
    found: dict[str, list[str]] = {}
    for run in runs:
        found.setdefault(run.data.tags["serving_model_version"], []).append(run.info.run_id)
    return found


WRITE_UNDER_LIMIT = """
import json, resource, sys
from pathlib import Path
from credit_risk.serving.prediction_log import PredictionLog
from test_prediction_log import records
log = PredictionLog(Path(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
acknowledged, failures = [], 0
for group in range(40):
    batch = records(7, start=7 * group)
    try:
        log.append(batch)
    except OSError as error:
        failures += 1
        if failures == 3:  # the limit is lifted: appends go on in the same file
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        continue
    acknowledged += [record["prediction_id"] for record in batch]
print(json.dumps({"acknowledged": acknowledged, "failures": failures, "file": str(log.path)}))
"""


def test_a_write_cut_short_by_a_file_size_limit_leaves_no_partial_record(tmp_path):
    """EFBIG part-way through a group: the group is cut back off; later appends land after
    the last whole record, so every line is a record and exactly the acknowledged ones."""
    result = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_LIMIT, str(tmp_path / "log"), "20000"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    outcome = json.loads(result.stdout)
    assert outcome["failures"] == 3
    lines = Path(outcome["file"]).read_bytes().split(b"\n")
    assert lines[-1] == b""
    logged = [json.loads(line)["prediction_id"] for line in lines[:-1]]
    assert logged == outcome["acknowledged"] and len(logged) == 7 * 37


def test_files_are_private_and_rotate_by_size(tmp_path):
    log = PredictionLog(tmp_path / "log", max_bytes=2700)  # a group of 3 records: 1,299 bytes
    for group in range(6):
        log.append(records(3, start=3 * group))
    files = log_files(tmp_path / "log")
    assert [path.stat().st_size for path in files] == [2598] * 3
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}
    assert stat.S_IMODE((tmp_path / "log").stat().st_mode) == 0o700
    assert [record["prediction_id"] for record in read_records(tmp_path / "log")] == [
        record["prediction_id"] for record in records(18)
    ]


@pytest.mark.slow
def test_a_bad_line_is_quarantined_and_the_rest_shipped(tmp_path, tracking):
    directory = tmp_path / "log"
    directory.mkdir()
    good = [json.dumps(record).encode() + b"\n" for record in records(6)]
    (directory / "predictions-1.jsonl").write_bytes(
        b"".join(good[:2]) + b'{"prediction_id": "torn", "probab' + b"".join(good[2:4])
    )
    # A finished file whose last line was cut off (a crash mid-write): nobody will finish it.
    (directory / "predictions-2.jsonl").write_bytes(b"".join(good[4:]) + b'{"prediction": 1')
    shipper = Shipper(directory, tracking)
    shipper.ship_once()

    # The torn bytes and the record written after them form one line that is not a record.
    state = read_state(directory)
    assert state["shipped"] == 5 and state["quarantined"] == 2
    assert state["offsets"] == {
        path.name: path.stat().st_size for path in directory.glob("predictions-*.jsonl")
    }
    quarantined = b"".join(path.read_bytes() for path in (directory / "quarantine").iterdir())
    assert b"torn" in quarantined and b'{"prediction": 1' in quarantined
    total, ids = shipped_totals(tracking, shipper.status("1")["run_id"])
    expected = {record["prediction_id"] for record in records(6)} - {"1-00000002"}
    assert total == 5 and ids == expected


@pytest.mark.slow
def test_records_count_as_shipped_once_their_totals_are_logged(tmp_path):
    """The tracking store refuses metrics (a trigger in its database): the chunk is uploaded,
    but the records are not counted as shipped; the next round logs the totals, then counts."""
    database = tmp_path / "server.db"
    process, url = start_mlflow_server(
        f"sqlite:///{database}", tmp_path / "artifacts", tmp_path / "server.log"
    )
    directory = tmp_path / "log"
    try:
        PredictionLog(directory).append(records(3))
        with sqlite3.connect(database) as store:
            store.execute(
                "CREATE TRIGGER refuse_metrics BEFORE INSERT ON metrics "
                "BEGIN SELECT RAISE(ABORT, 'metrics refused'); END"
            )
        shipper = Shipper(directory, url)
        with pytest.raises(MlflowException):
            shipper.ship_once()
        status = shipper.status("1")
        assert status["pending_bytes"] == 0 and status["shipped_records"] == 0
        with sqlite3.connect(database) as store:
            store.execute("DROP TRIGGER refuse_metrics")
        shipper.ship_once()
        assert shipper.status("1")["shipped_records"] == 3
        assert shipped_totals(url, status["run_id"])[0] == 3
    finally:
        stop(process)


@pytest.fixture
def started() -> Iterator:
    """Starts shipping processes for a test, and stops them (and their children) after it."""
    shippers = []

    def start(shipper: ShipperProcess) -> ShipperProcess:
        shippers.append(shipper)
        shipper.start()
        return shipper

    yield start
    for shipper in shippers:
        child = shipper.child
        shipper.stop()
        assert child is None or child.poll() is not None


@pytest.mark.slow
def test_the_shipper_survives_a_corrupt_state_file_and_says_so(
    tmp_path, tracking, monkeypatch, started
):
    monkeypatch.setenv("CREDIT_RISK_SHIP_INTERVAL", "0.2")
    directory = tmp_path / "log"
    PredictionLog(directory).append(records(3))
    (directory / STATE_FILE).write_text("{not json")
    shipper = started(ShipperProcess(directory, tracking))
    wait_for(lambda: shipper.status("1")["last_attempt"] is not None)  # a round failed
    status = shipper.status("1")
    assert status["alive"] and "corrupt" in status["error"] and not status["ok"]
    assert "corrupt" in read_progress(directory)["error"]  # as the shipping process saved it
    (directory / STATE_FILE).unlink()  # the operator's fix
    wait_for(lambda: shipper.status("1")["shipped_records"] == 3)
    wait_for(lambda: shipper.status("1")["ok"])  # once the round that shipped them ended
    assert shipper.is_alive() and shipper.status("1")["shipped_records"] == 3


@pytest.mark.slow
def test_a_killed_shipping_process_is_started_again(tmp_path, tracking, monkeypatch, started):
    monkeypatch.setenv("CREDIT_RISK_SHIP_INTERVAL", "0.2")
    log = PredictionLog(tmp_path / "log")
    log.append(records(2, version="40"))
    shipper = started(ShipperProcess(log.directory, tracking))
    wait_for(lambda: shipper.status("40")["shipped_records"] == 2)
    wait_for(lambda: shipper.status("40")["role"] == "shipping")  # its report follows the state
    first = shipper.child
    first.kill()
    wait_for(lambda: "exited with status -9" in (shipper.status("40")["error"] or ""))
    log.append(records(3, version="40", start=2))
    wait_for(lambda: shipper.status("40")["shipped_records"] == 5, timeout=60)
    assert shipper.is_alive() and shipper.child.pid != first.pid
    run = MlflowClient(tracking).get_run(shipper.status("40")["run_id"])
    # the registry has no version 40: the run names the version, no training run
    assert run.data.tags["serving_model_version"] == "40" and "model_run_id" not in run.data.tags
    assert shipped_totals(tracking, run.info.run_id)[0] == 5


SUPERVISING_PARENT = """
import sys, time
from pathlib import Path
from credit_risk.serving.shipping_process import ShipperProcess
shipper = ShipperProcess(Path(sys.argv[1]), sys.argv[2])
shipper.start()
while not shipper.is_alive():
    time.sleep(0.05)
print(shipper.child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_the_shipping_process_ends_with_its_service(tmp_path, tracking):
    """SIGKILL of the process that started it: the shipping process exits too and lets go of
    the log directory's lock, so the restarted service's shipper can take it."""
    directory = tmp_path / "log"
    PredictionLog(directory).append(records(1))
    parent = subprocess.Popen(
        [sys.executable, "-c", SUPERVISING_PARENT, str(directory), tracking],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    wait_for(lambda: read_state(directory)["shipped"] == 1)
    parent.kill()
    parent.wait()
    wait_for(lambda: not _running(child), timeout=10)
    successor = Shipper(directory, tracking)
    wait_for(successor._take_lock, timeout=10)  # its last threads may still be exiting


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().split(") ")[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_two_log_directories_on_one_run_count_every_record_once(tmp_path, tracking):
    """Replicas (or a restart with a new log folder) ship to one serving run; the totals
    in MLflow are the records shipped, whichever ships last."""
    first, second = PredictionLog(tmp_path / "a"), PredictionLog(tmp_path / "b")
    shippers = [Shipper(tmp_path / "a", tracking), Shipper(tmp_path / "b", tracking)]
    for round_number in range(3):
        first.append(records(5, version="7", start=100 * round_number))
        second.append(records(11, version="7", start=100 * round_number + 50))
        for shipper in (shippers[round_number % 2], shippers[1 - round_number % 2]):
            shipper.ship_once()
    run_ids = {shipper.status("7")["run_id"] for shipper in shippers}
    assert len(run_ids) == 1
    total, ids = shipped_totals(tracking, run_ids.pop())
    assert total == len(ids) == 3 * (5 + 11)


@pytest.mark.slow
def test_a_retried_shipment_is_not_counted_twice(tmp_path, tracking):
    """A shipment whose progress could not be saved is shipped again, from the same offset
    and longer if the log grew: the run's totals still count each record once."""
    log = PredictionLog(tmp_path / "log")
    shipper = Shipper(tmp_path / "log", tracking)
    log.append(records(4, version="8"))
    shipper.ship_once()
    (tmp_path / "log" / STATE_FILE).write_text(json.dumps(before_last_shipment(tmp_path)))
    log.append(records(3, version="8", start=4))
    shipper.ship_once()
    total, ids = shipped_totals(tracking, shipper.status("8")["run_id"])
    assert total == len(ids) == 7


def before_last_shipment(tmp_path: Path) -> dict:
    """The state as it was before the last shipment (as if saving it had failed)."""
    state = read_state(tmp_path / "log")
    state["offsets"] = dict.fromkeys(state["offsets"], 0)
    state["shipped"] = 0
    return state


@pytest.mark.slow
def test_runs_follow_the_model_version_and_the_tracking_store(tmp_path, tracking):
    """After a model upgrade on the same log folder, and after a switch of tracking store,
    records go to the run of their own version in the store configured now."""
    directory = tmp_path / "log"
    PredictionLog(directory).append(records(2, version="11"))
    Shipper(directory, tracking).ship_once()
    PredictionLog(directory).append(records(3, version="12"))  # the upgraded service's file
    Shipper(directory, tracking).ship_once()
    runs = serving_runs(tracking)
    assert len(runs["11"]) == len(runs["12"]) == 1
    assert shipped_totals(tracking, runs["11"][0])[0] == 2
    assert shipped_totals(tracking, runs["12"][0])[0] == 3

    other = f"sqlite:///{tmp_path / 'other.db'}"
    PredictionLog(directory).append(records(4, version="12", start=10))
    shipper = Shipper(directory, other)
    shipper.ship_once()
    assert shipped_totals(other, shipper.status("12")["run_id"])[0] == 4
    assert shipped_totals(tracking, runs["12"][0])[0] == 3


@pytest.mark.slow
@pytest.mark.parametrize("retention", ["compress", "delete"])
def test_finished_shipped_files_are_compressed_or_deleted(
    tmp_path, tracking, monkeypatch, retention
):
    monkeypatch.setenv("CREDIT_RISK_SHIPPED_LOGS", retention)
    directory = tmp_path / "log"
    log = PredictionLog(directory, max_bytes=3000)
    for group in range(5):
        log.append(records(3, version="21", start=3 * group))
    Shipper(directory, tracking).ship_once()
    plain = sorted(directory.glob("predictions-*.jsonl"))
    assert plain == [log.path]  # only the file still being written is left as it was
    compressed = sorted(directory.glob("predictions-*.jsonl.gz"))
    if retention == "delete":
        assert compressed == []
    else:
        assert len(compressed) >= 2
        assert {stat.S_IMODE(path.stat().st_mode) for path in compressed} == {0o600}
        assert len(read_records(directory)) == 15
    assert set(read_state(directory)["offsets"]) == {log.path.name}


@pytest.mark.slow
def test_pending_bytes_leave_out_shipped_files_deleted_by_hand(tmp_path, tracking):
    """A finished log file, fully shipped and kept, then deleted: nothing of it is pending."""
    directory = tmp_path / "log"
    log = PredictionLog(directory, max_bytes=3000)
    for group in range(3):
        log.append(records(3, start=3 * group))
    shipper = Shipper(directory, tracking)
    shipper.ship_once()
    finished = [path for path in log_files(directory) if path != log.path]
    assert finished and shipper.status("1")["pending_bytes"] == 0
    finished[0].unlink()
    size = log.path.stat().st_size
    log.append(records(1, start=9))
    assert shipper.status("1")["pending_bytes"] == log.path.stat().st_size - size


@pytest.mark.slow
def test_a_full_disk_stops_neither_the_log_nor_the_shipper(tmp_path, tracking, small_tmpfs):
    """On a full tmpfs appends fail cleanly and saving the shipping state fails; with space
    again, both go on, every line is a record and MLflow counts each one once."""
    directory = small_tmpfs / "log"
    log = PredictionLog(directory)
    shipper = Shipper(directory, tracking)
    log.append(records(10, version="31"))
    filler = small_tmpfs / "filler"
    fill(filler)
    with pytest.raises(OSError):
        for group in range(100):  # the last free blocks go, then an append fails whole
            log.append(records(5, version="31", start=100 + 5 * group))
    acknowledged = {record["prediction_id"] for record in read_records(directory)}
    with pytest.raises(OSError):
        shipper.ship_once()  # uploads, then cannot save its state on the full disk
    filler.unlink()
    log.append(records(5, version="31", start=1000))
    shipper.ship_once()
    logged = read_records(directory)
    assert {record["prediction_id"] for record in logged} == acknowledged | {
        record["prediction_id"] for record in records(5, version="31", start=1000)
    }
    total, ids = shipped_totals(tracking, shipper.status("31")["run_id"])
    assert total == len(ids) == len(logged)
    assert read_state(directory)["quarantined"] == 0


def fill(path: Path) -> None:
    """Write ``path`` until its file system is full."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs, mounted for the test (needs root, as in CI)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_round_ships_what_the_log_held_when_it_began(tmp_path, tracking):
    """A busy service keeps appending while a round ships: the round takes the file as it was
    (one chunk), not a trail of tiny chunks chasing its end; the next round takes the rest."""
    log = PredictionLog(tmp_path / "log")
    log.append(records(2000, version="9"))
    shipper = Shipper(log.directory, tracking)
    done = threading.Event()

    def keep_writing() -> None:
        for start in range(2000, 10**9):
            if done.is_set():
                return
            log.append(records(1, version="9", start=start))

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        shipper.ship_once()
    finally:
        done.set()
        writer.join()
    (run_id,) = serving_runs(tracking)["9"]
    client = MlflowClient(tracking)
    assert len(client.list_artifacts(run_id, "predictions")) == 1
    written = len(read_records(log.directory))
    assert 2000 <= client.get_run(run_id).data.metrics["predictions_total"] < written
    shipper.ship_once()
    total, ids = shipped_totals(tracking, run_id)
    assert total == written == len(ids) and len(client.list_artifacts(run_id, "predictions")) == 2
