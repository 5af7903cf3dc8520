"""The model: one sklearn Pipeline holding all preprocessing, built from ``params.yaml``."""

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from credit_risk.ml.features import CreditFeatures, monotonic_constraints

MODEL_TYPES = ("hist_gradient_boosting", "logistic_regression")


def build_model(train_params: dict) -> Pipeline:
    """An unfitted Pipeline for ``train.model`` with that model's params section.

    With ``train.monotone`` (HistGradientBoosting only) the model is constrained to the risk
    directions the feature contract declares (``features.monotonic_constraints``).
    """
    kind = train_params["model"]
    if kind not in MODEL_TYPES:
        raise ValueError(f"params.yaml: train.model must be one of {MODEL_TYPES}, got {kind!r}")
    monotone = train_params.get("monotone", False)
    if not isinstance(monotone, bool):
        raise ValueError(f"params.yaml: train.monotone must be true or false, got {monotone!r}")
    settings = dict(train_params.get(kind) or {})
    seed = train_params["seed"]
    try:
        if kind == "hist_gradient_boosting":
            constraints = monotonic_constraints() if monotone else None
            classifier = HistGradientBoostingClassifier(
                **settings, monotonic_cst=constraints, random_state=seed
            )
            steps = [("classifier", classifier)]
        else:
            steps = [
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
                ("scale", StandardScaler()),
                ("classifier", LogisticRegression(**settings, random_state=seed)),
            ]
    except TypeError as error:
        raise ValueError(f"params.yaml: train.{kind}: {error}") from None
    return Pipeline([("features", CreditFeatures()), *steps])


def predict_default_probability(model: Pipeline, features) -> np.ndarray:
    """Probability of serious delinquency (class 1) for each row."""
    return model.predict_proba(features)[:, 1]
