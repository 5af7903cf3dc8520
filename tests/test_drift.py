"""The reference profile and the drift measurement, on logs written by the service's own log
writer: PSI, bins (missing, 96/98 codes), date windows, torn and corrupt lines, wrong versions,
the HTML page; and ``credit-risk drift``'s exit status against a BentoML store."""

import gzip
import hashlib
import json
import os
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CREDIT_RISK, PROJECT

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES
from credit_risk.ml.data import load_applicants
from credit_risk.ml.profile import (
    bin_indices,
    build_profile,
    distribution,
    profile_bytes,
    reference_decline_rate,
)
from credit_risk.ml.scorecard import ScoreScale
from credit_risk.monitoring.drift import DriftError, measure_drift, psi, status, summary
from credit_risk.monitoring.report_html import render
from credit_risk.monitoring.window import day_or_moment, is_reversed
from credit_risk.params import load_params
from credit_risk.serving.prediction_log import PredictionLog

PARAMS = load_params(PROJECT / "params.yaml")
THRESHOLDS = {"psi_watch": 0.1, "psi_significant": 0.25}
SCALE = ScoreScale.from_params(PARAMS["score"])
DAY = datetime(2026, 11, 2, 12, tzinfo=UTC)
REASON = {"code": "AGE", "feature": "age", "description": "Age: younger applicants default more"}


@pytest.fixture(scope="module")
def applicants() -> pd.DataFrame:
    return load_applicants(PROJECT / "data" / "gmsc-synthetic.csv").loc[:, FEATURE_NAMES]


def answers(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list]:
    """Stand-in model answers: a probability from utilization and late payments."""
    risk = rows["RevolvingUtilizationOfUnsecuredLines"].clip(0, 2) + rows[
        "NumberOfTimes90DaysLate"
    ].clip(0, 5)
    probability = (0.02 + 0.1 * risk.to_numpy()).clip(0, 0.99)
    reasons = [[REASON] if age < 40 else [] for age in rows["age"]]
    return probability, SCALE.points(probability), reasons


@pytest.fixture(scope="module")
def profile(applicants) -> dict:
    reference = applicants.iloc[:10_000]
    return build_profile(reference, *answers(reference))


def log_rows(directory: Path, rows: pd.DataFrame, version: str = "1", day: datetime = DAY):
    """Log ``rows`` as the service does (same writer, same record fields)."""
    probability, scores, reasons = answers(rows)
    records = []
    for i, values in enumerate(rows.to_numpy("float64")):
        inputs = {
            f.name: None if np.isnan(v) else (int(v) if f.integer else float(v))
            for f, v in zip(FEATURES, values.tolist(), strict=True)
        }
        records.append(
            {
                "prediction": int(probability[i] >= 0.3),
                "probability": float(probability[i]),
                "model_version": version,
                "prediction_id": os.urandom(16).hex(),
                "timestamp": (day + timedelta(seconds=i)).isoformat(),
                "score": int(scores[i]),
                "reasons": reasons[i],
                "inputs": inputs,
            }
        )
    PredictionLog(directory).append(records)


def test_psi_is_zero_for_equal_shares_and_finite_for_empty_bins():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.2, 0.8], [0.5, 0.5]) == pytest.approx(
        0.3 * np.log(0.5 / 0.2) - 0.3 * np.log(0.5 / 0.8)
    )
    assert 0 < psi([1.0, 0.0], [0.0, 1.0]) < 20
    assert [status(v, THRESHOLDS) for v in (0.05, 0.1, 0.25, 0.26)] == [
        "stable", "watch", "watch", "significant"
    ]  # fmt: skip


def test_bins_have_a_missing_bin_and_a_sentinel_bin():
    values = np.array([0, 0, 0, 1, 2, 3, 96, 98, np.nan, 0])
    entry = distribution(values, (96, 98))
    assert entry["labels"][-2:] == ["96/98", "missing"]
    assert entry["proportions"][-2:] == [0.2, 0.1]
    assert sum(entry["proportions"]) == pytest.approx(1)
    assert 96 not in entry["edges"] and 98 not in entry["edges"]
    index = bin_indices(np.array([np.nan, 96, 0, 1000]), entry["edges"], (96, 98))
    assert index.tolist() == [
        len(entry["edges"]) + 2,
        len(entry["edges"]) + 1,
        0,
        len(entry["edges"]),
    ]
    assert distribution(np.array([1.0, np.nan]))["labels"][-1] == "missing"


def test_profile_is_byte_deterministic_and_complete(applicants, profile):
    reference = applicants.iloc[:10_000]
    assert profile_bytes(build_profile(reference, *answers(reference))) == profile_bytes(profile)
    assert set(profile["features"]) == set(FEATURE_NAMES)
    income = profile["features"]["MonthlyIncome"]
    assert income["labels"][-1] == "missing" and income["proportions"][-1] > 0.1
    assert profile["features"]["NumberOfTimes90DaysLate"]["labels"][-2] == "96/98"
    assert profile["reasons"]["AGE"] > 0 and profile["reasons"]["UTIL"] == 0
    probability = answers(reference)[0]
    assert reference_decline_rate(profile, 0.3) == pytest.approx(
        (probability >= 0.3).mean(), abs=0.002
    )


def test_same_population_is_stable_shifted_features_are_significant(tmp_path, applicants, profile):
    log_rows(tmp_path / "same", applicants.iloc[10_000:14_000])
    report = summary(measure_drift(tmp_path / "same", profile, "1", None, None), THRESHOLDS, 0.3)
    assert report["status"] == "stable" and report["records"] == 4000
    assert report["probability"]["status"] == "stable"
    assert report["reasons"]["AGE"]["current"] == pytest.approx(
        report["reasons"]["AGE"]["reference"], abs=0.03
    )
    shifted = applicants.iloc[10_000:14_000].copy()
    shifted["age"] = (shifted["age"] + 15).clip(upper=120)
    shifted["MonthlyIncome"] /= 2
    log_rows(tmp_path / "shifted", shifted)
    report = summary(measure_drift(tmp_path / "shifted", profile, "1", None, None), THRESHOLDS, 0.3)
    flagged = {name for name, r in report["features"].items() if r["status"] == "significant"}
    assert flagged == {"age", "MonthlyIncome"}
    assert report["daily"] == [
        {
            "day": "2026-11-02",
            "predictions": 4000,
            "decline_rate": report["decline_rate"]["current"],
            "mean_probability": report["mean_probability"]["current"],
        }
    ]
    page = render(report | fake_metadata())
    assert page.count("<svg") == 1 + 2 + len(FEATURE_NAMES) + 2  # PSI, days, histograms
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "<th>change (percentage points)</th>" in page  # of shares shown as percentages


def fake_metadata() -> dict:
    return {
        "model": {"name": "credit-risk-model", "version": "1", "run_id": "r",
                  "reference_profile_sha256": "0" * 64},
        "log_directory": "/log",
        "window": {"since": None, "until": None, "first_day": "2026-11-02",
                   "last_day": "2026-11-02"},
        "generated_at": "2026-11-02T00:00:00+00:00",
    }  # fmt: skip


def test_window_keeps_only_its_days(tmp_path, applicants, profile):
    for offset in range(3):
        log_rows(tmp_path, applicants.iloc[offset * 100 : offset * 100 + 100],
                 day=DAY + timedelta(days=offset))  # fmt: skip
    tally = measure_drift(tmp_path, profile, "1", date(2026, 11, 3), date(2026, 11, 3))
    assert (tally.records, tally.outside) == (100, 200)
    assert list(tally.days) == ["2026-11-03"]
    assert measure_drift(tmp_path, profile, "1", date(2026, 11, 3), None).records == 200
    assert measure_drift(tmp_path, profile, "1", None, date(2026, 11, 2)).records == 100
    with pytest.raises(DriftError, match="no predictions of model version 1 between 2026-12-01"):
        measure_drift(tmp_path, profile, "1", date(2026, 12, 1), None)


def test_window_bounds_may_be_moments(tmp_path, applicants, profile):
    log_rows(tmp_path, applicants.iloc[:100])  # one a second from 12:00:00 UTC
    since, until = day_or_moment("2026-11-02T13:00:30+01:00"), day_or_moment("2026-11-02T12:01:09")
    assert (since.isoformat(), until.isoformat()) == ("2026-11-02T12:00:30+00:00",
                                                      "2026-11-02T12:01:09+00:00")  # fmt: skip
    assert measure_drift(tmp_path, profile, "1", since, until).records == 40
    assert measure_drift(tmp_path, profile, "1", date(2026, 11, 2), until).records == 70
    assert measure_drift(tmp_path, profile, "1", since, date(2026, 11, 2)).records == 70
    assert is_reversed(day_or_moment("2026-11-03"), until)
    assert not is_reversed(until, date(2026, 11, 2)) and not is_reversed(since, None)
    with pytest.raises(ValueError):
        day_or_moment("yesterday")


def test_torn_and_corrupt_lines_are_skipped_and_counted(tmp_path, applicants, profile):
    log_rows(tmp_path, applicants.iloc[:50])
    path = next(tmp_path.glob("predictions-*.jsonl"))
    good = path.read_bytes().splitlines(keepends=True)
    bad = [b'{"prediction": 1, "probab\n', b"not json\n", b'{"model_version": "1"}\n', b"\n"]
    path.write_bytes(b"".join(good[:10] + bad + good[10:]) + good[0][:40])  # torn last line
    tally = measure_drift(tmp_path, profile, "1", None, None)
    assert (tally.records, tally.corrupt) == (50, 5)


def test_compressed_log_files_are_read_too(tmp_path, applicants, profile):
    """The shipper may compress finished, shipped files (``CREDIT_RISK_SHIPPED_LOGS``)."""
    log_rows(tmp_path, applicants.iloc[:30])
    log_rows(tmp_path, applicants.iloc[30:70])
    path = sorted(tmp_path.glob("predictions-*.jsonl"))[0]
    path.with_name(f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    assert measure_drift(tmp_path, profile, "1", None, None).records == 70


def test_a_log_of_another_version_is_refused_naming_it(tmp_path, applicants, profile):
    log_rows(tmp_path, applicants.iloc[:20], version="2")
    with pytest.raises(DriftError, match=r"model version 2 \(20 records\), none of version 1"):
        measure_drift(tmp_path, profile, "1", None, None)
    log_rows(tmp_path, applicants.iloc[20:50], version="1")
    tally = measure_drift(tmp_path, profile, "1", None, None)
    assert tally.records == 30 and tally.versions["2"] == 20


def test_no_log_files_is_an_error(tmp_path, profile):
    with pytest.raises(DriftError, match="no prediction log files"):
        measure_drift(tmp_path / "absent", profile, "1", None, None)


def bentoml_store(folder: Path, profile: dict | None) -> dict:
    """An environment whose BentoML store holds a model of version 1 with ``profile`` (None:
    imported from a run without one), as ``credit-risk import`` makes it (model file aside),
    and a project folder at ``folder``."""
    (folder / "params.yaml").write_text((PROJECT / "params.yaml").read_text())
    data = profile_bytes(profile) if profile else b""
    script = f"""
import bentoml
from credit_risk.serving.release import *
served = ServedModel(model_name=BENTO_MODEL, model_version="1", model_stage="Production",
    alias="production", run_id="run", dataset_hash="", model_sha256="", decision_threshold=0.3,
    score_scale={{}}, reason_codes_version=1, metrics={{}}, trained_at="", imported_at="",
    tracking_uri="", reference_profile_sha256="{hashlib.sha256(data).hexdigest() if data else ""}")
with bentoml.models.create(BENTO_MODEL, metadata={{SERVED_MODEL_KEY: served.model_dump()}}) as m:
    if {bool(data)}:
        open(m.path_of(PROFILE_FILE), "wb").write({data!r})
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CREDIT_RISK"))}
    env |= {"BENTOML_HOME": str(folder / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([CREDIT_RISK.replace("credit-risk", "python"), "-c", script], env=env,
                   check=True, cwd=folder)  # fmt: skip
    return env


@pytest.mark.slow  # the real `credit-risk drift` command, in processes of its own
def test_command_exit_status_and_one_line_errors(tmp_path, applicants, profile):
    env = bentoml_store(tmp_path, profile)
    log_rows(tmp_path / "log", applicants.iloc[10_000:12_000])

    def drift(*args: str) -> subprocess.CompletedProcess:
        command = [CREDIT_RISK, "drift", *args]
        return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)

    stable = drift("log")
    assert stable.returncode == 0, stable.stderr
    report = json.loads((tmp_path / "reports/drift/drift.json").read_text())
    assert report["status"] == "stable" and report["model"]["version"] == "1"
    assert "not logged to MLflow" in stable.stdout
    shifted = applicants.iloc[12_000:14_000].copy()
    shifted["age"] = (shifted["age"] + 15).clip(upper=120)
    log_rows(tmp_path / "shifted", shifted)
    significant = drift("shifted", "--output", "out")
    assert significant.returncode == 3, significant.stderr
    assert "significant (PSI above 0.25: age)" in significant.stdout
    assert (tmp_path / "out" / "drift.html").read_text().startswith("<!DOCTYPE html>")
    log_rows(tmp_path / "v2", applicants.iloc[:10], version="2")
    for args, message in [
        (["v2"], "model version 2 (10 records), none of version 1"),
        (["empty"], "no prediction log files"),
        (["log", "--since", "2027-01-01"], "no predictions of model version 1 between 2027-01-01"),
    ]:
        failed = drift(*args)
        assert failed.returncode == 1 and failed.stderr.startswith("drift: error: ")
        assert message in failed.stderr and failed.stderr.count("\n") == 1
    assert drift("log", "--since", "yesterday").returncode == 2


@pytest.mark.slow  # the real `credit-risk drift` command, in processes of its own
def test_a_model_imported_without_a_profile_is_named(tmp_path, applicants):
    env = bentoml_store(tmp_path, None)
    log_rows(tmp_path / "log", applicants.iloc[:10])
    command = [CREDIT_RISK, "drift", "log"]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert "(credit-risk-model version 1) has no reference profile" in result.stderr
    assert "run `dvc repro`" in result.stderr and result.stderr.count("\n") == 1
