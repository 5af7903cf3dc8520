"""Stage ``prepare``: validate the raw CSV against the feature contract, split it."""

from credit_risk.ml.data import load_applicants, split_applicants
from credit_risk.pipeline.paths import PREPARED, SPLIT_COLUMN


def prepare(params: dict) -> str:
    """Validate the raw CSV, rename to canonical columns, assign the train/test split."""
    applicants = load_applicants(params["data"]["raw"])
    settings = params["prepare"]
    applicants[SPLIT_COLUMN] = split_applicants(
        applicants, float(settings["test_size"]), int(settings["seed"])
    )
    PREPARED.parent.mkdir(parents=True, exist_ok=True)
    applicants.to_parquet(PREPARED, index=False)
    counts = applicants[SPLIT_COLUMN].value_counts()
    return f"{len(applicants)} rows valid: {counts['train']} train, {counts['test']} test"
