"""Stage ``fingerprint``: the dataset fingerprint of the prepared data."""

import pandas as pd

from credit_risk.ml.fingerprints import dataset_fingerprint
from credit_risk.pipeline.paths import DATASET_FINGERPRINT, PREPARED, SPLIT_COLUMN, write_json


def fingerprint(params: dict) -> str:
    """Hash the prepared dataset's values (see :mod:`credit_risk.ml.fingerprints`)."""
    record = dataset_fingerprint(pd.read_parquet(PREPARED).drop(columns=SPLIT_COLUMN))
    write_json(DATASET_FINGERPRINT, record)
    return f"dataset sha256 {record['sha256']} ({record['rows']} rows)"
