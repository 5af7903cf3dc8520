"""Outcomes taken in against the prediction log, and the training file made of them."""

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT

from credit_risk.cli import main
from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.ml.data import DataError, load_applicants
from credit_risk.monitoring.outcomes import (
    OUTCOMES_FILE,
    stored_outcomes,
    take_in_outcomes,
)
from credit_risk.monitoring.training_data import write_training_data
from credit_risk.monitoring.window import day_or_moment
from credit_risk.serving.prediction_log import PredictionLog

APPLICANTS = load_applicants(PROJECT / "data" / "gmsc-synthetic.csv").head(300)


def logged(directory: Path, applicants: pd.DataFrame = APPLICANTS,
           timestamp: str = "2026-11-02T10:00:00Z") -> list[str]:  # fmt: skip
    """Log one prediction per applicant as the service does; their ids."""
    log = PredictionLog(directory)
    ids = [os.urandom(16).hex() for _ in range(len(applicants))]
    records = []
    for prediction_id, (_, row) in zip(ids, applicants.iterrows(), strict=True):
        inputs = {name: None if np.isnan(row[name]) else float(row[name]) for name in FEATURE_NAMES}
        record = {"prediction": 0, "probability": 0.05, "model_version": "1", "score": 640}
        record |= {"prediction_id": prediction_id, "timestamp": timestamp}
        records.append(record | {"reasons": [], "inputs": inputs, "api_key": None})
    log.append(records)
    return ids


def outcomes_csv(path: Path, rows: list[tuple]) -> Path:
    lines = [f"prediction_id,{TARGET},observed_at", *(",".join(map(str, row)) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def log_dir(tmp_path) -> Path:
    return tmp_path / "predictions"


def test_outcomes_are_stored_once_and_summarised(log_dir, tmp_path):
    ids = logged(log_dir)
    first = outcomes_csv(
        tmp_path / "a.csv", [(i, n % 2, "2027-05-01") for n, i in enumerate(ids[:10])]
    )
    assert take_in_outcomes(first, log_dir) == (
        f"outcomes: 10 rows read from {first}: 10 new, 0 already known; "
        f"10 outcomes in {log_dir / OUTCOMES_FILE}"
    )
    stored = (log_dir / OUTCOMES_FILE).read_bytes()
    assert take_in_outcomes(first, log_dir).startswith(
        f"outcomes: 10 rows read from {first}: 0 new, 10 already known"
    )
    assert (log_dir / OUTCOMES_FILE).read_bytes() == stored
    overlapping = outcomes_csv(
        tmp_path / "b.csv",
        [(i, n % 2, "2027-06-01T09:30:00+02:00") for n, i in enumerate(ids) if 8 <= n < 15],
    )
    assert ": 5 new, 2 already known; 15 outcomes in" in take_in_outcomes(overlapping, log_dir)
    outcomes = stored_outcomes(log_dir)
    assert outcomes[ids[8]].observed_at == "2027-05-01"  # the first observation is kept
    assert outcomes[ids[14]].observed_at == "2027-06-01T07:30:00+00:00"
    assert [outcomes[i].defaulted for i in ids[:4]] == [0, 1, 0, 1]
    assert oct((log_dir / OUTCOMES_FILE).stat().st_mode & 0o777) == "0o600"


DAY = "2027-05-01"


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (("f" * 32, 1, DAY), f"line 3: prediction_id '{'f' * 32}' is not in the prediction log"),
        (("ID", 2, DAY), f"line 3, column '{TARGET}': must be 0 or 1, got '2'"),
        (("ID", "", DAY), f"line 3, column '{TARGET}': must be 0 or 1, got ''"),
        (("ID", 1, "May 2027"), "line 3, column 'observed_at': not an ISO date or time"),
        (("", 1, DAY), "line 3, column 'prediction_id': empty"),
        (("STORED", 0, DAY), f"{TARGET} 0 contradicts the stored outcome 1 (observed 2027-04-01)"),
        (("FIRST", 0, DAY), f"line 3: prediction_id 'FIRST_ID': {TARGET} 0 contradicts line 2 (1)"),
    ],
)  # fmt: skip
def test_a_file_with_a_bad_row_stores_nothing_and_names_it(log_dir, tmp_path, row, problem):
    ids = logged(log_dir)
    take_in_outcomes(outcomes_csv(tmp_path / "known.csv", [(ids[5], 1, "2027-04-01")]), log_dir)
    before = (log_dir / OUTCOMES_FILE).read_bytes()
    names = {"ID": ids[7], "STORED": ids[5], "FIRST": ids[9]}
    bad = (names.get(row[0], row[0]), *row[1:])
    path = outcomes_csv(
        tmp_path / "bad.csv", [(ids[9], 1, "2027-05-01"), bad, (ids[3], 0, "2027-05-01")]
    )
    with pytest.raises(DataError) as refused:
        take_in_outcomes(path, log_dir)
    assert str(refused.value).startswith(f"{path}: ")
    assert problem.replace("FIRST_ID", ids[9]) in str(refused.value)
    assert (log_dir / OUTCOMES_FILE).read_bytes() == before


def test_a_file_without_a_needed_column_is_refused(log_dir, tmp_path):
    logged(log_dir)
    path = tmp_path / "outcomes.csv"
    path.write_text(f"prediction_id,{TARGET}\nabc,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column 'observed_at'"):
        take_in_outcomes(path, log_dir)
    assert not (log_dir / OUTCOMES_FILE).exists() or not (log_dir / OUTCOMES_FILE).read_bytes()


def take_in_quietly(arguments: tuple[Path, Path]) -> str:
    return take_in_outcomes(*arguments)


def test_runs_at_the_same_time_store_each_outcome_once(log_dir, tmp_path):
    ids = logged(log_dir)
    files = [
        outcomes_csv(tmp_path / f"{n}.csv", [(i, 1, "2027-05-01") for i in ids]) for n in range(4)
    ]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        summaries = pool.map(take_in_quietly, [(path, log_dir) for path in files])
    assert sorted(int(s.split(": ")[2].split(" new")[0]) for s in summaries) == [0, 0, 0, len(ids)]
    lines = (log_dir / OUTCOMES_FILE).read_bytes().splitlines()
    assert len(lines) == len(ids) == len(stored_outcomes(log_dir))


def test_training_data_round_trips_through_prepare(log_dir, tmp_path):
    ids = logged(log_dir)
    labels = APPLICANTS[TARGET].to_numpy()
    known = [(i, labels[n], "2027-05-01") for n, i in enumerate(ids) if n % 3]
    take_in_outcomes(outcomes_csv(tmp_path / "outcomes.csv", known), log_dir)
    output = tmp_path / "data" / "from-the-log.csv"
    summary = write_training_data(log_dir, output)
    with_outcomes = APPLICANTS[[n % 3 != 0 for n in range(len(ids))]].reset_index(drop=True)
    assert summary == (
        f"training-data: {len(with_outcomes)} applicants with outcomes "
        f"({with_outcomes[TARGET].sum()} defaulted) from {log_dir} written to {output}"
    )
    pd.testing.assert_frame_equal(load_applicants(output), with_outcomes)
    assert output.read_text(encoding="utf-8").startswith(",SeriousDlqin2yrs,RevolvingUtilization")


def test_training_data_of_a_window(log_dir, tmp_path):
    """The applicants decided in a window (since the world changed), not all of the log."""
    before = logged(log_dir, APPLICANTS[:100], "2026-11-02T10:00:00+00:00")
    since = logged(log_dir, APPLICANTS[100:], "2026-11-03T10:00:00.250000+00:00")
    labels = APPLICANTS[TARGET].to_numpy()
    rows = [(i, labels[n], "2027-05-01") for n, i in enumerate(before + since)]
    take_in_outcomes(outcomes_csv(tmp_path / "outcomes.csv", rows), log_dir)
    output = tmp_path / "recent.csv"
    summary = write_training_data(log_dir, output, day_or_moment("2026-11-03T10:00:00.25Z"))
    recent = APPLICANTS[100:].reset_index(drop=True)
    assert summary == (
        f"training-data: 200 applicants with outcomes ({recent[TARGET].sum()} defaulted) from "
        f"{log_dir} decided between 2026-11-03T10:00:00.250000+00:00 and now written to {output}"
    )
    pd.testing.assert_frame_equal(load_applicants(output), recent)
    summary = write_training_data(log_dir, output, None, day_or_moment("2026-11-02"))
    assert summary.startswith("training-data: 100 applicants with outcomes")
    assert summary.endswith(f"decided between the start and 2026-11-02 written to {output}")
    pd.testing.assert_frame_equal(load_applicants(output), APPLICANTS[:100])


def test_training_data_without_outcomes_says_what_to_run(log_dir, tmp_path):
    logged(log_dir)
    with pytest.raises(
        DataError, match=r"no outcomes taken in yet \(credit-risk outcomes FILE.csv"
    ):
        write_training_data(log_dir, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_the_commands_print_one_line_and_exit_1_on_bad_input(
    log_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # no tracking store: nothing is shipped
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ids = logged(log_dir)
    good = outcomes_csv(tmp_path / "good.csv", [(ids[0], 1, "2027-05-01")])
    main(["outcomes", str(good), str(log_dir)])
    assert capsys.readouterr().out == (
        f"outcomes: 1 rows read from {good}: 1 new, 0 already known; 1 outcomes in "
        f"{log_dir / OUTCOMES_FILE}; not shipped to MLflow (no MLFLOW_TRACKING_URI and no "
        "mlflow.db here)\n"
    )
    bad = outcomes_csv(tmp_path / "bad.csv", [(ids[1], 7, "2027-05-01")])
    with pytest.raises(SystemExit) as exit_status:
        main(["outcomes", str(bad), str(log_dir)])
    assert exit_status.value.code == 1
    assert capsys.readouterr().err == (
        f"outcomes: error: {bad}: line 2, column '{TARGET}': must be 0 or 1, got '7'\n"
    )
    main(["training-data", str(log_dir), "--output", str(tmp_path / "train.csv")])
    assert "training-data: 1 applicants with outcomes (1 defaulted)" in capsys.readouterr().out
