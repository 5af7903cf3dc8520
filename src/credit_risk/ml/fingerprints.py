"""Fingerprints: SHA256 identities of a dataset, of a model's behaviour and of a file.

**Dataset fingerprint** (``dataset_hash`` in MLflow): a SHA256 of the data's values, not of
any file's bytes (``DATASET_FINGERPRINT_VERSION`` 1):

1. the UTF-8 bytes of the canonical column names (the ten features in contract order, then the
   target), joined by ``,`` and followed by one ``\\n``;
2. then every row of the validated dataset, in the raw file's row order, each value as an
   IEEE-754 float64 in little-endian byte order (row after row, 8 bytes per value), a missing
   value as the quiet NaN ``0x7FF8000000000000``.

So it depends on the values and their order only: not on the file path, line endings, number
formatting (``1``, ``1.0`` and ``1.000`` are the same value), the Kaggle row-index column, or
the train/test split.

**Model fingerprint**: a SHA256 of the model's predicted probabilities on the held-out split
(float64, little-endian). Two models that score the test rows identically share it.

**File SHA256**: the plain hash of a file's bytes (the model file's, checked before serving).
"""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from credit_risk.ml.contract import FEATURE_NAMES, TARGET

DATASET_FINGERPRINT_VERSION = 1
DATASET_COLUMNS = (*FEATURE_NAMES, TARGET)


def dataset_sha256(applicants: pd.DataFrame) -> str:
    """SHA256 hex digest of the dataset's values, as defined in this module's docstring."""
    values = applicants.loc[:, list(DATASET_COLUMNS)].to_numpy(dtype="<f8", na_value=np.nan)
    values = np.where(np.isnan(values), np.nan, values).astype("<f8")  # one NaN bit pattern
    digest = hashlib.sha256((",".join(DATASET_COLUMNS) + "\n").encode())
    digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def dataset_fingerprint(applicants: pd.DataFrame) -> dict:
    """The dataset fingerprint record: hash, size, positives and schema."""
    return {
        "sha256": dataset_sha256(applicants),
        "fingerprint_version": DATASET_FINGERPRINT_VERSION,
        "rows": len(applicants),
        "columns": len(DATASET_COLUMNS),
        "positives": int(applicants[TARGET].sum()),
        "schema": {name: str(applicants[name].dtype) for name in DATASET_COLUMNS},
    }


def model_fingerprint(held_out_probabilities: np.ndarray) -> str:
    """SHA256 of a model's held-out probabilities: the identity of its behaviour."""
    values = np.ascontiguousarray(held_out_probabilities, dtype="<f8")
    return hashlib.sha256(values.tobytes()).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
