"""Held-out evaluation: the metrics and the curve data DVC plots."""

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

CURVE_POINTS = 200
"""Curves are cut to about this many points so the plot files stay small."""


def expected_calibration_error(y_true: np.ndarray, probability: np.ndarray, bins: int) -> float:
    """The mean gap between predicted and observed default rates over ``bins`` quantile bins.

    The rows are sorted by predicted probability and cut into ``bins`` groups of (nearly)
    equal size; the error is the row-weighted mean of ``|mean predicted - observed rate|``.
    """
    order = np.argsort(probability, kind="stable")
    gaps = [
        len(group) * abs(probability[group].mean() - y_true[group].mean())
        for group in np.array_split(order, bins)
        if len(group)
    ]
    return float(sum(gaps) / len(probability))


def classification_metrics(
    y_true: np.ndarray, probability: np.ndarray, calibration_bins: int
) -> dict[str, float]:
    """ROC AUC, Gini, KS, Brier score, log loss, PR AUC (average precision) and the expected
    calibration error over ``calibration_bins`` quantile bins."""
    fpr, tpr, _ = roc_curve(y_true, probability)
    auc = roc_auc_score(y_true, probability)
    return {
        "roc_auc": float(auc),
        "gini": float(2 * auc - 1),
        "ks": float(np.max(tpr - fpr)),
        "brier": float(brier_score_loss(y_true, probability)),
        "log_loss": float(log_loss(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
        "calibration_error": expected_calibration_error(y_true, probability, calibration_bins),
    }


def curves(y_true: np.ndarray, probability: np.ndarray, calibration_bins: int) -> dict:
    """ROC, precision-recall and calibration curves as lists of records for ``dvc plots``."""
    fpr, tpr, roc_thresholds = roc_curve(y_true, probability)
    precision, recall, pr_thresholds = precision_recall_curve(y_true, probability)
    observed, predicted = calibration_curve(
        y_true, probability, n_bins=calibration_bins, strategy="quantile"
    )
    return {
        "roc": _records(fpr=fpr, tpr=tpr, threshold=np.minimum(roc_thresholds, 1.0)),
        "precision_recall": _records(
            recall=recall[:-1], precision=precision[:-1], threshold=pr_thresholds
        ),
        "calibration": _records(predicted=predicted, observed=observed),
    }


def _records(**columns: np.ndarray) -> list[dict[str, float]]:
    """Rows of the given equal-length columns, thinned evenly to about ``CURVE_POINTS``."""
    length = len(next(iter(columns.values())))
    keep = np.unique(np.linspace(0, length - 1, min(length, CURVE_POINTS)).round().astype(int))
    return [{name: round(float(values[i]), 6) for name, values in columns.items()} for i in keep]
