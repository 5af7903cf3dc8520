"""``credit-risk training-data``: the logged applicants whose outcome is known, as a training file.

The file is in the Kaggle format the pipeline reads (the unnamed index column, the target
``SeriousDlqin2yrs``, the contract's Kaggle column names, ``NA`` for a missing value), one row
per logged prediction with an outcome, in log order, each value exactly as it was scored; from a
log directory, or with ``--from-mlflow`` from what every host shipped; only the decisions of a
window if asked (``--since``, ``--until``: the applicants since the world changed). So
``dvc exp run -S data.raw=FILE.csv`` retrains on the applicants the lender really saw, and the
dataset fingerprint of that run tells which file it was. It is written to a temporary file
first and renamed: a reader never sees half a file.
"""

import csv
import os
import tempfile
from datetime import date
from pathlib import Path

from credit_risk.ml.contract import FEATURES, TARGET
from credit_risk.ml.data import DataError
from credit_risk.monitoring.log_source import LogSource, as_log_source
from credit_risk.monitoring.window import bound_texts, within


def cell(feature, value) -> str:
    """A logged input value as the Kaggle file writes it (floats round-trip exactly)."""
    if value is None:
        return "NA"
    return str(int(value)) if feature.integer else repr(float(value))


def write_training_data(
    location: Path | LogSource, output: Path, since: date | None = None, until: date | None = None
) -> str:
    """Write the applicants of the log at ``location`` (a directory or the shipped log) that
    have outcomes, decided within the window, to ``output``; the one-line summary."""
    log = as_log_source(location)
    outcomes = log.outcomes()
    if not outcomes:
        raise DataError(log.no_outcomes())
    first, last = bound_texts(since, until)
    output.parent.mkdir(parents=True, exist_ok=True)
    found: set[str] = set()
    written: set[str] = set()
    defaults = 0
    with tempfile.NamedTemporaryFile(
        "w", dir=output.parent, prefix=f".{output.name}.", delete=False, newline=""
    ) as file:
        try:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(["", TARGET, *(feature.kaggle_name for feature in FEATURES)])
            for record in log.records():
                outcome = outcomes.get(record.get("prediction_id"))
                if outcome is None:
                    continue
                found.add(outcome.prediction_id)
                if outcome.prediction_id in written or not within(
                    record.get("timestamp", ""), first, last
                ):
                    continue
                written.add(outcome.prediction_id)
                defaults += outcome.defaulted
                inputs = record["inputs"]
                values = [cell(feature, inputs[feature.name]) for feature in FEATURES]
                writer.writerow([len(written), outcome.defaulted, *values])
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            os.unlink(file.name)
            raise
    os.replace(file.name, output)
    missing = len(outcomes) - len(found)
    unmatched = f"; {missing} outcomes whose prediction is no longer in the log" if missing else ""
    window = f" decided between {first or 'the start'} and {until.isoformat() if until else 'now'}"
    return (
        f"training-data: {len(written)} applicants with outcomes ({defaults} defaulted) from "
        f"{log}{window if since or until else ''} written to {output}{unmatched}"
    )
