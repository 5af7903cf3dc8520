"""The dataset fingerprint: a SHA256 of the data's values, not of any file's bytes.

What is hashed, exactly (``FINGERPRINT_VERSION`` 1):

1. the UTF-8 bytes of the canonical column names (the ten features in contract order, then the
   target), joined by ``,`` and followed by one ``\\n``;
2. then every row of the validated dataset, in the raw file's row order, each value as an
   IEEE-754 float64 in little-endian byte order (row after row, 8 bytes per value), a missing
   value as the quiet NaN ``0x7FF8000000000000``.

So the hash depends on the values and their order only: not on the file path, line endings,
number formatting (``1``, ``1.0`` and ``1.000`` are the same value), the Kaggle row-index column,
or the train/test split.
"""

import hashlib

import numpy as np
import pandas as pd

from credit_risk.contract import FEATURE_NAMES, TARGET

FINGERPRINT_VERSION = 1
COLUMNS = (*FEATURE_NAMES, TARGET)


def dataset_sha256(applicants: pd.DataFrame) -> str:
    """SHA256 hex digest of the dataset's values, as defined in this module's docstring."""
    values = applicants.loc[:, list(COLUMNS)].to_numpy(dtype="<f8", na_value=np.nan)
    values = np.where(np.isnan(values), np.nan, values).astype("<f8")  # one NaN bit pattern
    digest = hashlib.sha256((",".join(COLUMNS) + "\n").encode())
    digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def describe_dataset(applicants: pd.DataFrame) -> dict:
    """The fingerprint record: hash, size, positives and schema of the dataset."""
    return {
        "sha256": dataset_sha256(applicants),
        "fingerprint_version": FINGERPRINT_VERSION,
        "rows": len(applicants),
        "columns": len(COLUMNS),
        "positives": int(applicants[TARGET].sum()),
        "schema": {name: str(applicants[name].dtype) for name in COLUMNS},
    }
