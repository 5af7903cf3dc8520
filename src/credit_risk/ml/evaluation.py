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


def classification_metrics(y_true: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """ROC AUC, Gini, KS, Brier score, log loss and PR AUC (average precision)."""
    fpr, tpr, _ = roc_curve(y_true, probability)
    auc = roc_auc_score(y_true, probability)
    return {
        "roc_auc": float(auc),
        "gini": float(2 * auc - 1),
        "ks": float(np.max(tpr - fpr)),
        "brier": float(brier_score_loss(y_true, probability)),
        "log_loss": float(log_loss(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
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
