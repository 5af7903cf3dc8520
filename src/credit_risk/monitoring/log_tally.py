"""Counting the prediction log against a reference profile: bins, reason codes, days.

A :class:`Tally` keeps only counts. Log files are read in blocks of complete lines; a block is
usually parsed with one ``orjson`` call after its reason lists are cut out (the codes are found
by a regular expression), and binned with numpy. A block holding a line that is not a record,
or records that are not all used (another model version, outside the window), is parsed line by
line: bad lines (torn, corrupt) are counted and skipped.
"""

import gzip
import re
from collections import Counter
from datetime import date
from operator import itemgetter
from pathlib import Path

import numpy as np
import orjson

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES
from credit_risk.ml.profile import bin_count, bin_indices

BLOCK_BYTES = 4 * 1024 * 1024
FEATURE_VALUES = itemgetter(*FEATURE_NAMES)
MODEL_VERSION = itemgetter("model_version")
REASONS = re.compile(rb'"reasons":\[[^\]]*\],')
CODE = re.compile(rb'"code":"([^"]*)"')
BAD_RECORD = (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError)


def line_blocks(path: Path, tally: "Tally"):
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


class Tally:
    """Bin counts, reason codes and daily totals of the usable records of one model version."""

    def __init__(self, profile: dict, version: str, since: date | None, until: date | None):
        self.profile, self.version = profile, version
        self.since = since.isoformat() if since else ""
        self.until = until.isoformat() if until else "9999-12-31"
        self.entries = [profile["features"][name] for name in FEATURE_NAMES]
        self.features = np.zeros((len(FEATURES), max(map(bin_count, self.entries))), "int64")
        self.probability = np.zeros(bin_count(profile["probability"]), "int64")
        self.score = np.zeros(bin_count(profile["score"]), "int64")
        self.reasons: Counter = Counter()
        self.days: dict[str, np.ndarray] = {}
        self.versions: Counter = Counter()
        self.records = self.corrupt = self.outside = 0

    def merge(self, other: "Tally") -> None:
        """Add the counts of another tally of the same profile, version and window."""
        for name in ("features", "probability", "score"):
            getattr(self, name)[...] += getattr(other, name)
        for name in ("reasons", "versions"):
            getattr(self, name).update(getattr(other, name))
        for day, row in other.days.items():
            self.days[day] = self.days.get(day, 0) + row
        self.records += other.records
        self.corrupt += other.corrupt
        self.outside += other.outside

    def add_block(self, block: bytes) -> None:
        """Count a block of lines. Usually with one parse of the block without its reason
        lists, the codes found by a regular expression (all of the block's records are used);
        else line by line."""
        try:
            records = orjson.loads(b"[" + REASONS.sub(b"", block).replace(b"\n", b",") + b"]")
            if len(self._usable(records)) == len(records):
                codes = Counter(CODE.findall(block))
                codes = Counter({code.decode(): count for code, count in codes.items()})
                self._add(records, self._columns(records, codes))
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

    def _usable(self, records: list[dict]) -> list[dict]:
        """The records of this model version within the window (others only counted)."""
        versions = Counter(map(MODEL_VERSION, records))
        mine = records
        if set(versions) != {self.version}:
            mine = [record for record in records if record["model_version"] == self.version]
        since, until = self.since, self.until
        return [r for r in mine if since <= r["timestamp"][:10] <= until]

    def _columns(self, records: list[dict], codes: Counter | None = None) -> dict:
        """The values of ``records`` as arrays (``codes``: how often each reason code was given,
        if known); raises if a record lacks one or has a bad one."""
        return {
            "inputs": np.array([FEATURE_VALUES(r["inputs"]) for r in records], "float64"),
            "probability": np.array([r["probability"] for r in records], "float64"),
            "prediction": np.array([r["prediction"] for r in records], "int64"),
            "score": np.array([r["score"] for r in records], "float64"),
            "day": [r["timestamp"][:10] for r in records],
            "codes": Counter(reason["code"] for r in records for reason in r["reasons"])
            if codes is None
            else codes,
        }

    def _add(self, records: list[dict], columns: dict) -> None:
        versions = Counter(map(MODEL_VERSION, records))
        count = len(columns["day"])
        self.versions.update(versions)
        self.outside += versions[self.version] - count
        if not count:
            return
        self.records += count
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


def tally_file(task: tuple) -> Tally:
    """The tally of one log file (``task``: the file and :class:`Tally`'s arguments)."""
    path, *arguments = task
    tally = Tally(*arguments)
    for block in line_blocks(path, tally):
        tally.add_block(block)
    return tally
