"""Realized performance: how well each served model version ranked and calibrated the logged
applicants whose outcomes are known.

The prediction log (a directory, or the log shipped to MLflow:
:mod:`credit_risk.monitoring.log_source`) is read line by line (one file in memory at a time); of
each record only its
version, day, probability and score are kept, and only when its outcome is known (such a
prediction id found twice counts once), so memory grows with the outcomes, not with the log.
Per version: ROC AUC with DeLong's 95 % interval, Gini, KS, the expected calibration error over
the same quantile bands the gate uses (``train.calibration_bins``), the table of those score
bands (predicted against observed default rate), the default rate by month of application, and
the decisions with and without outcomes.
"""

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import orjson
from sklearn.metrics import roc_curve

from credit_risk.ml.auc_comparison import auc_interval
from credit_risk.ml.evaluation import expected_calibration_error
from credit_risk.monitoring.log_source import LogSource
from credit_risk.monitoring.outcome_records import Outcome
from credit_risk.monitoring.window import bound_texts, within


class PerformanceError(ValueError):
    """Nothing to measure: no logged predictions in the window, or no outcomes for them."""


@dataclass
class Cohort:
    """One model version's logged decisions in the window, the ones with outcomes kept."""

    without_outcome: int = 0
    probabilities: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    defaulted: list = field(default_factory=list)
    months: list = field(default_factory=list)


@dataclass
class LogCohorts:
    """The cohorts of a log by model version, and what of the log was not used."""

    versions: dict = field(default_factory=dict)
    corrupt_lines: int = 0
    outside_window: int = 0
    repeated_ids: int = 0


def read_cohorts(
    log: LogSource, outcomes: dict[str, Outcome], since: date | None, until: date | None
) -> LogCohorts:
    """Each version's decisions of ``log`` within the window."""
    first, last = bound_texts(since, until)
    cohorts, seen = LogCohorts(), set()
    for line in log.lines():
        try:
            record = orjson.loads(line)
            timestamp, identifier = record["timestamp"], record["prediction_id"]
            version = str(record["model_version"])
        except (ValueError, KeyError, TypeError):
            cohorts.corrupt_lines += 1
            continue
        if not within(timestamp, first, last):
            cohorts.outside_window += 1
            continue
        cohort = cohorts.versions.setdefault(version, Cohort())
        outcome = outcomes.get(identifier)
        if outcome is None:
            cohort.without_outcome += 1
            continue
        if identifier in seen:
            cohorts.repeated_ids += 1
            continue
        seen.add(identifier)
        cohort.probabilities.append(record["probability"])
        cohort.scores.append(record["score"])
        cohort.defaulted.append(outcome.defaulted)
        cohort.months.append(timestamp[:7])
    return cohorts


def score_bands(cohort: Cohort, bands: int) -> list[dict]:
    """The cohort cut into ``bands`` groups of (nearly) equal size by predicted probability,
    best scores first: each band's score range, decisions, defaults, mean predicted
    probability and observed default rate."""
    probability = np.asarray(cohort.probabilities, dtype="float64")
    defaulted = np.asarray(cohort.defaulted, dtype="int64")
    scores = np.asarray(cohort.scores, dtype="int64")
    rows = []
    for group in np.array_split(np.argsort(probability, kind="stable"), bands):
        if len(group):
            rows.append({
                "scores": f"{scores[group].min()}–{scores[group].max()}",
                "decisions": len(group),
                "defaults": int(defaulted[group].sum()),
                "predicted_default_rate": round(float(probability[group].mean()), 6),
                "observed_default_rate": round(float(defaulted[group].mean()), 6),
            })  # fmt: skip
    return rows


def by_month(cohort: Cohort) -> list[dict]:
    """Decisions with outcomes, defaults and the two default rates by month of application."""
    months = np.asarray(cohort.months)
    probability = np.asarray(cohort.probabilities, dtype="float64")
    defaulted = np.asarray(cohort.defaulted, dtype="int64")
    rows = []
    for month in sorted(set(cohort.months)):
        chosen = months == month
        rows.append({
            "month": month,
            "decisions": int(chosen.sum()),
            "defaults": int(defaulted[chosen].sum()),
            "predicted_default_rate": round(float(probability[chosen].mean()), 6),
            "observed_default_rate": round(float(defaulted[chosen].mean()), 6),
        })  # fmt: skip
    return rows


def ranking(cohort: Cohort, calibration_bins: int) -> dict | None:
    """ROC AUC (DeLong 95 % interval), Gini, KS and calibration error; None without both a
    default and a non-default."""
    defaulted = np.asarray(cohort.defaulted, dtype="int64")
    if defaulted.min() == defaulted.max():
        return None
    probability = np.asarray(cohort.probabilities, dtype="float64")
    interval = auc_interval(defaulted, probability)
    fpr, tpr, _ = roc_curve(defaulted, probability)
    error = expected_calibration_error(defaulted, probability, calibration_bins)
    return {
        "roc_auc": round(interval.auc, 6),
        "roc_auc_low": round(interval.low, 6),
        "roc_auc_high": round(interval.high, 6),
        "gini": round(2 * interval.auc - 1, 6),
        "ks": round(float(np.max(tpr - fpr)), 6),
        "calibration_error": round(error, 6),
    }


def judged(realized: dict | None, outcomes: int, test: dict | None, limits: dict) -> tuple:
    """``("within" | "degraded" | "too few outcomes", [why])`` of one version."""
    if realized is None or outcomes < limits["min_outcomes"]:
        need = f"{outcomes} outcomes, performance.min_outcomes is {limits['min_outcomes']}"
        return "too few outcomes", [need if realized else f"{need}; needs both outcomes"]
    why = []
    if test is not None and realized["roc_auc"] < test["roc_auc"] - limits["max_auc_drop"]:
        why.append(
            f"ROC AUC {realized['roc_auc']:.4f} is more than performance.max_auc_drop "
            f"{limits['max_auc_drop']:g} below the test split's {test['roc_auc']:.4f}"
        )
    if realized["calibration_error"] > limits["max_calibration_error"]:
        why.append(
            f"calibration error {realized['calibration_error']:.4f} is above "
            f"register.max_calibration_error {limits['max_calibration_error']:g}"
        )
    return ("degraded", why) if why else ("within", [])


def version_summary(version: str, cohort: Cohort, test: dict | None, limits: dict) -> dict:
    """The machine-readable performance of one version (an entry of ``performance.json``)."""
    outcomes = len(cohort.defaulted)
    realized = ranking(cohort, limits["calibration_bins"]) if outcomes else None
    status, why = judged(realized, outcomes, test, limits)
    defaults = int(sum(cohort.defaulted))
    return {
        "model_version": version,
        "status": status,
        "why": why,
        "decisions": outcomes + cohort.without_outcome,
        "with_outcome": outcomes,
        "without_outcome": cohort.without_outcome,
        "defaults": defaults,
        "default_rate": round(defaults / outcomes, 6) if outcomes else None,
        "realized": realized,
        "test": test,
        "score_bands": score_bands(cohort, limits["calibration_bins"]) if outcomes else [],
        "by_month": by_month(cohort) if outcomes else [],
    }
