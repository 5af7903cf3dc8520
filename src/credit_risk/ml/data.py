"""Read a Kaggle-format applicant CSV, validate it against the feature contract, split it."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES, KAGGLE_TO_CANONICAL, TARGET

MISSING_TOKENS = ("", "NA")
"""Cell texts that mean "no value" (the Kaggle file writes ``NA``)."""


class DataError(ValueError):
    """The input data breaks the feature contract; the message names file, column and line."""


def load_applicants(path: str | Path) -> pd.DataFrame:
    """Read and validate a labelled Kaggle-format CSV.

    Returns one float64 column per feature (canonical names, contract order) and an int64
    target column. Raises :class:`DataError` naming the first problem found.
    """
    path = Path(path)
    table = _read_text_table(path)
    if table.columns[0] not in ("", "Unnamed: 0"):
        raise DataError(
            f"{path}: the first column must be the unnamed row index of the Kaggle format, "
            f"found {table.columns[0]!r}"
        )
    columns = [_canonical_column(path, name) for name in table.columns[1:]]
    table = table.iloc[:, 1:].set_axis(columns, axis=1)
    expected = [*FEATURE_NAMES, TARGET]
    missing = [name for name in expected if name not in columns]
    if missing:
        kaggle = {v: k for k, v in KAGGLE_TO_CANONICAL.items()}
        raise DataError(f"{path}: missing column {kaggle[missing[0]]!r}")
    if table.empty:
        raise DataError(f"{path}: no data rows after the header")

    applicants = pd.DataFrame(
        {feature.name: _parse_feature(path, table, feature) for feature in FEATURES}
    )
    applicants[TARGET] = _parse_target(path, table)
    return applicants


def split_applicants(applicants: pd.DataFrame, test_size: float, seed: int) -> pd.Series:
    """Stratified train/test assignment, one ``"train"``/``"test"`` label per row."""
    if not 0 < test_size < 1:
        raise DataError(f"prepare.test_size must be between 0 and 1, got {test_size!r}")
    _, test_index = train_test_split(
        applicants.index,
        test_size=test_size,
        random_state=seed,
        stratify=applicants[TARGET],
    )
    labels = pd.Series("train", index=applicants.index)
    labels[test_index] = "test"
    return labels


def _read_text_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            # pandas only warns (and drops cells) when rows have more fields than the header.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: rows have more fields than the header has columns") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        reason = str(error).strip().splitlines()[-1]
        raise DataError(f"{path}: not a readable CSV file ({reason})") from None


def _canonical_column(path: Path, name: str) -> str:
    if name not in KAGGLE_TO_CANONICAL:
        raise DataError(f"{path}: unexpected column {name!r}")
    return KAGGLE_TO_CANONICAL[name]


def _first_bad(path: Path, column: str, bad: np.ndarray, texts: pd.Series, problem: str) -> None:
    """Raise for the first row flagged in ``bad``, if any."""
    rows = np.flatnonzero(bad)
    if rows.size == 0:
        return
    row = rows[0]
    more = f" (and {rows.size - 1} more rows)" if rows.size > 1 else ""
    # Line 1 is the header, so data row i (from 0) is on line i + 2.
    raise DataError(
        f"{path}: line {row + 2}, column {column!r}: {problem}, got {texts.iloc[row]!r}{more}"
    )


def _parse_numbers(path: Path, column: str, texts: pd.Series) -> pd.Series:
    texts = texts.str.strip()
    is_missing = texts.isin(MISSING_TOKENS).to_numpy()
    values = pd.to_numeric(texts.where(~is_missing), errors="coerce").astype("float64")
    not_a_number = values.isna().to_numpy() & ~is_missing
    _first_bad(path, column, not_a_number, texts, "not a number")
    _first_bad(path, column, np.isinf(values.to_numpy()), texts, "not a finite number")
    return values


def _parse_feature(path: Path, table: pd.DataFrame, feature) -> pd.Series:
    texts = table[feature.name]
    column = feature.kaggle_name
    values = _parse_numbers(path, column, texts)
    present = values.notna().to_numpy()
    if not feature.nullable:
        _first_bad(path, column, ~present, texts, "missing value in a column that must be present")
    number = values.to_numpy()
    if feature.integer:
        fraction = present & (number != np.floor(number))
        _first_bad(path, column, fraction, texts, "not a whole number")
    too_small = present & (number < feature.minimum)
    _first_bad(path, column, too_small, texts, f"below the minimum {feature.minimum:g}")
    too_large = present & (number > feature.maximum)
    _first_bad(path, column, too_large, texts, f"above the maximum {feature.maximum:g}")
    return values


def _parse_target(path: Path, table: pd.DataFrame) -> pd.Series:
    texts = table[TARGET]
    values = _parse_numbers(path, TARGET, texts)
    _first_bad(path, TARGET, ~values.isin((0, 1)).to_numpy(), texts, "target must be 0 or 1")
    return values.astype("int64")
