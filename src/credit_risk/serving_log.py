"""The prediction log: every served prediction on local disk first, then shipped to MLflow.

:class:`PredictionLog` appends JSON lines to a file of its own (one per server process) and
fsyncs them before the caller answers, so an acknowledged prediction survives ``SIGKILL``.
:class:`Shipper` copies complete lines not yet shipped to an MLflow run per model version
(records as artifacts, counts and probability statistics as metrics) from a background thread.
Its progress is a small JSON state file replaced atomically; a shipment that fails (MLflow down)
is retried on the next round, so a restart loses nothing. Only the process holding the
directory's lock file ships.
"""

import fcntl
import json
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from mlflow import MlflowClient
from mlflow.entities import Metric

from credit_risk.tracking import (
    MODEL_NAME,
    configure_tracking,
    get_or_create_experiment,
    project_root,
)

LOG_DIR_ENV = "CREDIT_RISK_PREDICTION_LOG"
SHIP_INTERVAL_ENV = "CREDIT_RISK_SHIP_INTERVAL"
DEFAULT_LOG_DIR = "monitoring/predictions"
STATE_FILE = "shipped.json"
MAX_SHIPMENT_BYTES = 8 * 1024 * 1024


def log_directory() -> Path:
    """``$CREDIT_RISK_PREDICTION_LOG``, else ``monitoring/predictions`` in the working folder."""
    return Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR).resolve()


def read_state(directory: Path) -> dict:
    """What has been shipped: offsets per log file, totals, the run, the last error."""
    try:
        return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"offsets": {}, "shipped": 0, "positives": 0, "run_id": None, "error": None}


def read_records(directory: Path) -> list[dict]:
    """All complete records in the log files (for tests and audits)."""
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        data = path.read_bytes()
        records += [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]
    return records


class PredictionLog:
    """Durable append-only JSON-lines file for this process."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.path = directory / f"predictions-{started}-{os.getpid()}.jsonl"
        self._file = self.path.open("ab")
        self._lock = threading.Lock()
        self.error: str | None = None

    def append(self, records: list[dict]) -> None:
        """Write and fsync ``records``; raises if they could not be made durable."""
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
        with self._lock:
            try:
                self._file.write(data)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as error:
                self.error = f"{self.path}: {error}"
                raise
            self.error = None


class Shipper(threading.Thread):
    """Background thread shipping the log directory's new records to MLflow."""

    def __init__(self, directory: Path, model_version: str, model_labels: dict[str, str]):
        super().__init__(name="prediction-shipper", daemon=True)
        self.directory = directory
        self.model_version = model_version
        self.model_labels = model_labels
        self.interval = float(os.environ.get(SHIP_INTERVAL_ENV) or 30)

    def run(self) -> None:
        lock = (self.directory / "shipper.lock").open("a")
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(self.interval)
        while True:
            self.ship_once()
            time.sleep(self.interval)

    def ship_once(self) -> None:
        """Ship what is new; on failure record the error in the state and try again later."""
        state = read_state(self.directory)
        try:
            uri = configure_tracking(project_root())
            client = MlflowClient(uri)
            for path in sorted(self.directory.glob("*.jsonl")):
                while self._ship_file(client, state, path):
                    pass
            state["error"] = None
        except Exception as error:  # noqa: BLE001 - any MLflow failure: keep serving, retry
            state["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        state["attempted_at"] = datetime.now(UTC).isoformat()
        self._save(state)

    def _serving_run(self, client: MlflowClient) -> str:
        experiment = get_or_create_experiment(client, project_root())
        tags = {"serving_model_name": MODEL_NAME, "serving_model_version": self.model_version}
        query = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
        runs = client.search_runs([experiment], filter_string=query, max_results=1)
        if runs:
            return runs[0].info.run_id
        run = client.create_run(
            experiment,
            run_name=f"serving-v{self.model_version}",
            tags={**tags, **{f"model_{k}": v for k, v in self.model_labels.items()}},
        )
        return run.info.run_id

    def _ship_file(self, client: MlflowClient, state: dict, path: Path) -> bool:
        """Ship one chunk of ``path``; False when it had nothing new."""
        offset = state["offsets"].get(path.name, 0)
        with path.open("rb") as stream:
            stream.seek(offset)
            data = stream.read(MAX_SHIPMENT_BYTES)
        data = data[: data.rfind(b"\n") + 1]
        if not data:
            return False
        state["run_id"] = state["run_id"] or self._serving_run(client)
        records = [json.loads(line) for line in data.splitlines()]
        probabilities = [record["probability"] for record in records]
        positives = sum(record["prediction"] for record in records)
        with tempfile.TemporaryDirectory() as folder:
            chunk = Path(folder) / f"{path.stem}-{offset:012d}.jsonl"
            chunk.write_bytes(data)
            client.log_artifact(state["run_id"], str(chunk), artifact_path="predictions")
        shipped, total_positives = state["shipped"] + len(records), state["positives"] + positives
        metrics = {
            "predictions_total": shipped,
            "positives_total": total_positives,
            "positive_rate": positives / len(records),
            "probability_mean": statistics.fmean(probabilities),
            "probability_max": max(probabilities),
        }
        now = int(time.time() * 1000)
        client.log_batch(
            state["run_id"], metrics=[Metric(k, v, now, shipped) for k, v in metrics.items()]
        )
        state["offsets"][path.name] = offset + len(data)
        state["shipped"], state["positives"] = shipped, total_positives
        self._save(state)
        return True

    def _save(self, state: dict) -> None:
        target = self.directory / STATE_FILE
        temporary = target.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as stream:
            json.dump(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(target)
