"""Counting the prediction log: a stream of blocks of records; the drift report's tally.

A :class:`LogStream` reads log files in blocks of complete lines; a block is usually parsed with
one ``orjson`` call (a subclass may cut parts it does not need out of the block first), and its
records handed to the subclass as numpy columns. A block holding a line that is not a record,
or records that are not all used (another model version, outside the window), is parsed line by
line: bad lines (torn, corrupt) are counted and skipped. A :class:`Tally` keeps only counts:
bins against a reference profile, reason codes (found by a regular expression), days.
:func:`merged_tally` tallies the files one per core at a time, a batch of files after the other.
"""

import gzip
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from operator import itemgetter
from pathlib import Path

import numpy as np
import orjson

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES
from credit_risk.ml.profile import bin_count, bin_indices
from credit_risk.monitoring.window import bound_texts, within

BLOCK_BYTES = 4 * 1024 * 1024
FEATURE_VALUES = itemgetter(*FEATURE_NAMES)
MODEL_VERSION = itemgetter("model_version")
REASONS = re.compile(rb'"reasons":\[[^\]]*\],')
CODE = re.compile(rb'"code":"([^"]*)"')
BAD_RECORD = (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError)


def without_reasons(block: bytes) -> bytes:
    """A block without its reason lists (their codes are found by :data:`CODE`): faster to
    parse."""
    return REASONS.sub(b"", block)


def line_blocks(path: Path, tally: "LogStream"):
    """The complete lines of a log file (``.gz`` too), a block of them at a time, without the
    last newline; a last line without its newline (torn) is counted in ``tally``."""
    opener = gzip.open if path.suffix == ".gz" else open
    rest = b""
    with opener(path, "rb") as stream:
        while block := stream.read(BLOCK_BYTES):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut > 1:
                yield data[: cut - 1]
    if rest.strip():
        tally.corrupt += 1


class LogStream:
    """The usable records (one model version, a date window) of log blocks, for a subclass to
    count: :meth:`_columns` turns records into arrays, :meth:`_count` counts them."""

    USE = "the one asked for"
    """Why this version's records are read (for an error naming the versions found)."""
    START_METHOD = "fork"
    """How :func:`merged_tally` starts its workers: ``spawn`` for a stream that calls OpenMP
    code (a forked child of a process that already ran OpenMP threads can hang in it)."""

    def __init__(self, version: str, since: date | None, until: date | None):
        self.version = version
        self.since, self.until = bound_texts(since, until)
        self.window = (
            f"between {self.since or 'the start'} and {until.isoformat() if until else 'now'}"
        )
        self.versions: Counter = Counter()
        self.records = self.corrupt = self.outside = 0

    def merge(self, other: "LogStream") -> None:
        """Add the record counts of another stream of the same version and window."""
        self.versions.update(other.versions)
        self.records += other.records
        self.corrupt += other.corrupt
        self.outside += other.outside

    def add_block(self, block: bytes) -> None:
        """Count a block of lines. Usually with one parse of the block (as cut by
        :meth:`_parsed_part`) when all of its records are used; else line by line."""
        try:
            records = orjson.loads(b"[" + self._parsed_part(block).replace(b"\n", b",") + b"]")
            if len(self._usable(records)) == len(records):
                self._add(records, self._columns(records, block))
                return
        except BAD_RECORD:
            pass
        self.add_lines(block.split(b"\n"))

    def add_lines(self, lines: list[bytes]) -> None:
        """Parse and count lines one by one, skipping (and counting) those that are not records."""
        good = []
        for line in lines:
            try:
                record = orjson.loads(line)
                self._columns([record])
                if not isinstance(MODEL_VERSION(record), str):
                    raise TypeError("model_version is not a string")
                good.append(record)
            except BAD_RECORD:
                self.corrupt += 1
        self._add(good, self._columns(self._usable(good)))

    def _parsed_part(self, block: bytes) -> bytes:
        """What of a block is parsed in one go (all of it unless a subclass cuts something)."""
        return block

    def _usable(self, records: list[dict]) -> list[dict]:
        """The records of this model version within the window (others only counted)."""
        versions = Counter(map(MODEL_VERSION, records))
        mine = records
        if set(versions) != {self.version}:
            mine = [record for record in records if record["model_version"] == self.version]
        since, until = self.since, self.until
        return [r for r in mine if within(r["timestamp"], since, until)]

    def _columns(self, records: list[dict], block: bytes | None = None) -> dict:
        """The values of ``records`` (parsed from ``block`` if given) as arrays; raises if a
        record lacks one or has a bad one. ``day`` is required."""
        raise NotImplementedError

    def _add(self, records: list[dict], columns: dict) -> None:
        versions = Counter(map(MODEL_VERSION, records))
        count = len(columns["day"])
        self.versions.update(versions)
        self.outside += versions[self.version] - count
        if count:
            self.records += count
            self._count(columns, count)

    def _count(self, columns: dict, count: int) -> None:
        """Count ``count`` usable records given as :meth:`_columns`."""
        raise NotImplementedError


class Tally(LogStream):
    """Bin counts, reason codes and daily totals of the usable records of one model version."""

    USE = "whose reference profile is used"

    def __init__(self, profile: dict, version: str, since: date | None, until: date | None):
        super().__init__(version, since, until)
        self.profile = profile
        self.entries = [profile["features"][name] for name in FEATURE_NAMES]
        self.features = np.zeros((len(FEATURES), max(map(bin_count, self.entries))), "int64")
        self.probability = np.zeros(bin_count(profile["probability"]), "int64")
        self.score = np.zeros(bin_count(profile["score"]), "int64")
        self.reasons: Counter = Counter()
        self.days: dict[str, np.ndarray] = {}

    def merge(self, other: "Tally") -> None:
        """Add the counts of another tally of the same profile, version and window."""
        super().merge(other)
        for name in ("features", "probability", "score"):
            getattr(self, name)[...] += getattr(other, name)
        self.reasons.update(other.reasons)
        for day, row in other.days.items():
            self.days[day] = self.days.get(day, 0) + row

    _parsed_part = staticmethod(without_reasons)

    def _columns(self, records: list[dict], block: bytes | None = None) -> dict:
        if block is None:
            codes = Counter(reason["code"] for r in records for reason in r["reasons"])
        else:
            found = Counter(CODE.findall(block))
            codes = Counter({code.decode(): count for code, count in found.items()})
        return {
            "inputs": np.array([FEATURE_VALUES(r["inputs"]) for r in records], "float64"),
            "probability": np.array([r["probability"] for r in records], "float64"),
            "prediction": np.array([r["prediction"] for r in records], "int64"),
            "score": np.array([r["score"] for r in records], "float64"),
            "day": [r["timestamp"][:10] for r in records],
            "codes": codes,
        }

    def _count(self, columns: dict, count: int) -> None:
        inputs = columns["inputs"].reshape(count, len(FEATURES))
        for i, entry in enumerate(self.entries):
            bins = bin_indices(inputs[:, i], entry["edges"], entry["sentinel_codes"])
            self.features[i] += np.bincount(bins, minlength=self.features.shape[1])
        for name in ("probability", "score"):
            entry, counts = self.profile[name], getattr(self, name)
            bins = bin_indices(columns[name], entry["edges"], entry["sentinel_codes"])
            counts += np.bincount(bins, minlength=len(counts))
        self.reasons.update(columns["codes"])
        days, index = np.unique(np.array(columns["day"]), return_inverse=True)
        sums = np.stack(
            [
                np.bincount(index, minlength=len(days)),
                np.bincount(index, columns["prediction"], minlength=len(days)),
                np.bincount(index, columns["probability"], minlength=len(days)),
            ],
            axis=1,
        )
        for day, row in zip(days.tolist(), sums, strict=True):
            self.days[day] = self.days.get(day, 0) + row


def stream_file(task: tuple) -> LogStream:
    """The stream of one log file (``task``: the file, the :class:`LogStream` class and its
    arguments), all blocks added."""
    path, kind, *arguments = task
    stream = kind(*arguments)
    for block in line_blocks(path, stream):
        stream.add_block(block)
    return stream


def merged_tally(
    total: LogStream, batches: Iterable[list[Path]], kind: type, *arguments
) -> LogStream:
    """``total`` with the streams (``kind(*arguments)``) of the files of ``batches`` merged in,
    one file per core at a time (forked workers), each batch done before the next is asked for."""
    pool = None
    try:
        for files in batches:
            tasks = [(path, kind, *arguments) for path in files]
            if pool is None and min(os.cpu_count() or 1, len(files)) > 1:
                context = multiprocessing.get_context(kind.START_METHOD)
                pool = ProcessPoolExecutor(os.cpu_count(), mp_context=context)
            for counted in pool.map(stream_file, tasks) if pool else map(stream_file, tasks):
                total.merge(counted)
    finally:
        if pool is not None:
            pool.shutdown()
    return total
