"""``credit-risk compare`` end to end: a model trained on the real Kaggle rows, served by a real
``bentoml serve``, answers the unseen Kaggle applicants (``cs-test.csv``) through
``/predict/batch``; a logistic-regression challenger registered in the same store is compared
on the log, then promoted and served, and answers the same applicants as the report said it
would. The report in MLflow and in a real headless browser.

Skipped where the Kaggle files are absent. The project, logs and reports live in temporary
folders.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import CREDIT_RISK, PIPELINE, REAL_DATA, Server, make_served_project, run
from httpx import Client
from PIL import Image
from test_drift_service import UNSEEN, unseen  # noqa: F401 - unseen is a fixture

from credit_risk.ml.api_bodies import api_bodies
from credit_risk.registry.names import MODEL_NAME
from credit_risk.serving.schemas import MAX_BATCH_ROWS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REAL_DATA.is_file() and UNSEEN.is_file()),
        reason=f"{REAL_DATA} or {UNSEEN} is not on this machine",
    ),
]


def serve(folder: Path, env: dict, applicants: list[dict], log: Path) -> list[dict]:
    """Serve the imported model, send ``applicants`` through ``/predict/batch``, stop; the
    answers in order."""
    server = Server(env | {"CREDIT_RISK_PREDICTION_LOG": str(log)}, folder)
    answers = []
    try:
        with Client(base_url=server.url, timeout=300) as client:
            for start in range(0, len(applicants), MAX_BATCH_ROWS):
                batch = applicants[start : start + MAX_BATCH_ROWS]
                answer = client.post("/predict/batch", json={"applicants": batch})
                assert answer.status_code == 200, answer.text[:500]
                answers += answer.json()["predictions"]
    finally:
        server.stop()
    return answers


@pytest.fixture(scope="module")
def served(tmp_path_factory, unseen):  # noqa: F811 - the imported fixture
    """Version 1 (gradient boosting on the real rows, Production) served the unseen applicants;
    version 2 (logistic regression, rejected by the gate) registered in the same store."""
    folder, env = make_served_project(tmp_path_factory.mktemp("compare-real"), REAL_DATA)
    applicants = api_bodies(unseen)
    champion = serve(folder, env, applicants, folder / "log")
    params = (folder / "params.yaml").read_text()
    challenger = params.replace("model: hist_gradient_boosting", "model: logistic_regression")
    (folder / "params.yaml").write_text(challenger)
    run([sys.executable, "-c", PIPELINE], folder, env)
    (folder / "params.yaml").write_text(params)
    return folder, env, applicants, champion


def compare(served, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    folder, env, _, _ = served
    output = folder / f"report-{args[0]}"
    command = [CREDIT_RISK, "compare", *args, str(folder / "log"), "--output", str(output)]
    result = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    return result, json.loads((output / "compare.json").read_text())


def test_the_same_model_as_challenger_changes_nobody(served):
    result, report = compare(served, "1")
    assert result.returncode == 0, result.stdout
    cells = report["swap_sets"]
    assert cells["swap_in"]["count"] == cells["swap_out"]["count"] == 0
    both = cells["both_approve"]["count"] + cells["both_decline"]["count"]
    assert both == report["records"] == len(served[2])
    assert report["score_shift"]["psi"] == 0 and report["score_shift"]["mean_change"] == 0
    assert report["score_shift"]["spearman_probability"] == 1
    print(result.stdout.strip())


@pytest.fixture(scope="module")
def challenger_report(served):
    return compare(served, "2")


def test_the_promoted_challenger_answers_as_the_report_said(served, challenger_report):
    folder, env, applicants, champion = served
    result, report = challenger_report
    cells = {cell: entry["count"] for cell, entry in report["swap_sets"].items()}
    assert sum(cells.values()) == report["records"] == len(applicants)
    assert report["challenger"]["model_version"] == "2" and cells["swap_in"] + cells["swap_out"]
    reason = "compared on the unseen applicants"
    run([CREDIT_RISK, "promote", "2", "--reason", reason, "--override-gate"], folder, env)
    run([CREDIT_RISK, "import"], folder, env)
    challenger = serve(folder, env, applicants, folder / "log-promoted")
    assert {answer["model_version"] for answer in challenger} == {"2"}
    approved = sum(1 - answer["prediction"] for answer in challenger) / len(applicants)
    assert report["approval_rate"]["challenger"] == round(approved, 6)
    champion_approved = sum(1 - answer["prediction"] for answer in champion) / len(applicants)
    assert report["approval_rate"]["champion"] == round(champion_approved, 6)
    pairs = [(a["prediction"], b["prediction"]) for a, b in zip(champion, challenger, strict=True)]
    assert cells["swap_in"] == pairs.count((1, 0)) and cells["swap_out"] == pairs.count((0, 1))
    changes = [b["score"] - a["score"] for a, b in zip(champion, challenger, strict=True)]
    assert report["score_shift"]["mean_change"] == round(float(np.mean(changes)), 6)
    print(result.stdout.strip())


def test_the_challengers_run_holds_the_report(served, challenger_report):
    folder, env, _, _ = served
    report = challenger_report[1]
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_id = client.get_model_version(MODEL_NAME, "2").run_id
    assert report["challenger"]["run_id"] == run_id
    metrics = client.get_run(run_id).data.metrics
    assert metrics["compare_swap_share"] == report["swap_share"]
    assert metrics["compare_approval_rate_challenger"] == report["approval_rate"]["challenger"]
    (stamp,) = client.list_artifacts(run_id, "compare")
    names = {Path(a.path).name for a in client.list_artifacts(run_id, stamp.path)}
    assert names == {"compare.html", "compare.json"}
    logged = Path(client.download_artifacts(run_id, f"{stamp.path}/compare.json"))
    assert json.loads(logged.read_text())["swap_sets"] == report["swap_sets"]


def test_the_report_renders_in_a_headless_browser(served, challenger_report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    screenshot = tmp_path / "compare.png"
    page = served[0] / "report-2" / "compare.html"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={screenshot}", "--window-size=1280,2200", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1280, 2200)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50  # text, bars, badge: not a blank page
    pixels = np.asarray(image).astype(int)
    challenger_bars = np.all(np.abs(pixels - (0xF0, 0x8A, 0x24)) < 8, axis=2)
    champion_bars = np.all(np.abs(pixels - (0x7A, 0x8C, 0xA3)) < 8, axis=2)
    assert challenger_bars.sum() > 1000 and champion_bars.sum() > 1000
