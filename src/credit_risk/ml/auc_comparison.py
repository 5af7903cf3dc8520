"""ROC AUCs with confidence intervals: one model's, and two models' paired difference on the
same rows.

DeLong's test (DeLong, DeLong & Clarke-Pearson 1988, in Sun & Xu's 2014 O(n log n) form) rather
than a paired bootstrap: it is exact arithmetic on the rows, so the interval is the same on
every run and machine without a seed to record; it costs one ranking per model instead of
thousands of resamples; and it is the test model validators expect for correlated AUCs.
"""

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class AucComparison:
    """A candidate's and a baseline's ROC AUC on the same ``rows``; ``difference`` is
    candidate minus baseline, within [``low``, ``high``] at ``confidence``."""

    rows: int
    candidate_auc: float
    baseline_auc: float
    difference: float
    low: float
    high: float
    confidence: float

    def describe(self) -> str:
        """``difference +0.0019 (95% CI -0.0010 to +0.0048)``."""
        return (
            f"difference {self.difference:+.4f} ({self.confidence:.0%} CI {self.low:+.4f} to "
            f"{self.high:+.4f})"
        )


@dataclass(frozen=True)
class AucInterval:
    """One model's ROC AUC on ``rows``, within [``low``, ``high``] at ``confidence``."""

    rows: int
    auc: float
    low: float
    high: float
    confidence: float


def delong_components(labels: np.ndarray, scores: np.ndarray):
    """Each score row's AUC and DeLong's structural components over the positives and the
    negatives (``scores``: one row per model, one column per labelled row)."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("a ROC AUC needs both outcomes among the rows")
    positives, negatives = scores[:, labels], scores[:, ~labels]
    m, n = positives.shape[1], negatives.shape[1]
    within_positives = rankdata(positives, axis=1)
    within_negatives = rankdata(negatives, axis=1)
    overall = rankdata(np.hstack([positives, negatives]), axis=1)
    aucs = (overall[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    positive_components = (overall[:, :m] - within_positives) / n
    negative_components = 1 - (overall[:, m:] - within_negatives) / m
    return aucs, positive_components, negative_components


def half_width(variance: float, confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2) * np.sqrt(max(variance, 0.0)))


def auc_interval(labels: np.ndarray, probability: np.ndarray, confidence: float = 0.95):
    """DeLong's confidence interval of one probability column's ROC AUC (clipped to [0, 1])."""
    scores = np.asarray(probability, dtype="float64")[np.newaxis, :]
    aucs, positive, negative = delong_components(labels, scores)
    m, n = positive.shape[1], negative.shape[1]
    variance = float(np.var(positive, ddof=1) / m + np.var(negative, ddof=1) / n)
    auc, width = float(aucs[0]), half_width(variance, confidence)
    return AucInterval(m + n, auc, max(auc - width, 0.0), min(auc + width, 1.0), confidence)


def paired_auc_comparison(
    labels: np.ndarray, candidate: np.ndarray, baseline: np.ndarray, confidence: float = 0.95
) -> AucComparison:
    """DeLong's comparison of two probability columns scored on the same labelled rows."""
    scores = np.vstack([candidate, baseline]).astype("float64")
    aucs, positive_components, negative_components = delong_components(labels, scores)
    m, n = positive_components.shape[1], negative_components.shape[1]
    covariance = np.cov(positive_components) / m + np.cov(negative_components) / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = float(aucs[0] - aucs[1])
    width = half_width(variance, confidence)
    return AucComparison(
        rows=m + n,
        candidate_auc=float(aucs[0]),
        baseline_auc=float(aucs[1]),
        difference=difference,
        low=difference - width,
        high=difference + width,
        confidence=confidence,
    )
