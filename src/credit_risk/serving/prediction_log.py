"""The prediction log: every served prediction appended and fsync'd to local disk first.

:class:`PredictionLog` appends JSON lines to a file of its own (one per server process) and
fsyncs them before the caller answers, so an acknowledged prediction survives ``SIGKILL``.
:mod:`credit_risk.serving.shipping` copies them to MLflow later.
"""

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson

LOG_DIR_ENV = "CREDIT_RISK_PREDICTION_LOG"
DEFAULT_LOG_DIR = "monitoring/predictions"
LOG_FILE_PATTERN = "*.jsonl"


def log_directory() -> Path:
    """``$CREDIT_RISK_PREDICTION_LOG``, else ``monitoring/predictions`` in the working folder."""
    return Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR).resolve()


def read_records(directory: Path) -> list[dict]:
    """All complete records in the log files (for tests and audits)."""
    records = []
    for path in sorted(directory.glob(LOG_FILE_PATTERN)):
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
