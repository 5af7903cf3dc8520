"""``credit-risk performance``: realized figures checked against independent computations, the
judgement and its exit status, the files, and (slow) a real registry's test metrics and runs."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import CREDIT_RISK, make_project_folder, run
from PIL import Image
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from credit_risk.cli import main
from credit_risk.ml.contract import TARGET
from credit_risk.monitoring.outcomes import take_in_outcomes
from credit_risk.monitoring.performance import PerformanceError
from credit_risk.monitoring.performance_report import performance_report
from credit_risk.serving.prediction_log import PredictionLog


def log_world(directory: Path, n: int, version: str = "1", miscalibrated: float = 1.0,
              month: str = "2026-11", seed: int = 0) -> tuple:  # fmt: skip
    """Log ``n`` predictions whose applicants default with the logged probability (divided by
    ``miscalibrated``); their ids, probabilities and outcomes."""
    rng = np.random.default_rng(seed)
    probability = 1 / (1 + np.exp(-rng.normal(-2.6, 1.1, n)))
    defaulted = (rng.random(n) < np.clip(probability / miscalibrated, 0, 1)).astype(int)
    ids = [os.urandom(16).hex() for _ in range(n)]
    records = [
        {"prediction": int(p >= 0.3), "probability": float(p), "model_version": version,
         "prediction_id": i, "timestamp": f"{month}-{1 + k % 28:02d}T10:00:00+00:00",
         "score": int(600 - 50 * np.log(p / (1 - p))), "reasons": [], "inputs": {}, "api_key": None}
        for k, (i, p) in enumerate(zip(ids, probability, strict=True))
    ]  # fmt: skip
    PredictionLog(directory).append(records)
    return ids, probability, defaulted


def take_in(directory: Path, ids, defaulted, path: Path) -> None:
    lines = [f"prediction_id,{TARGET},observed_at"]
    lines += [f"{i},{d},2027-06-30" for i, d in zip(ids, defaulted, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    take_in_outcomes(path, directory)


@pytest.fixture
def project_folder(tmp_path, monkeypatch):
    """A project folder without a tracking store, the working directory of the test."""
    folder = make_project_folder(tmp_path / "project")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


def test_realized_figures_equal_independent_computations(project_folder, tmp_path):
    log = tmp_path / "predictions"
    ids, probability, defaulted = log_world(log, 16000)
    known = np.arange(16000) % 4 != 0  # three in four outcomes arrived
    take_in(
        log, [i for i, k in zip(ids, known, strict=True) if k], defaulted[known], tmp_path / "o.csv"
    )
    message, status = performance_report(log, None, None, tmp_path / "report")
    report = json.loads((tmp_path / "report" / "performance.json").read_text())
    (entry,) = report["versions"]
    realized = entry["realized"]
    y, p = defaulted[known], probability[known]
    assert realized["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert realized["gini"] == pytest.approx(2 * roc_auc_score(y, p) - 1, abs=1e-6)
    assert realized["ks"] == pytest.approx(ks_2samp(p[y == 1], p[y == 0]).statistic, abs=1e-6)
    assert realized["roc_auc_low"] < realized["roc_auc"] < realized["roc_auc_high"]
    assert realized["roc_auc_high"] - realized["roc_auc_low"] < 0.05
    assert (entry["decisions"], entry["with_outcome"], entry["without_outcome"]) == (
        16000,
        12000,
        4000,
    )
    assert entry["defaults"] == int(y.sum())
    bands = entry["score_bands"]
    assert len(bands) == 10 and sum(band["decisions"] for band in bands) == 12000
    assert sum(band["defaults"] for band in bands) == int(y.sum())
    rates = [band["observed_default_rate"] for band in bands]
    assert rates[0] < rates[-1]  # best scores (lowest probabilities) first
    assert [row["month"] for row in entry["by_month"]] == ["2026-11"]
    assert entry["test"] is None and status == 0 and entry["status"] == "within"
    assert message.startswith(
        "performance: version 1: 12,000 of 16,000 decisions with outcomes, ROC AUC "
    )
    assert "no test metrics" in message and "not logged to MLflow" in message
    assert "<h2>Version 1" in (tmp_path / "report" / "performance.html").read_text()


def test_a_miscalibrated_version_is_degraded_and_exits_3(project_folder, tmp_path, capsys):
    log = tmp_path / "predictions"
    old = log_world(log, 12000, version="1", month="2026-10", seed=1)
    new = log_world(log, 12000, version="2", miscalibrated=3.0, month="2026-11", seed=2)
    for n, (ids, _, defaulted) in enumerate((old, new)):
        take_in(log, ids, defaulted, tmp_path / f"{n}.csv")
    with pytest.raises(SystemExit) as exit_status:
        main(["performance", str(log), "--output", str(tmp_path / "report")])
    assert exit_status.value.code == 3
    out = capsys.readouterr().out
    assert "version 1: 12,000 of 12,000 decisions with outcomes" in out
    assert "version 2: 12,000 of 12,000" in out and ": degraded (calibration error 0." in out
    assert "is above register.max_calibration_error 0.015)" in out
    versions = json.loads((tmp_path / "report" / "performance.json").read_text())["versions"]
    assert [v["status"] for v in versions] == ["within", "degraded"]
    main(["performance", str(log), "--since", "2026-10-01", "--until", "2026-10-31",
          "--output", str(tmp_path / "october")])  # fmt: skip
    assert "version 2" not in capsys.readouterr().out


def test_a_window_may_start_and_end_at_moments(project_folder, tmp_path, capsys):
    """``--since``/``--until`` take a day or a moment (UTC unless it has a zone): the cohort
    since a promotion, to the second."""
    log = tmp_path / "predictions"
    for n, (version, month) in enumerate((("1", "2026-10"), ("2", "2026-11"))):
        ids, _, defaulted = log_world(log, 2800, version=version, month=month, seed=n)
        take_in(log, ids, defaulted, tmp_path / f"{n}.csv")  # 100 a day, each at 10:00 UTC

    def decisions(*window: str) -> dict:
        main(["performance", str(log), *window, "--output", str(tmp_path / "report")])
        report = json.loads((tmp_path / "report" / "performance.json").read_text())
        return {entry["model_version"]: entry["decisions"] for entry in report["versions"]}

    assert decisions("--since", "2026-11-01T10:00:00Z") == {"2": 2800}
    assert decisions("--since", "2026-11-01T11:00:00+01:00") == {"2": 2800}
    assert decisions("--since", "2026-11-01T10:00:01") == {"2": 2700}
    assert decisions("--since", "2026-10-28T10:00", "--until", "2026-11-01") == {"1": 100, "2": 100}
    assert decisions("--since", "2026-11-01T09:00Z", "--until", "2026-11-01") == {"2": 100}
    assert decisions("--until", "2026-10-02T10:00:00.000001+00:00") == {"1": 200}
    with pytest.raises(SystemExit) as exit_status:
        decisions("--since", "2026-11-02", "--until", "2026-11-01T23:59:59Z")
    assert exit_status.value.code == 2
    assert (
        "--until 2026-11-01T23:59:59+00:00 is before --since 2026-11-02" in capsys.readouterr().err
    )


def test_too_few_outcomes_is_said_not_judged(project_folder, tmp_path):
    log = tmp_path / "predictions"
    ids, _, defaulted = log_world(log, 1000, miscalibrated=3.0)
    take_in(log, ids[:200], defaulted[:200], tmp_path / "o.csv")
    message, status = performance_report(log, None, None, tmp_path / "report")
    assert status == 0
    assert ": too few outcomes;" in message or message.count("too few outcomes") == 1
    entry = json.loads((tmp_path / "report" / "performance.json").read_text())["versions"][0]
    assert entry["why"] == ["200 outcomes, performance.min_outcomes is 10000"]


def test_no_outcomes_is_one_line_naming_the_command(project_folder, tmp_path):
    log = tmp_path / "predictions"
    log_world(log, 10)
    with pytest.raises(PerformanceError, match=r"no outcomes taken in yet \(credit-risk outcomes"):
        performance_report(log, None, None, tmp_path / "report")


@pytest.mark.slow
def test_against_the_registry_and_in_a_browser(project, tmp_path):
    folder, env = project
    log = tmp_path / "predictions"
    ids, _, defaulted = log_world(log, 2000)
    take_in(log, ids, defaulted, tmp_path / "o.csv")
    output = tmp_path / "report"
    result = run([CREDIT_RISK, "performance", str(log), "--output", str(output)], folder, env)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    training = client.get_run(client.get_model_version("credit-risk-model", "1").run_id)
    assert f"; test {training.data.metrics['roc_auc']:.4f})" in result.stdout
    assert "logged to MLflow runs serving-v1 at sqlite:///" in result.stdout
    entry = json.loads((output / "performance.json").read_text())["versions"][0]
    assert entry["test"]["run_id"] == training.info.run_id
    (serving,) = client.search_runs(
        [training.info.experiment_id], filter_string="attributes.run_name = 'serving-v1'"
    )
    assert serving.data.metrics["performance_roc_auc"] == entry["realized"]["roc_auc"]
    assert serving.data.metrics["performance_outcomes"] == 2000
    artifacts = [a.path for a in client.list_artifacts(serving.info.run_id, "performance")]
    files = {
        f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(serving.info.run_id, artifacts[0])
    }
    assert files == {"performance.json", "performance.html"}
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    screenshot = tmp_path / "performance.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={screenshot}", "--window-size=1280,1800",
         (output / "performance.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    orange = np.all(np.abs(pixels - (0xF0, 0x8A, 0x24)) < 8, axis=2)
    assert orange.sum() > 500  # the observed default rates' bars were drawn


def test_a_prediction_logged_twice_counts_once(project_folder, tmp_path):
    log = tmp_path / "predictions"
    ids, _, defaulted = log_world(log, 400)
    log_world(log, 400, seed=0)  # the same probabilities again, under new ids
    take_in(log, ids, defaulted, tmp_path / "o.csv")
    (first,) = [path for path in log.glob("predictions-*.jsonl") if ids[0] in path.read_text()]
    twice = first.read_text(encoding="utf-8").splitlines()[:3]
    with first.open("a", encoding="utf-8") as file:
        file.write("\n".join(twice) + "\n")
    performance_report(log, None, None, tmp_path / "report")
    report = json.loads((tmp_path / "report" / "performance.json").read_text())
    (entry,) = report["versions"]
    assert (entry["with_outcome"], entry["without_outcome"]) == (400, 400)
    assert report["skipped"]["repeated_prediction_ids"] == 3
