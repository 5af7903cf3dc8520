"""The parallel run: swap-set arithmetic, the rank correlation, the score shift and the report
on logs written by the service's own answer and log code; ``credit-risk compare``'s exit
statuses against a real MLflow registry holding a gradient-boosting and a logistic-regression
version."""

import json
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import CREDIT_RISK, PIPELINE, PROJECT, make_served_project, run
from scipy.stats import spearmanr

from credit_risk.ml.api_bodies import api_bodies
from credit_risk.ml.contract import FEATURE_NAMES
from credit_risk.ml.data import load_applicants
from credit_risk.ml.flat_trees import DefaultProbability
from credit_risk.ml.model import build_model
from credit_risk.ml.scorecard import ScoreScale
from credit_risk.monitoring.compare import (
    RANK_BINS,
    Challenger,
    SwapTally,
    band_edges,
    banded,
    quantile,
    rank_bins,
    spearman,
    summary,
    swap_cells,
)
from credit_risk.monitoring.compare_html import render
from credit_risk.monitoring.drift import DriftError, read_log
from credit_risk.params import load_params
from credit_risk.serving.live_model import LiveModel
from credit_risk.serving.prediction_log import PredictionLog
from credit_risk.serving.service import CreditRiskService

PARAMS = load_params(PROJECT / "params.yaml")
SCALE = ScoreScale.from_params(PARAMS["score"])
ROWS = load_applicants(PROJECT / "data" / "gmsc-synthetic.csv")


@pytest.fixture(scope="module")
def models() -> dict:
    """A gradient-boosting and a logistic-regression model fitted on half the synthetic rows."""
    train = ROWS.iloc[:10_000]
    fitted = {}
    for kind in ("hist_gradient_boosting", "logistic_regression"):
        settings = PARAMS["train"] | {"model": kind}
        fitted[kind] = build_model(settings).fit(
            train.loc[:, FEATURE_NAMES], train["SeriousDlqin2yrs"]
        )
    return fitted


def service_answers(model, applicants: list[dict], version: str, threshold: float = 0.3):
    """What the service's own scoring code answers for ``applicants`` with ``model``."""
    served = SimpleNamespace(decision_threshold=threshold, model_version=version)
    live = LiveModel(served, model, SCALE, DefaultProbability(model))
    return CreditRiskService.inner.assess(SimpleNamespace(live=live), applicants)


def log_answers(directory, model, applicants: list[dict], version: str = "1") -> list[dict]:
    """Log the service's answers as it logs them; returns them."""
    answers = service_answers(model, applicants, version)
    PredictionLog(directory).append(
        [{**answer, "inputs": body} for answer, body in zip(answers, applicants, strict=True)]
    )
    return answers


@pytest.fixture(scope="module")
def logged(models, tmp_path_factory):
    """A log of 6,000 unseen applicants answered by the gradient-boosting champion."""
    directory = tmp_path_factory.mktemp("log")
    applicants = api_bodies(ROWS.iloc[10_000:16_000].loc[:, FEATURE_NAMES])
    for start in range(0, len(applicants), 1000):  # answers in several appends, as served
        log_answers(directory, models["hist_gradient_boosting"], applicants[start : start + 1000])
    return directory, applicants


def compared(directory, model, threshold: float = 0.3, version: str = "1") -> SwapTally:
    challenger = Challenger.of(model, SCALE, threshold)
    return read_log(directory, SwapTally, challenger, version, None, None, 300, 850)


def test_swap_cells_of_the_four_decision_pairs():
    champion = np.array([False, True, True, False])
    challenger = np.array([False, True, False, True])
    assert swap_cells(champion, challenger).tolist() == [0, 1, 2, 3]  # both, both, in, out


def test_spearman_of_a_grid_is_scipys_on_the_binned_values():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 40, 5000)
    y = np.clip(x + rng.integers(-8, 9, 5000), 0, 39)
    grid = np.zeros((40, 40), "int64")
    np.add.at(grid, (x, y), 1)
    assert spearman(grid) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert spearman(np.diag([3, 0, 5, 7])) == pytest.approx(1)
    assert spearman(np.fliplr(np.diag([3, 5, 7]))) == pytest.approx(-1)
    assert spearman(np.array([[4, 6]])) is None  # one variable constant
    p = rng.beta(1, 12, 20_000)
    q = np.clip(p * rng.lognormal(0, 0.3, p.size), 0, 1)
    binned = np.zeros((RANK_BINS, RANK_BINS), "int64")
    np.add.at(binned, (rank_bins(p), rank_bins(q)), 1)
    assert spearman(binned) == pytest.approx(spearmanr(p, q).statistic, abs=1e-3)


def test_quantiles_and_score_bands_of_integer_histograms():
    counts = np.zeros(11, "int64")  # scores 300..310
    counts[[0, 5, 10]] = [50, 30, 20]
    assert [quantile(counts, q) for q in (0.25, 0.5, 0.6, 0.9)] == [0, 0, 5, 10]
    edges = band_edges(counts, 300)
    assert edges == [300, 305, 310]
    assert banded(counts, [300, 305], 300).tolist() == [50, 30, 20]


def test_the_same_model_as_challenger_puts_everyone_in_the_both_cells(models, logged):
    directory, applicants = logged
    report = summary(compared(directory, models["hist_gradient_boosting"]), 0.05)
    cells = report["swap_sets"]
    assert cells["swap_in"]["count"] == cells["swap_out"]["count"] == 0
    assert cells["both_approve"]["count"] + cells["both_decline"]["count"] == len(applicants)
    assert report["approval_rate"]["change"] == 0 and report["status"] == "within"
    shift = report["score_shift"]
    assert shift["psi"] == 0 and shift["mean_change"] == 0 and shift["spearman_probability"] == 1
    assert set(shift["change_quantiles"].values()) == {0}
    assert len(shift["bands"]) >= 8  # deciles of the champion's scores
    assert not report["outcomes"]["available"] and "no outcomes" in report["outcomes"]["note"]


def test_another_challenger_answers_as_the_service_would(models, logged):
    directory, applicants = logged
    lr = models["logistic_regression"]
    report = summary(compared(directory, lr), 0.05)
    champion = service_answers(models["hist_gradient_boosting"], applicants, "1")
    challenger = service_answers(lr, applicants, "2")
    cells = Counter(
        ("both_decline" if b["prediction"] else "swap_in")
        if a["prediction"]
        else ("swap_out" if b["prediction"] else "both_approve")
        for a, b in zip(champion, challenger, strict=True)
    )
    assert {cell: entry["count"] for cell, entry in report["swap_sets"].items()} == dict(cells)
    assert sum(cells.values()) == len(applicants) and cells["swap_in"] and cells["swap_out"]
    approved = sum(1 - answer["prediction"] for answer in challenger) / len(applicants)
    assert report["approval_rate"]["challenger"] == round(approved, 6)
    assert report["swap_share"] == round((cells["swap_in"] + cells["swap_out"]) / 6000, 6)
    changes = [b["score"] - a["score"] for a, b in zip(champion, challenger, strict=True)]
    assert report["score_shift"]["mean_change"] == round(float(np.mean(changes)), 6)
    assert report["score_shift"]["change_quantiles"]["p50"] == int(
        np.quantile(changes, 0.5, method="inverted_cdf")
    )
    probabilities = [[a["probability"] for a in answers] for answers in (champion, challenger)]
    assert report["score_shift"]["spearman_probability"] == pytest.approx(
        spearmanr(*probabilities).statistic, abs=2e-3
    )
    for swap in ("swap_in", "swap_out"):
        for model, answers in (("champion", champion), ("challenger", challenger)):
            codes = Counter(
                reason["code"]
                for a, b, answer in zip(champion, challenger, answers, strict=True)
                if (swap == "swap_in") == bool(a["prediction"]) and a["prediction"] != b[
                    "prediction"]
                for reason in answer["reasons"]
            )  # fmt: skip
            top = report["swapped_reasons"][swap][model]
            assert [(r["code"], r["count"]) for r in top] == codes.most_common(len(top))
    bands = report["swap_sets_by_champion_score"]
    assert sum(band["records"] for band in bands) == len(applicants)
    assert sum(band["swap_in"] for band in bands) == cells["swap_in"]
    page = render(report | metadata())
    assert page.count("<svg") == 2 and "<script" not in page
    assert "no outcomes are recorded yet" in page


def metadata() -> dict:
    entry = {"model_name": "credit-risk-model", "model_version": "1", "run_id": "r",
             "decision_threshold": 0.3}  # fmt: skip
    return {
        "champion": entry,
        "challenger": entry | {"model_version": "2"},
        "log_directory": "/log",
        "window": {"since": None, "until": None, "first_day": "2026-12-01",
                   "last_day": "2026-12-01"},
        "generated_at": "2026-12-01T00:00:00+00:00",
    }  # fmt: skip


def test_records_of_other_versions_are_skipped_and_named(models, logged, tmp_path):
    directory, applicants = logged
    with pytest.raises(DriftError, match=r"model version 1 \(6000 records\), none of version 7"):
        compared(directory, models["logistic_regression"], version="7")
    log_answers(tmp_path, models["logistic_regression"], applicants[:300], version="2")
    log_answers(tmp_path, models["hist_gradient_boosting"], applicants[:200])
    tally = compared(tmp_path, models["hist_gradient_boosting"])
    assert tally.records == 200 and summary(tally, 0.05)["skipped"]["other_model_versions"] == {
        "2": 300
    }


@pytest.fixture(scope="module")
def registry(tmp_path_factory, logged):
    """A project whose registry holds version 1 (gradient boosting, Production, served) and
    version 2 (logistic regression, rejected by the gate); a log of version 1's answers."""
    from mlflow import MlflowClient

    from credit_risk.ml.model_file import load_model
    from credit_risk.serving.release import download_verified, registry_record

    folder, env = make_served_project(tmp_path_factory.mktemp("compare-project"))
    params = (folder / "params.yaml").read_text()
    challenger = params.replace("model: hist_gradient_boosting", "model: logistic_regression")
    rejected = challenger.replace("max_auc_drop: 0.005", "max_auc_drop: -1")  # not Production
    (folder / "params.yaml").write_text(rejected)
    run([sys.executable, "-c", PIPELINE], folder, env)
    (folder / "params.yaml").write_text(params)
    uri = env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("credit-risk-model", "production").version) == "1"
    served = registry_record(client, uri, client.get_model_version("credit-risk-model", "1"),
                             "Production", "production")  # fmt: skip
    model = load_model(download_verified(uri, served, folder / "v1"))
    log_answers(folder / "log", model, logged[1])
    return folder, env


def compare(registry, *args: str, log=None) -> subprocess.CompletedProcess:
    folder, env = registry
    command = [CREDIT_RISK, "compare", *args]
    if log:
        env = env | {"CREDIT_RISK_PREDICTION_LOG": str(log)}
    return subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)


@pytest.mark.slow  # a real MLflow store and the credit-risk command
def test_command_exit_statuses(registry):
    folder, env = registry
    log = folder / "log"
    same = compare(registry, "1", log=log)
    assert same.returncode == 0, same.stderr
    assert "swap share 0.00% (swap-ins 0, swap-outs 0) within compare.max_swap_share" in same.stdout
    assert "logged to MLflow run" in same.stdout
    report = json.loads((folder / "reports/compare/compare.json").read_text())
    assert report["champion"]["model_version"] == report["challenger"]["model_version"] == "1"
    (folder / "params.yaml").write_text(
        (folder / "params.yaml").read_text().replace("max_swap_share: 0.05", "max_swap_share: 0")
    )
    above = compare(registry, "2", str(log), "--output", "lr")
    assert above.returncode == 3, above.stderr
    assert " above compare.max_swap_share 0;" in above.stdout
    assert (folder / "lr" / "compare.html").read_text().startswith("<!DOCTYPE html>")
    for args, message in [
        ((), "no challenger: credit-risk-model has no alias @challenger"),
        (("9",), "no challenger: credit-risk-model has no version 9"),
        (("1", str(folder / "empty")), "no prediction log files"),
    ]:
        failed = compare(registry, *args, log=log)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert failed.stderr.startswith("compare: error: ") and message in failed.stderr
        assert failed.stderr.count("\n") == 1
    for args in (("1", "--since", "yesterday"), ("x/y",), ("1", "--since", "2026-12-02",
                 "--until", "2026-12-01")):  # fmt: skip
        assert compare(registry, *args, log=log).returncode == 2


@pytest.mark.slow  # a real MLflow store and the credit-risk command
def test_an_unverifiable_challenger_is_refused(registry):
    import mlflow

    folder, env = registry
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    original = client.get_model_version("credit-risk-model", "2").tags["model_sha256"]
    client.set_model_version_tag("credit-risk-model", "2", "model_sha256", "0" * 64)
    try:
        failed = compare(registry, "2", log=folder / "log")
    finally:
        client.set_model_version_tag("credit-risk-model", "2", "model_sha256", original)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1
    assert "the artifact was changed after registration: refusing" in failed.stderr
