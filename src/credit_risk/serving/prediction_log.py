"""The prediction log: every served prediction appended and fsync'd to local disk first.

:class:`PredictionLog` appends JSON lines to a file of its own (one per server process, a new
one past ``CREDIT_RISK_LOG_MAX_BYTES``) and fsyncs them before the caller answers, so an
acknowledged prediction survives ``SIGKILL``. An append is all or nothing: a write that fails
part-way (disk full, file-size limit) is cut back off the file before the error is raised, so
the log never holds half a record followed by later ones. Files are created readable by their
owner only (the records hold applicants' financial data), and the directory is fsync'd when a
file appears. While a process writes a file it holds a shared ``flock`` on it; a file nobody
holds is finished. :mod:`credit_risk.serving.shipping` copies the records to MLflow.
"""

import contextlib
import fcntl
import gzip
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

LOG_DIR_ENV = "CREDIT_RISK_PREDICTION_LOG"
DEFAULT_LOG_DIR = "monitoring/predictions"
MAX_BYTES_ENV = "CREDIT_RISK_LOG_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
LOG_FILE_PATTERN = "predictions-*.jsonl"
COMPRESSED_PATTERN = "predictions-*.jsonl.gz"
FILE_MODE = 0o600


def log_directory() -> Path:
    """``$CREDIT_RISK_PREDICTION_LOG``, else ``monitoring/predictions`` in the working folder."""
    return Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR).resolve()


def check_log_directory(directory: Path) -> None:
    """Raise ``OSError`` naming ``directory`` unless prediction log files can be made there."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise OSError(f"cannot write the prediction log in {directory}: {error}") from None


def fsync_directory(directory: Path) -> None:
    """Make a file's creation, rename or removal in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_finished(path: Path) -> bool:
    """True when no process is writing ``path`` (nobody holds its ``flock``)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
    return True


def log_files(directory: Path) -> list[Path]:
    """The log files in order: compressed (shipped and finished) ones and plain ones."""
    files = [*directory.glob(LOG_FILE_PATTERN), *directory.glob(COMPRESSED_PATTERN)]
    return sorted(files, key=lambda path: path.name)


def read_lines(path: Path) -> bytes:
    """A log file's bytes, decompressed if it is a ``.gz``."""
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def iter_records(directory: Path) -> Iterator[dict]:
    """Every complete, parseable record of the directory's log files, file by file."""
    for path in log_files(directory):
        data = read_lines(path)
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue


def read_records(directory: Path) -> list[dict]:
    """All complete records in the log files (for tests and audits)."""
    return list(iter_records(directory))


class PredictionLog:
    """Durable, all-or-nothing append-only JSON-lines files for this process."""

    def __init__(self, directory: Path, max_bytes: int | None = None):
        self.directory = directory
        self.max_bytes = max_bytes or int(os.environ.get(MAX_BYTES_ENV) or DEFAULT_MAX_BYTES)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self.error: str | None = None
        self._descriptor: int | None = None
        self._torn = False
        self._token, self._files = secrets.token_hex(3), 0  # unique and in order, per process
        self._open_new_file()

    def _open_new_file(self) -> None:
        """Create the next file under a hidden name, lock it, then give it its real name: the
        shipper never sees a file that is being written without its lock."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self._files += 1
        name = f"predictions-{stamp}-{os.getpid()}-{self._token}-{self._files:04d}.jsonl"
        path = self.directory / name
        hidden = path.with_name(f".{path.name}.new")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        descriptor = os.open(hidden, flags, FILE_MODE)
        fcntl.flock(descriptor, fcntl.LOCK_SH)
        os.rename(hidden, path)
        fsync_directory(self.directory)
        if self._descriptor is not None:
            os.close(self._descriptor)  # releases the finished file's lock
        self._descriptor, self.path, self.size = descriptor, path, 0

    def append(self, records: list[dict]) -> None:
        """Write and fsync ``records``; raises ``OSError`` if they could not be made durable,
        leaving the file as it was before the call."""
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
        with self._lock:
            try:
                if self.size and self.size + len(data) > self.max_bytes:
                    self._open_new_file()
                self._write_all(data)
            except OSError as error:
                self.error = f"{self.path}: {error}"
                raise
            self.error = None

    def _write_all(self, data: bytes) -> None:
        if self._torn:
            self._repair()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._descriptor, view) :]
            os.fsync(self._descriptor)
        except OSError:
            self._torn = True
            with contextlib.suppress(OSError):  # then the next append repairs first
                self._repair()
            raise
        self.size += len(data)

    def _repair(self) -> None:
        """Cut a failed append's bytes off the file, or, if even that fails, go on in a new
        file (the shipper quarantines the old file's incomplete last line). Raises if neither
        works, so nothing is ever appended after a partial record."""
        try:
            os.ftruncate(self._descriptor, self.size)
            os.fsync(self._descriptor)
        except OSError:
            self._open_new_file()
        self._torn = False
