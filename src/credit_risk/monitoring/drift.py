"""Drift of the served population: the prediction log measured against a reference profile.

:func:`measure_drift` streams the log files (a directory's, or those shipped to MLflow:
:mod:`credit_risk.monitoring.log_source`), one file per core at a time, into counts
(:mod:`credit_risk.monitoring.log_tally`), so memory does not grow with the log. Lines that
are not prediction records (torn, corrupt) are skipped and counted; records of other model
versions and outside the date window are counted, not used. The population stability
index (PSI) of every feature, of the probability and of the score compares the shares of the
reference's bins: ``sum((current - reference) * ln(current / reference))``, shares floored at
:data:`EPSILON` so that an empty bin does not make it infinite.
"""

import itertools
from datetime import date
from pathlib import Path

import numpy as np

from credit_risk.ml.contract import FEATURE_NAMES
from credit_risk.ml.profile import reference_decline_rate
from credit_risk.monitoring.log_source import LogSource, as_log_source
from credit_risk.monitoring.log_tally import LogStream, Tally, merged_tally

EPSILON = 1e-4
STATUSES = ("stable", "watch", "significant")


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


def measure_drift(
    location: Path | LogSource, profile: dict, version: str, since: date | None,
    until: date | None,
) -> Tally:  # fmt: skip
    """Count the log at ``location`` (a directory or the shipped log) against ``profile``
    (model ``version``)."""
    return read_log(location, Tally, profile, version, since, until)


def read_log(location: Path | LogSource, kind: type, *arguments) -> LogStream:
    """The log files at ``location`` (a directory or the shipped log) streamed into
    ``kind(*arguments)``, a :class:`~credit_risk.monitoring.log_tally.LogStream`; raises
    :class:`DriftError` when there are no files, or no usable records (naming the model
    versions found instead)."""
    log = as_log_source(location)
    batches = log.batches()
    first = next(batches, None)
    if first is None:
        raise DriftError(log.no_files())
    tally = merged_tally(kind(*arguments), itertools.chain([first], batches), kind, *arguments)
    version = tally.version
    others = {v: n for v, n in sorted(tally.versions.items()) if v != version}
    if not tally.versions[version] and others:
        listed = ", ".join(f"{v} ({n} records)" for v, n in others.items())
        raise DriftError(
            f"{log}: the log holds predictions of model version {listed}, none of version "
            f"{version}, {kind.USE}"
        )
    if not tally.records:
        found = sum(tally.versions.values())
        raise DriftError(
            f"{log}: no predictions of model version {version} {tally.window} ({found} "
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
