"""``--from-mlflow``: the prediction log every service shipped to MLflow, read as one log.

The chunks of every ``serving-v<N>`` run (``predictions/``, :mod:`credit_risk.serving.shipping`)
are grouped by the log file they were cut from: one file of one server process on one host,
named in each chunk's name. Of the chunks a retried shipment made longer only the longest
counts, as in the runs' totals; then a log file's records are de-duplicated by
``prediction_id`` (a file shipped again in chunks cut elsewhere, after its ``shipped.json`` was
lost). A prediction is logged in one file only, so each is read once while the ids of one file
at a time are held. The files are rebuilt in a temporary folder, a batch of about
:data:`BATCH_BYTES` at a time, read as a log directory's files are, and deleted.

The outcomes are those shipped to the run ``outcomes`` (:mod:`credit_risk.serving.outcome_shipping`)
from any host, de-duplicated by prediction id; a prediction given two different labels (on two
hosts at once) is left out and counted.
"""

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from credit_risk.monitoring.log_source import LogSource
from credit_risk.monitoring.outcome_records import Outcome, add_outcomes
from credit_risk.registry.names import (
    EXPERIMENT_NAME,
    MODEL_NAME,
    TAG_OUTCOMES_MODEL_NAME,
    TAG_SERVING_MODEL_NAME,
)
from credit_risk.registry.store import connect, redact, tracking_errors
from credit_risk.serving.outcome_shipping import ARTIFACT_DIR as OUTCOMES_DIR
from credit_risk.serving.shipping import ARTIFACT_DIR as PREDICTIONS_DIR
from credit_risk.serving.shipping import longest_chunks

BATCH_BYTES = 256 * 2**20
PREDICTION_ID = re.compile(rb'"prediction_id":"([^"]*)"')


@dataclass(frozen=True)
class Chunk:
    """A chunk artifact of a run: where it is, which log file it came from and where in it."""

    repository: object
    """The run's ``ArtifactRepository``."""
    path: str
    stem: str
    start: int


class ShippedLog(LogSource):
    """The shipped log and outcomes in the tracking store at ``uri`` (checked reachable)."""

    def __init__(self, uri: str):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.uri = uri
        self.client = connect(uri)

    def __str__(self) -> str:
        return f"the log shipped to MLflow at {redact(self.uri)}"

    def report_fields(self) -> dict:
        return {"log_directory": None, "from_mlflow": redact(self.uri)}

    def no_files(self) -> str:
        return (
            f"no shipped predictions in MLflow at {redact(self.uri)} (no serving-v<N> run of "
            f"{MODEL_NAME} has chunks under {PREDICTIONS_DIR}/)"
        )

    def no_outcomes(self) -> str:
        return (
            f"{self}: no outcomes shipped yet (credit-risk outcomes FILE.csv ships them; "
            "--from-mlflow accepts predictions logged on any host)"
        )

    def batches(self) -> Iterator[list[Path]]:
        files: dict[str, list[Chunk]] = {}
        with tracking_errors(self.uri):
            for run in self._runs(TAG_SERVING_MODEL_NAME):
                for chunk in self._chunks(run, PREDICTIONS_DIR):
                    files.setdefault(chunk.stem, []).append(chunk)
        with tempfile.TemporaryDirectory(prefix="credit-risk-shipped-") as folder:
            batch, size = [], 0
            for stem in sorted(files):
                batch.append(self._rebuild(Path(folder) / f"{stem}.jsonl", files[stem], folder))
                size += batch[-1].stat().st_size
                if size >= BATCH_BYTES:
                    yield batch
                    for done in batch:
                        done.unlink()
                    batch, size = [], 0
            if batch:
                yield batch

    def outcomes(self) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        conflicting: set[str] = set()
        with tracking_errors(self.uri), tempfile.TemporaryDirectory() as folder:
            for run in self._runs(TAG_OUTCOMES_MODEL_NAME):
                for chunk in self._chunks(run, OUTCOMES_DIR):
                    add_outcomes(self._download(chunk, folder), outcomes, conflicting)
        self.conflicting_outcomes = len(conflicting)
        return outcomes

    def _runs(self, tag: str) -> list:
        """The active runs of the project's experiment whose ``tag`` names the model."""
        experiment = self.client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment.experiment_id], f"tags.{tag} = '{MODEL_NAME}'", page_token=token
            )
            runs += page
            token = page.token
            if not token:
                return runs

    def _chunks(self, run, folder: str) -> list[Chunk]:
        """The chunks under ``folder`` of ``run`` that count (:func:`longest_chunks`)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repository = get_artifact_repository(run.info.artifact_uri, tracking_uri=self.uri)
        names = [Path(info.path).name for info in repository.list_artifacts(folder)]
        return [
            Chunk(repository, f"{folder}/{match[0]}", match["stem"], int(match["start"]))
            for match in longest_chunks(names)
        ]

    @staticmethod
    def _download(chunk: Chunk, folder: str) -> bytes:
        """A chunk's bytes (through a file in ``folder``, deleted)."""
        local = Path(chunk.repository.download_artifacts(chunk.path, folder))
        try:
            return local.read_bytes()
        finally:
            local.unlink()

    def _rebuild(self, path: Path, chunks: list[Chunk], folder: str) -> Path:
        """Write a log file's records from its ``chunks`` (in the order they were logged), each
        prediction id once, to ``path``."""
        seen: set[bytes] = set()
        with tracking_errors(self.uri), path.open("wb") as output:
            for chunk in sorted(chunks, key=lambda chunk: chunk.start):
                kept = []
                for line in self._download(chunk, folder).splitlines(keepends=True):
                    found = PREDICTION_ID.search(line)
                    if found is not None:
                        if found[1] in seen:
                            continue
                        seen.add(found[1])
                    kept.append(line)
                output.write(b"".join(kept))
        return path
