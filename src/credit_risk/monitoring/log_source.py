"""Where a command reads the prediction log and its outcomes: a log directory on this host
(:class:`LogDirectory`), or what every service shipped to MLflow (``--from-mlflow``,
:class:`~credit_risk.monitoring.shipped_log.ShippedLog`).

Either gives the log as batches of local log files (a directory: one batch of its files) to be
read before the next batch is asked for, and the outcomes taken in.
"""

from collections.abc import Iterator
from pathlib import Path

import orjson

from credit_risk.monitoring.outcome_records import Outcome, stored_outcomes
from credit_risk.serving.prediction_log import log_files, read_lines


class LogSource:
    """A prediction log and its outcomes, as the commands read them."""

    conflicting_outcomes = 0
    """Predictions left out of :meth:`outcomes` because they were given two different labels."""

    def batches(self) -> Iterator[list[Path]]:
        """The log files, a batch at a time (none if there are none); a batch's files may be
        gone once the next batch is asked for."""
        raise NotImplementedError

    def outcomes(self) -> dict[str, Outcome]:
        """The outcomes taken in, by prediction id."""
        raise NotImplementedError

    def report_fields(self) -> dict:
        """What a report's JSON says about where its log came from."""
        raise NotImplementedError

    def no_files(self) -> str:
        """The error when there is no log file at all."""
        raise NotImplementedError

    def no_outcomes(self) -> str:
        """The error when no outcome was taken in."""
        raise NotImplementedError

    def lines(self) -> Iterator[bytes]:
        """Every complete line of the log files, file by file."""
        for batch in self.batches():
            for path in batch:
                data = read_lines(path)
                yield from data[: data.rfind(b"\n") + 1].splitlines()

    def records(self) -> Iterator[dict]:
        """Every complete line that is a JSON object, parsed, file by file."""
        for line in self.lines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record

    def ids_among(self, wanted: set[str]) -> set[str]:
        """The ids of ``wanted`` that name a logged prediction."""
        return {r.get("prediction_id") for r in self.records() if r.get("prediction_id") in wanted}


class LogDirectory(LogSource):
    """A prediction log directory on this host, with its ``outcomes.jsonl``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def __str__(self) -> str:
        return str(self.directory)

    def batches(self) -> Iterator[list[Path]]:
        files = log_files(self.directory) if self.directory.is_dir() else []
        if files:
            yield files

    def outcomes(self) -> dict[str, Outcome]:
        return stored_outcomes(self.directory)

    def report_fields(self) -> dict:
        return {"log_directory": str(self.directory), "from_mlflow": None}

    def no_files(self) -> str:
        return f"no prediction log files (predictions-*.jsonl) in {self.directory}"

    def no_outcomes(self) -> str:
        return (
            f"{self.directory}: no outcomes taken in yet (credit-risk outcomes FILE.csv "
            f"{self.directory})"
        )


def as_log_source(location: "Path | str | LogSource") -> LogSource:
    """``location`` itself if it is a :class:`LogSource`, else the log directory it names."""
    return location if isinstance(location, LogSource) else LogDirectory(Path(location))


def log_description(report: dict) -> str:
    """Where a report's log came from, for its HTML page."""
    if report.get("from_mlflow"):
        return f"the log shipped to MLflow at {report['from_mlflow']}"
    return report["log_directory"]
