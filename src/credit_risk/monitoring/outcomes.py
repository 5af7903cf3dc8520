"""Observed outcomes: which logged applicants went on to default, taken in from a CSV.

``credit-risk outcomes FILE.csv [LOG_DIR]`` reads ``prediction_id``, ``SeriousDlqin2yrs`` (0/1)
and ``observed_at`` (an ISO date or time) and appends the outcomes not yet known to
``LOG_DIR/outcomes.jsonl``, next to the prediction log. The whole file is checked first and
nothing of it is stored if any row is wrong: an id the prediction log does not hold, a label
other than 0 or 1, a label that contradicts one already known or an earlier row. With
``--from-mlflow`` the ids are looked up in the log every service shipped to MLflow, and the
outcomes shipped from any host count as known too, so a host takes in outcomes of predictions
another host logged. The new outcomes are written in one append and fsync'd; an append that
fails part-way is cut back off, so the file never holds half a line. Runs at the same time take
turns (an exclusive ``flock`` on the file), so taking the same outcomes in twice, or from two
hosts sharing the directory, stores each once. The first observation of an outcome is kept; a
repeat is "already known". The command then ships them to MLflow
(:mod:`credit_risk.serving.outcome_shipping`).
"""

import csv
import fcntl
import os
from pathlib import Path

import orjson

from credit_risk.ml.contract import TARGET
from credit_risk.ml.data import DataError
from credit_risk.monitoring.log_source import LogDirectory, LogSource
from credit_risk.monitoring.outcome_records import Outcome, stored_outcomes
from credit_risk.monitoring.window import day_or_moment
from credit_risk.serving.outcome_shipping import OUTCOMES_FILE
from credit_risk.serving.prediction_log import FILE_MODE

COLUMNS = ("prediction_id", TARGET, "observed_at")


def parse_observed_at(text: str) -> str:
    """An ISO date or date-time as an ISO text in UTC (a date stays a date); ``ValueError``
    otherwise. A time without a zone is taken as UTC, like the prediction log's times."""
    return day_or_moment(text).isoformat()


def read_outcomes_csv(path: Path) -> list[tuple[int, Outcome]]:
    """The rows of an outcomes CSV with their line numbers; :class:`DataError` naming the file,
    line, column and value of the first bad one."""
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            missing = [name for name in COLUMNS if name not in (reader.fieldnames or [])]
            if missing:
                needed = ", ".join(COLUMNS)
                raise DataError(f"{path}: missing column {missing[0]!r} (needs {needed})")
            return [(reader.line_num, outcome_of(path, reader.line_num, row)) for row in reader]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None


def outcome_of(path: Path, line: int, row: dict) -> Outcome:
    values = {name: (row.get(name) or "").strip() for name in COLUMNS}
    where = f"{path}: line {line}"
    if not values["prediction_id"]:
        raise DataError(f"{where}, column 'prediction_id': empty")
    if values[TARGET] not in ("0", "1"):
        raise DataError(f"{where}, column {TARGET!r}: must be 0 or 1, got {values[TARGET]!r}")
    try:
        observed_at = parse_observed_at(values["observed_at"])
    except ValueError:
        raise DataError(
            f"{where}, column 'observed_at': not an ISO date or time, got {values['observed_at']!r}"
        ) from None
    return Outcome(values["prediction_id"], int(values[TARGET]), observed_at)


def new_outcomes(path: Path, rows: list[tuple[int, Outcome]], known: dict[str, Outcome],
                 logged: set[str], log: LogSource) -> list[Outcome]:  # fmt: skip
    """The rows' outcomes not yet ``known``; :class:`DataError` for the first row that names no
    prediction of ``log`` (``logged``: those it names that it holds) or contradicts a known
    outcome or an earlier row."""
    seen: dict[str, tuple[int, Outcome]] = {}
    new = []
    for line, outcome in rows:
        where = f"{path}: line {line}: prediction_id {outcome.prediction_id!r}"
        if outcome.prediction_id not in logged:
            if isinstance(log, LogDirectory):
                raise DataError(
                    f"{where} is not in the prediction log {log} (logged by another host? "
                    "--from-mlflow looks in the log every host shipped)"
                )
            raise DataError(f"{where} is not in {log} (it ships every CREDIT_RISK_SHIP_INTERVAL s)")
        if outcome.prediction_id in known:
            previous = known[outcome.prediction_id]
            if previous.defaulted != outcome.defaulted:
                raise DataError(
                    f"{where}: {TARGET} {outcome.defaulted} contradicts the stored outcome "
                    f"{previous.defaulted} (observed {previous.observed_at})"
                )
            continue
        if outcome.prediction_id in seen:
            earlier_line, earlier = seen[outcome.prediction_id]
            if earlier.defaulted != outcome.defaulted:
                raise DataError(
                    f"{where}: {TARGET} {outcome.defaulted} contradicts line {earlier_line} "
                    f"({earlier.defaulted})"
                )
            continue
        seen[outcome.prediction_id] = (line, outcome)
        new.append(outcome)
    return new


def take_in_outcomes(path: Path, directory: Path, shipped: LogSource | None = None) -> str:
    """Store the new outcomes of ``path`` in ``directory``; the one-line summary. The ids are
    looked up in ``directory``'s log, or in ``shipped`` (the shipped log) if given, whose
    outcomes then count as known too."""
    rows = read_outcomes_csv(path)
    if shipped is None and not directory.is_dir():
        raise DataError(f"{directory}: no prediction log directory")
    log = shipped or LogDirectory(directory)
    logged = log.ids_among({outcome.prediction_id for _, outcome in rows})
    known_elsewhere = shipped.outcomes() if shipped is not None else {}
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / OUTCOMES_FILE
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        stored = stored_outcomes(directory)
        known = known_elsewhere | stored
        new = new_outcomes(path, rows, known, logged, log)
        append_all_or_nothing(descriptor, b"".join(orjson.dumps(o.record()) + b"\n" for o in new))
    finally:
        os.close(descriptor)
    return (
        f"outcomes: {len(rows)} rows read from {path}: {len(new)} new, "
        f"{len(rows) - len(new)} already known; {len(stored) + len(new)} outcomes in {target}"
    )


def append_all_or_nothing(descriptor: int, data: bytes) -> None:
    """Append and fsync ``data``; if that fails, cut the file back to its size before."""
    if not data:
        return
    size = os.fstat(descriptor).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    except OSError:
        os.ftruncate(descriptor, size)
        os.fsync(descriptor)
        raise
