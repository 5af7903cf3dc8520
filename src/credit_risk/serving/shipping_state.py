"""What the shipper has done to a log directory: its state file, quarantined lines, and the
finished log files it kept, compressed or deleted."""

import gzip
import json
import os
from pathlib import Path

from credit_risk.serving.prediction_log import FILE_MODE, fsync_directory

STATE_FILE = "shipped.json"
PROGRESS_FILE = "shipping-progress.json"
QUARANTINE_DIR = "quarantine"
RETENTION_ENV = "CREDIT_RISK_SHIPPED_LOGS"
RETENTION_CHOICES = ("keep", "compress", "delete")


class StateError(RuntimeError):
    """``shipped.json`` cannot be read: shipping waits for an operator."""


def read_state(directory: Path) -> dict:
    """Offsets shipped per log file, runs per store and model version, counts."""
    path = directory / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("offsets"), dict):
            raise ValueError("not a shipping state")
    except FileNotFoundError:
        return {"offsets": {}, "runs": {}, "shipped": 0, "quarantined": 0}
    except ValueError as error:
        raise StateError(
            f"{path} is corrupt ({error}); shipping is paused until it is restored (see README, "
            "'Prediction log')"
        ) from None
    return state


def save_state(directory: Path, state: dict, name: str = STATE_FILE) -> None:
    """Replace the state file (or another named ``name``) atomically and durably (file and
    directory fsync'd)."""
    target = directory / name
    temporary = target.with_name(f".{name}.new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(state, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, target)
    fsync_directory(directory)


def save_progress(directory: Path, progress: dict) -> None:
    """Replace ``shipping-progress.json`` (what the directory's shipper did last, for every
    worker's ``/health``) atomically; only the process holding ``shipper.lock`` writes it."""
    target = directory / PROGRESS_FILE
    temporary = target.with_name(f".{PROGRESS_FILE}.{os.getpid()}.new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        json.dump(progress, stream)
    os.replace(temporary, target)


def read_progress(directory: Path) -> dict | None:
    """The last progress the directory's shipper saved, or None (none yet, or unreadable: a
    report cut off by a full disk is no report)."""
    try:
        progress = json.loads((directory / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return progress if isinstance(progress, dict) else None


def quarantine(directory: Path, log_file: Path, lines: bytes, state: dict) -> None:
    """Keep lines that are not records aside (``quarantine/<log file>``) and count them."""
    folder = directory / QUARANTINE_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    descriptor = os.open(folder / log_file.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.write(descriptor, lines)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    state["quarantined"] = state.get("quarantined", 0) + lines.count(b"\n")


def retention() -> str:
    """``CREDIT_RISK_SHIPPED_LOGS``: what happens to finished, fully shipped log files."""
    choice = os.environ.get(RETENTION_ENV) or "keep"
    if choice not in RETENTION_CHOICES:
        raise ValueError(f"{RETENTION_ENV} must be one of {RETENTION_CHOICES}, got {choice!r}")
    return choice


def retire(directory: Path, log_file: Path, state: dict, choice: str) -> None:
    """Keep, compress (``.jsonl.gz``) or delete a finished log file whose every line is shipped."""
    if choice == "keep":
        return
    if choice == "compress":
        target = log_file.with_name(f"{log_file.name}.gz")
        temporary = log_file.with_name(f".{target.name}.new")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(gzip.compress(log_file.read_bytes(), mtime=0))
            stream.flush()
            os.fsync(stream.fileno())
        os.rename(temporary, target)
    log_file.unlink()
    fsync_directory(directory)
    del state["offsets"][log_file.name]
    save_state(directory, state)
