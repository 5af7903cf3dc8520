"""Applicants as the scoring API takes them, from a table with the contract's columns."""

import numpy as np
import pandas as pd

from credit_risk.ml.contract import FEATURES


def api_bodies(applicants: pd.DataFrame) -> list[dict]:
    """One ``/predict`` body per row: whole numbers as ints, missing values as ``None``."""
    columns = []
    for feature in FEATURES:
        values = applicants[feature.name].to_numpy("float64")
        column = values.astype(object)
        present = ~np.isnan(values)
        if feature.integer:
            column[present] = values[present].astype(int)
        column[~present] = None
        columns.append(column.tolist())
    names = [feature.name for feature in FEATURES]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
