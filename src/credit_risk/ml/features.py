"""Feature preparation that runs inside the model's sklearn Pipeline, and the risk direction
of every model input (the contract's features and the derived ones)."""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES, is_past_due_code

_PAST_DUE = [i for i, f in enumerate(FEATURES) if f.sentinel_codes]
_DEBT_RATIO = FEATURE_NAMES.index("DebtRatio")
_INCOME = FEATURE_NAMES.index("MonthlyIncome")

DERIVED_FEATURES = ("DebtDollarsWithoutIncome", "TotalPastDue", "PastDueCodeReported")
DERIVED_MONOTONE = {
    "DebtDollarsWithoutIncome": (+1, "more monthly debt never lowers risk"),
    "TotalPastDue": (+1, "more late payments of any kind never lower risk"),
    "PastDueCodeReported": (0, "a code means the counts are unknown, not high or low"),
}
"""Direction and reason of each derived input, as :class:`~credit_risk.ml.contract.Feature`
declares them for the others. They agree: each contract feature moves every derived input it
feeds in its own direction, so the model is monotone in the contract features themselves."""


def monotonic_constraints() -> list[int]:
    """``monotonic_cst`` for HistGradientBoosting, in the order of the model's inputs."""
    return [f.monotone for f in FEATURES] + [DERIVED_MONOTONE[n][0] for n in DERIVED_FEATURES]


class CreditFeatures(TransformerMixin, BaseEstimator):
    """Turn the ten contract features into model inputs; stateless.

    - A past-due count holding a code (96, 98) instead of a count becomes NaN, and
      ``PastDueCodeReported`` is 1 for that applicant.
    - ``DebtRatio`` is a ratio only when ``MonthlyIncome`` is known; without income the data
      holds monthly debt in dollars there. So ``DebtRatio`` becomes NaN without income, and
      ``DebtDollarsWithoutIncome`` holds those dollars (NaN when income is known).
    - ``TotalPastDue`` sums the three past-due counts.

    Input: a DataFrame with the contract's columns (any order) or an array in contract order.
    Output: a float64 array, columns as ``get_feature_names_out()``.
    """

    def fit(self, X, y=None):
        self._as_array(X)
        return self

    def transform(self, X):
        values = self._as_array(X).copy()
        past_due = values[:, _PAST_DUE]
        is_code = is_past_due_code(past_due)
        past_due[is_code] = np.nan
        values[:, _PAST_DUE] = past_due

        has_income = ~np.isnan(values[:, _INCOME])
        debt = values[:, _DEBT_RATIO].copy()
        values[:, _DEBT_RATIO] = np.where(has_income, debt, np.nan)
        derived = np.column_stack(
            [
                np.where(has_income, np.nan, debt),
                past_due.sum(axis=1),
                is_code.any(axis=1).astype("float64"),
            ]
        )
        return np.hstack([values, derived])

    def get_feature_names_out(self, input_features=None):
        return np.asarray([*FEATURE_NAMES, *DERIVED_FEATURES], dtype=object)

    def __sklearn_is_fitted__(self):
        return True

    @staticmethod
    def _as_array(X) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [name for name in FEATURE_NAMES if name not in X.columns]
            if missing:
                raise ValueError(f"missing feature column(s): {', '.join(missing)}")
            X = X.loc[:, list(FEATURE_NAMES)]
        values = np.asarray(X, dtype="float64")
        if values.ndim != 2 or values.shape[1] != len(FEATURE_NAMES):
            raise ValueError(
                f"expected {len(FEATURE_NAMES)} feature columns, got shape {values.shape}"
            )
        return values
