"""Drift of the served population: the prediction log measured against a reference profile.

:func:`measure_drift` streams the log files in blocks of lines (one file per core at
a time), parses each block with one ``orjson`` call, bins it with numpy and keeps only counts,
so memory does not grow with the log.
Lines that are not prediction records (torn, corrupt) are skipped and counted; records of other
model versions and outside the date window are counted, not used. The population stability
index (PSI) of every feature, of the probability and of the score compares the shares of the
reference's bins: ``sum((current - reference) * ln(current / reference))``, shares floored at
:data:`EPSILON` so that an empty bin does not make it infinite.
"""

import gzip
import multiprocessing
import os
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from operator import itemgetter
from pathlib import Path

import numpy as np
import orjson

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES
from credit_risk.ml.profile import bin_count, bin_indices, reference_decline_rate
from credit_risk.serving.prediction_log import log_files

EPSILON = 1e-4
BLOCK_BYTES = 4 * 1024 * 1024
STATUSES = ("stable", "watch", "significant")
FEATURE_VALUES = itemgetter(*FEATURE_NAMES)
MODEL_VERSION = itemgetter("model_version")
REASONS = re.compile(rb'"reasons":\[[^\]]*\],')
CODE = re.compile(rb'"code":"([^"]*)"')
BAD_RECORD = (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError)


class DriftError(ValueError):
    """The log cannot be measured against the profile (nothing to read, wrong model version)."""


def psi(reference, current) -> float:
    """Population stability index of two distributions over the same bins (shares)."""
    ref = np.maximum(np.asarray(reference, dtype="float64"), EPSILON)
    cur = np.maximum(np.asarray(current, dtype="float64"), EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def status(value: float, thresholds: dict) -> str:
    """``stable`` below ``psi_watch``, ``significant`` above ``psi_significant``, else ``watch``."""
    if value > thresholds["psi_significant"]:
        return "significant"
    return "watch" if value >= thresholds["psi_watch"] else "stable"


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
                self._add(records, self._columns(records, CODE.findall(block)))
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

    def _columns(self, records: list[dict], codes: list | None = None) -> dict:
        """The values of ``records`` as arrays (``codes``: their reason codes, if known);
        raises if a record lacks one or has a bad one."""
        return {
            "inputs": np.array([FEATURE_VALUES(r["inputs"]) for r in records], "float64"),
            "probability": np.array([r["probability"] for r in records], "float64"),
            "prediction": np.array([r["prediction"] for r in records], "int64"),
            "score": np.array([r["score"] for r in records], "float64"),
            "day": [r["timestamp"][:10] for r in records],
            "codes": [reason["code"] for r in records for reason in r["reasons"]]
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


def measure_drift(
    directory: Path, profile: dict, version: str, since: date | None, until: date | None
) -> Tally:
    """Count the log files of ``directory`` against ``profile`` (model ``version``)."""
    files = log_files(directory) if directory.is_dir() else []
    if not files:
        raise DriftError(f"no prediction log files (predictions-*.jsonl) in {directory}")
    tally = Tally(profile, version, since, until)
    tasks = [(path, profile, version, since, until) for path in files]
    workers = min(os.cpu_count() or 1, len(files))
    if workers > 1:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for counted in pool.map(tally_file, tasks):
                tally.merge(counted)
    else:
        tally.merge(tally_file(tasks[0]))
    window = f"between {tally.since or 'the start'} and {until or 'now'}"
    others = {v: n for v, n in sorted(tally.versions.items()) if v != version}
    if not tally.versions[version] and others:
        listed = ", ".join(f"{v} ({n} records)" for v, n in others.items())
        raise DriftError(
            f"{directory}: the log holds predictions of model version {listed}, none of version "
            f"{version}, whose reference profile is used"
        )
    if not tally.records:
        found = sum(tally.versions.values())
        raise DriftError(
            f"{directory}: no predictions of model version {version} {window} ({found} "
            f"records outside it, {tally.corrupt} corrupt lines)"
        )
    return tally


def summary(tally: Tally, thresholds: dict, decision_threshold: float) -> dict:
    """The machine-readable report (``drift.json``) of a tally."""
    profile, n = tally.profile, tally.records

    def compare(entry: dict, counts: np.ndarray) -> dict:
        current = counts[: len(entry["proportions"])] / n
        value = psi(entry["proportions"], current)
        return {
            "psi": round(value, 6),
            "status": status(value, thresholds),
            "bins": entry["labels"],
            "reference": entry["proportions"],
            "current": [round(float(share), 6) for share in current],
        }

    features = {
        name: compare(entry, tally.features[i])
        for i, (name, entry) in enumerate(zip(FEATURE_NAMES, tally.entries, strict=True))
    }
    compared = {"probability": compare(profile["probability"], tally.probability)}
    compared["score"] = compare(profile["score"], tally.score)
    worst = max((c["status"] for c in [*features.values(), *compared.values()]), key=STATUSES.index)
    totals = sum(tally.days.values())
    return {
        "status": worst,
        "records": n,
        "skipped": {
            "corrupt_lines": tally.corrupt,
            "outside_window": tally.outside,
            "other_model_versions": {v: c for v, c in tally.versions.items() if v != tally.version},
        },
        "thresholds": thresholds,
        "features": features,
        **compared,
        "decline_rate": {
            "threshold": decision_threshold,
            "reference": round(reference_decline_rate(profile, decision_threshold), 6),
            "current": round(float(totals[1] / n), 6),
        },
        "mean_probability": {
            "reference": profile["probability"]["mean"],
            "current": round(float(totals[2] / n), 6),
        },
        "daily": [
            {
                "day": day,
                "predictions": int(row[0]),
                "decline_rate": round(float(row[1] / row[0]), 6),
                "mean_probability": round(float(row[2] / row[0]), 6),
            }
            for day, row in sorted(tally.days.items())
        ],
        "reasons": {
            code: {"reference": share, "current": round(tally.reasons[code] / n, 6)}
            for code, share in profile["reasons"].items()
        },
    }
