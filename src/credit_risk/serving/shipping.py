"""Shipping the prediction log to MLflow: a background thread, a resumable state file.

:class:`Shipper` copies complete lines not yet shipped to an MLflow run per model version
(records as artifacts, counts and probability statistics as metrics). Its progress is a small
JSON state file replaced atomically; a shipment that fails (MLflow down) is retried on the next
round, so a restart loses nothing. Only the process holding the directory's lock file ships.
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

from mlflow import MlflowClient
from mlflow.entities import Metric

from credit_risk.registry.lookups import get_or_create_experiment
from credit_risk.registry.names import (
    MODEL_NAME,
    TAG_SERVING_MODEL_NAME,
    TAG_SERVING_MODEL_VERSION,
)
from credit_risk.registry.store import configure_tracking, project_root
from credit_risk.serving.prediction_log import LOG_FILE_PATTERN

SHIP_INTERVAL_ENV = "CREDIT_RISK_SHIP_INTERVAL"
STATE_FILE = "shipped.json"
MAX_SHIPMENT_BYTES = 8 * 1024 * 1024


def read_state(directory: Path) -> dict:
    """What has been shipped: offsets per log file, totals, the run, the last error."""
    try:
        return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"offsets": {}, "shipped": 0, "positives": 0, "run_id": None, "error": None}


def shipping_status(directory: Path) -> dict:
    """The shipping part of ``/health``: ok, last error and attempt, run, shipped, pending."""
    state = read_state(directory)
    written = sum(path.stat().st_size for path in directory.glob(LOG_FILE_PATTERN))
    return {
        "ok": state["error"] is None,
        "error": state["error"],
        "last_attempt": state.get("attempted_at"),
        "run_id": state["run_id"],
        "shipped_records": state["shipped"],
        "pending_bytes": written - sum(state["offsets"].values()),
    }


class Shipper(threading.Thread):
    """Background thread shipping the log directory's new records to MLflow."""

    def __init__(self, directory: Path, model_version: str, run_tags: dict[str, str]):
        super().__init__(name="prediction-shipper", daemon=True)
        self.directory = directory
        self.model_version = model_version
        self.run_tags = run_tags
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
            for path in sorted(self.directory.glob(LOG_FILE_PATTERN)):
                while self._ship_file(client, state, path):
                    pass
            state["error"] = None
        except Exception as error:  # noqa: BLE001 - any MLflow failure: keep serving, retry
            state["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        state["attempted_at"] = datetime.now(UTC).isoformat()
        self._save(state)

    def _serving_run(self, client: MlflowClient) -> str:
        experiment = get_or_create_experiment(client, project_root())
        tags = {TAG_SERVING_MODEL_NAME: MODEL_NAME, TAG_SERVING_MODEL_VERSION: self.model_version}
        query = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
        runs = client.search_runs([experiment], filter_string=query, max_results=1)
        if runs:
            return runs[0].info.run_id
        run = client.create_run(
            experiment, run_name=f"serving-v{self.model_version}", tags=tags | self.run_tags
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
