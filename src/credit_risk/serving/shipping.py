"""Shipping the prediction log to MLflow, round after round, never giving up.

:class:`Shipper` copies the complete lines not yet shipped to the run ``serving-v<version>`` of
the records' model version in the configured tracking store, in rounds: each chunk as an
artifact named after its log file, byte range and counts, then the run's totals as metrics. A
round ships what the files held when it began, so a busy service's shipper never chases the
end of the file with tiny chunks. Totals are summed
from those artifact names, so they equal the records shipped whatever the number of log
directories (replicas, restarts) shipping to one run. Lines that are not records are moved to
``quarantine/`` and counted. Progress is ``shipped.json``, replaced atomically; records count
as shipped there (and in ``/health``) once their run's totals are logged. A failed round
(MLflow down, disk full) is retried next round, so nothing is lost. Only the process holding
the directory's ``shipper.lock`` ships; it saves its progress after each round in
``shipping-progress.json``, which every worker's ``/health`` reads. Finished, fully shipped
files are kept, compressed or deleted as ``CREDIT_RISK_SHIPPED_LOGS`` says. Each round ends by
shipping the outcomes taken in meanwhile (:mod:`credit_risk.serving.outcome_shipping`). The
service runs it in a process of its own (:mod:`credit_risk.serving.shipping_process`).
"""

import contextlib
import fcntl
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from credit_risk.registry.names import (
    MODEL_NAME,
    TAG_DATASET_HASH,
    TAG_SERVING_MODEL_NAME,
    TAG_SERVING_MODEL_VERSION,
)
from credit_risk.registry.store import (
    connect,
    project_root,
    redact,
    redact_text,
    tracking_errors,
)
from credit_risk.serving.prediction_log import LOG_FILE_PATTERN, is_finished
from credit_risk.serving.shipping_state import (
    StateError,
    quarantine,
    read_state,
    retention,
    retire,
    save_progress,
    save_state,
)

SHIP_INTERVAL_ENV = "CREDIT_RISK_SHIP_INTERVAL"
ARTIFACT_DIR = "predictions"
MAX_SHIPMENT_BYTES = 8 * 1024 * 1024
STANDBY = "standby (another process ships this log)"
LOCK_FILE = "shipper.lock"
CHUNK_NAME = re.compile(
    r"^(?P<stem>.+)-(?P<start>\d{12})-(?P<end>\d{12})-(?P<records>\d+)r-(?P<positives>\d+)p\.jsonl$"
)


def longest_chunks(artifact_names: list[str]) -> list[re.Match]:
    """The chunks that count among a run's artifact names (as :data:`CHUNK_NAME` matches, by
    log file and start).

    A retried shipment starts where the failed one started; if the log grew meanwhile it ends
    later. So per log file and start offset only the longest chunk counts.
    """
    longest: dict[tuple[str, str], re.Match] = {}
    for name in artifact_names:
        match = CHUNK_NAME.match(Path(name).name)
        if match:
            key = (match["stem"], match["start"])
            if key not in longest or match["end"] > longest[key]["end"]:
                longest[key] = match
    return [longest[key] for key in sorted(longest)]


def run_totals(artifact_names: list[str]) -> tuple[int, int]:
    """(records, positives) of a serving run, from its chunk artifacts' names (the
    :func:`longest_chunks`)."""
    chunks = longest_chunks(artifact_names)
    records = sum(int(match["records"]) for match in chunks)
    return records, sum(int(match["positives"]) for match in chunks)


class Shipper:
    """Ships a log directory's new records to the tracking store, every ``interval`` s."""

    def __init__(self, directory: Path, uri: str):
        self.directory, self.uri = directory, uri
        self.interval = float(os.environ.get(SHIP_INTERVAL_ENV) or 30)
        self.retention = retention()
        self.shipping = False
        self.error: str | None = None
        self.last_attempt: str | None = None
        self.last_success: str | None = None
        self._lock_file = None

    def run(self) -> None:
        """Once this process holds the directory's lock (until then another process ships it,
        and this one waits quietly), ship a round every ``interval`` s and save its
        :meth:`progress` for ``/health``; forever. No failure stops it."""
        while True:
            try:
                if self.shipping or self._take_lock():
                    self.last_attempt = _now()
                    with tracking_errors(self.uri):  # a refused user as one line
                        self.ship_once()
                    self.error, self.last_success = None, _now()
            except Exception as error:  # noqa: BLE001 - whatever failed, report it and go on
                detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
                self.error = redact_text(f"{type(error).__name__}: {detail}", self.uri)
            if self.shipping:
                self._save_progress()
            time.sleep(self.interval)

    def progress(self) -> dict:
        """What the last round did: role, error, times of the last attempt and success, and
        which process ships."""
        return {
            "role": "shipping" if self.shipping else STANDBY,
            "error": self.error,
            "last_attempt": self.last_attempt,
            "last_success": self.last_success,
            "pid": os.getpid(),
        }

    def _save_progress(self) -> None:
        with contextlib.suppress(OSError):  # a full disk: the state file's error says it
            save_progress(self.directory, self.progress())

    def _take_lock(self) -> bool:
        """Become the directory's shipper if no other process is (and say so at once)."""
        self._lock_file = self._lock_file or (self.directory / LOCK_FILE).open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.shipping = True
        self._save_progress()
        return True

    def ship_once(self) -> None:
        """Ship the complete lines each file had when the round began (lines written meanwhile
        wait for the next round), then each touched run's totals; retire finished, fully
        shipped files."""
        state = read_state(self.directory)
        client = connect(self.uri)
        shipped: dict[str, list[float]] = {}  # probabilities shipped this round, per run
        for path in sorted(self.directory.glob(LOG_FILE_PATTERN)):
            finished = is_finished(path)  # before its size: a finished file does not grow
            size = path.stat().st_size
            while self._ship_chunk(client, state, path, size, finished, shipped):
                pass
            if finished and state["offsets"].get(path.name, 0) >= size:
                retire(self.directory, path, state, self.retention)
        # Records count as shipped (in /health) once their run's totals include them; a round
        # that failed in between leaves them pending, and the next one logs those totals.
        if state.get("pending"):
            for run_id in state["pending"]:
                self._log_totals(client, run_id, shipped.get(run_id, []))
            state["shipped"] += sum(state.pop("pending").values())
            save_state(self.directory, state)
        from credit_risk.serving.outcome_shipping import ship_outcomes

        ship_outcomes(self.directory, self.uri, client, wait=False)  # unless being taken in

    def _ship_chunk(
        self, client, state: dict, path: Path, size: int, finished: bool, shipped: dict
    ) -> bool:
        """Ship the next chunk of ``path`` below ``size``; False when there is nothing to ship."""
        offset = state["offsets"].get(path.name, 0)
        with path.open("rb") as stream:
            stream.seek(offset)
            data = stream.read(min(MAX_SHIPMENT_BYTES, size - offset))
        complete = data[: data.rfind(b"\n") + 1]
        if not complete:
            if data and (finished or len(data) == MAX_SHIPMENT_BYTES):
                quarantine(self.directory, path, data + b"\n", state)  # a line nobody will finish
                state["offsets"][path.name] = offset + len(data)
                save_state(self.directory, state)
            return False
        chunks: dict[str, _Chunk] = {}  # per model version
        bad = []
        for line in complete.splitlines(keepends=True):
            fields = _record_fields(line)
            if fields is None:
                bad.append(line)
            else:
                version, prediction, probability = fields
                if version not in chunks:
                    chunks[version] = _Chunk()
                chunks[version].add(line, prediction, probability)
        if bad:
            quarantine(self.directory, path, b"".join(bad), state)
        end = offset + len(complete)
        for version in sorted(chunks):
            run_id = self._serving_run(client, state, version)
            self._upload(client, run_id, path, offset, end, chunks[version])
            shipped.setdefault(run_id, []).extend(chunks[version].probabilities)
            pending = state.setdefault("pending", {})
            pending[run_id] = pending.get(run_id, 0) + len(chunks[version].lines)
        state["offsets"][path.name] = end
        save_state(self.directory, state)
        return True

    @staticmethod
    def _upload(client, run_id: str, path: Path, start: int, end: int, chunk: "_Chunk") -> None:
        """One chunk as an artifact named after its log file, byte range and counts."""
        records, positives = len(chunk.lines), chunk.positives
        name = f"{path.stem}-{start:012d}-{end:012d}-{records}r-{positives}p.jsonl"
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / name).write_bytes(b"".join(chunk.lines))
            client.log_artifact(run_id, str(Path(folder) / name), artifact_path=ARTIFACT_DIR)

    @staticmethod
    def _log_totals(client, run_id: str, probabilities: list[float]) -> None:
        """The run's totals (summed from its artifact names) and this round's probabilities
        (none when the records were shipped by a round that failed before its totals)."""
        from mlflow.entities import Metric

        shipped = [artifact.path for artifact in client.list_artifacts(run_id, ARTIFACT_DIR)]
        total, total_positives = run_totals(shipped)
        metrics = {
            "predictions_total": total,
            "positives_total": total_positives,
            "positive_rate": total_positives / total,
        }
        if probabilities:
            metrics["probability_mean"] = statistics.fmean(probabilities)
            metrics["probability_max"] = max(probabilities)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, total) for k, v in metrics.items()])

    def _serving_run(self, client, state: dict, version: str) -> str:
        """The run ``serving-v<version>`` in this store, remembered in the state."""
        key = f"{redact(self.uri)}#{version}"
        if key not in state["runs"]:
            state["runs"][key] = serving_run(client, self.uri, version)
        return state["runs"][key]

    def status(self, model_version: str) -> dict:
        """The shipping part of ``/health``, for a shipper run in this process."""
        return shipping_status(self, self.progress(), True, model_version)


@contextlib.contextmanager
def lock_if_free(directory: Path) -> Iterator[bool]:
    """Hold the directory's shipping lock for the block if no process ships it; yields
    whether it is held."""
    with (directory / LOCK_FILE).open("a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True


def shipping_status(shipper, progress: dict, alive: bool, model_version: str) -> dict:
    """The shipping part of ``/health``: ``progress`` (:meth:`Shipper.progress`) of the shipper
    configured as ``shipper`` (directory, store, retention) and what its state file says."""
    try:
        state, state_error = read_state(shipper.directory), None
    except StateError as error:
        state, state_error = {"offsets": {}, "runs": {}, "shipped": 0}, str(error)
    # Offsets of files no longer there (deleted by hand once shipped) are no longer pending.
    sizes = {path.name: path.stat().st_size for path in shipper.directory.glob(LOG_FILE_PATTERN)}
    shipped_bytes = sum(state["offsets"].get(name, 0) for name in sizes)
    error = state_error or progress["error"]
    return {
        "enabled": True,
        "tracking_uri": redact(shipper.uri),
        "alive": alive,
        "role": progress["role"],
        "ok": error is None,
        "error": error,
        "last_attempt": progress["last_attempt"],
        "last_success": progress["last_success"],
        "run_id": state["runs"].get(f"{redact(shipper.uri)}#{model_version}"),
        "shipped_records": state["shipped"],
        "quarantined_lines": state.get("quarantined", 0),
        "pending_bytes": sum(sizes.values()) - shipped_bytes,
        "retention": shipper.retention,
    }


def serving_run(client, uri: str, version: str) -> str:
    """The id of the run ``serving-v<version>`` in the store at ``uri``, created if there is
    none (tagged with the version's training run and dataset, where the registry has the
    version); of runs created at once, the oldest."""
    from credit_risk.registry.lookups import get_or_create_experiment, registry_version

    def training_tags() -> dict:
        registered = registry_version(client, version)
        if registered is None:
            return {}
        training = client.get_run(registered.run_id).data.tags
        return {"model_run_id": registered.run_id,
                TAG_DATASET_HASH: training.get(TAG_DATASET_HASH, "")}  # fmt: skip

    experiment = get_or_create_experiment(client, uri, project_root())
    tags = {TAG_SERVING_MODEL_NAME: MODEL_NAME, TAG_SERVING_MODEL_VERSION: version}
    return tagged_run(client, experiment, f"serving-v{version}", tags, training_tags)


def tagged_run(client, experiment: str, name: str, tags: dict,
               creation_tags: Callable[[], dict] = dict) -> str:  # fmt: skip
    """The id of the run of ``experiment`` with ``tags``, created as ``name`` (with ``tags`` and
    ``creation_tags()``) if there is none; of runs created at once, the oldest."""
    query = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
    order = ["attributes.start_time ASC", "attributes.run_id ASC"]
    runs = client.search_runs([experiment], filter_string=query, order_by=order)
    if not runs:
        created = client.create_run(experiment, run_name=name, tags=tags | creation_tags())
        runs = client.search_runs([experiment], filter_string=query, order_by=order)
        if runs[0].info.run_id != created.info.run_id:
            client.delete_run(created.info.run_id)  # another process's run came first
    return runs[0].info.run_id


class _Chunk:
    """One model version's lines of a shipment, with what the run's metrics need."""

    def __init__(self):
        self.lines: list[bytes] = []
        self.probabilities: list[float] = []
        self.positives = 0

    def add(self, line: bytes, prediction: int, probability: float) -> None:
        self.lines.append(line)
        self.probabilities.append(probability)
        self.positives += prediction


def _record_fields(line: bytes) -> tuple[str, int, float] | None:
    """(model version, prediction, probability) of the prediction record on ``line``, or None
    if it is not one. Only these are kept: a round's records, held whole, would be hundreds
    of thousands of objects for the garbage collector to walk while the service answers."""
    try:
        record = orjson.loads(line)
        fields = (record["model_version"], record["prediction"], record["probability"])
        valid = (
            isinstance(fields[0], str)
            and isinstance(record["prediction_id"], str)
            and fields[1] in (0, 1)
            and isinstance(fields[2], float)
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return fields if valid else None


def _now() -> str:
    return datetime.now(UTC).isoformat()
