"""Where the stages read and write (relative to the project root, as in ``dvc.yaml``)."""

import json
from pathlib import Path

import pandas as pd

PREPARED = Path("data/prepared/applicants.parquet")
DATASET_FINGERPRINT = Path("data/dataset_fingerprint.json")
MODEL = Path("models/model.skops")
MODEL_INFO = Path("models/model.json")
REFERENCE_PROFILE = Path("models/reference_profile.json")
METRICS = Path("reports/metrics.json")
PLOTS = Path("reports/plots")
RECEIPT = Path("reports/registration.json")

SPLIT_COLUMN = "split"
"""The column of the prepared data that says ``"train"`` or ``"test"``."""


def read_json(path: Path):
    """Parse a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, payload) -> None:
    """Write ``payload`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def read_splits(root: Path = Path()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prepared train and test rows of the project at ``root``."""
    applicants = pd.read_parquet(root / PREPARED)
    is_test = applicants[SPLIT_COLUMN] == "test"
    return applicants[~is_test], applicants[is_test]
