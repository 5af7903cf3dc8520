"""The data and model stages as functions: files in, files out, settings from ``params.yaml``.

The fourth stage, ``register``, is :func:`credit_risk.tracking.register`. Each stage runs in a
process of its own, so each imports scikit-learn (over a second) only if it uses it.
"""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from credit_risk.contract import FEATURE_NAMES, TARGET
from credit_risk.files import (
    FINGERPRINT,
    METRICS,
    MODEL,
    MODEL_INFO,
    PLOTS,
    PREPARED,
    SPLIT_COLUMN,
    write_json,
)
from credit_risk.fingerprint import describe_dataset


def prepare(params: dict) -> str:
    """Validate the raw CSV, rename to canonical columns, assign the train/test split."""
    from credit_risk.data import load_applicants, split_applicants

    applicants = load_applicants(params["data"]["raw"])
    settings = params["prepare"]
    applicants[SPLIT_COLUMN] = split_applicants(
        applicants, float(settings["test_size"]), int(settings["seed"])
    )
    PREPARED.parent.mkdir(parents=True, exist_ok=True)
    applicants.to_parquet(PREPARED, index=False)
    counts = applicants[SPLIT_COLUMN].value_counts()
    return f"{len(applicants)} rows valid: {counts['train']} train, {counts['test']} test"


def fingerprint(params: dict) -> str:
    """Hash the prepared dataset's values (see :mod:`credit_risk.fingerprint`)."""
    record = describe_dataset(pd.read_parquet(PREPARED).drop(columns=SPLIT_COLUMN))
    write_json(FINGERPRINT, record)
    return f"dataset sha256 {record['sha256']} ({record['rows']} rows)"


def train(params: dict) -> str:
    """Fit the model on the train split, evaluate it on the test split."""
    from credit_risk.evaluate import classification_metrics, curves
    from credit_risk.model import build_model, predict_default_probability, save_model

    settings = params["train"]
    train_rows, test_rows = read_splits()
    model = build_model(settings)
    model.fit(train_rows.loc[:, FEATURE_NAMES], train_rows[TARGET])
    probability = predict_default_probability(model, test_rows.loc[:, FEATURE_NAMES])

    save_model(model, MODEL)
    write_json(MODEL_INFO, {"model": settings["model"], "model_fingerprint": _sha256(probability)})
    metrics = classification_metrics(test_rows[TARGET].to_numpy(), probability)
    write_json(METRICS, metrics)
    plot_data = curves(test_rows[TARGET].to_numpy(), probability, int(settings["calibration_bins"]))
    for name, records in plot_data.items():
        write_json(PLOTS / f"{name}.json", records)
    return f"{settings['model']}: test ROC AUC {metrics['roc_auc']:.4f}"


def read_splits(root: Path = Path()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prepared train and test rows of the project at ``root``."""
    applicants = pd.read_parquet(root / PREPARED)
    is_test = applicants[SPLIT_COLUMN] == "test"
    return applicants[~is_test], applicants[is_test]


def _sha256(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()
