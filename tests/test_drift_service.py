"""``credit-risk drift`` end to end: a model trained on the real Kaggle rows, served by a real
``bentoml serve``, fed the unseen Kaggle applicants (``cs-test.csv``) through ``/predict/batch``,
as they are and shifted; the report in MLflow and in a real headless browser.

Skipped where the Kaggle files are absent. The data is only read from where it lies; the
project, logs and reports live in temporary folders.
"""

import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import CREDIT_RISK, REAL_DATA, Server, make_served_project
from httpx import Client
from PIL import Image

from credit_risk.ml.api_bodies import api_bodies
from credit_risk.ml.contract import KAGGLE_TO_CANONICAL
from credit_risk.serving.schemas import MAX_BATCH_ROWS

UNSEEN = REAL_DATA.with_name("cs-test.csv")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REAL_DATA.is_file() and UNSEEN.is_file()),
        reason=f"{REAL_DATA} or {UNSEEN} is not on this machine",
    ),
]


@pytest.fixture(scope="module")
def real_project(tmp_path_factory) -> tuple[Path, dict]:
    return make_served_project(tmp_path_factory.mktemp("real-project"), REAL_DATA)


@pytest.fixture(scope="module")
def unseen() -> pd.DataFrame:
    """The applicants of ``cs-test.csv`` (no target), canonical columns."""
    table = pd.read_csv(UNSEEN, index_col=0).drop(columns="SeriousDlqin2yrs")
    return table.rename(columns=KAGGLE_TO_CANONICAL)


def serve_and_report(project: tuple[Path, dict], rows: pd.DataFrame, name: str):
    """Serve, send ``rows`` through ``/predict/batch``, stop; run ``credit-risk drift`` on the
    log. Returns the command's result and the report folder."""
    folder, env = project
    log, output = folder / f"log-{name}", folder / f"report-{name}"
    env = env | {"CREDIT_RISK_PREDICTION_LOG": str(log)}
    server = Server(env, folder)
    try:
        applicants = api_bodies(rows)
        with Client(base_url=server.url, timeout=300) as client:
            for start in range(0, len(applicants), MAX_BATCH_ROWS):
                batch = applicants[start : start + MAX_BATCH_ROWS]
                answer = client.post("/predict/batch", json={"applicants": batch})
                assert answer.status_code == 200, answer.text[:500]
    finally:
        server.stop()
    command = [CREDIT_RISK, "drift", "--output", str(output)]
    result = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)
    return result, output


@pytest.fixture(scope="module")
def stable(real_project, unseen):
    return serve_and_report(real_project, unseen, "stable")


def test_unseen_real_applicants_give_a_stable_report(real_project, unseen, stable):
    result, output = stable
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((output / "drift.json").read_text())
    assert report["records"] == len(unseen) and report["skipped"]["corrupt_lines"] == 0
    assert report["model"]["version"] == "1"
    compared = [*report["features"].values(), report["probability"], report["score"]]
    assert all(r["status"] != "significant" for r in compared), {
        name: r["psi"] for name, r in report["features"].items()
    }
    assert report["probability"]["psi"] < 0.1
    psi = {name: r["psi"] for name, r in [*report["features"].items(), ("probability", report[
        "probability"]), ("score", report["score"])]}  # fmt: skip
    print(f"unseen Kaggle applicants: {result.stdout.strip()}\nPSI: {psi}")


def test_the_serving_run_holds_the_psi_metrics_and_the_report(real_project, stable):
    folder, env = real_project
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    report = json.loads((stable[1] / "drift.json").read_text())
    (run,) = client.search_runs(
        [client.get_experiment_by_name("credit-risk-prediction").experiment_id],
        filter_string="tags.serving_model_version = '1'",
    )
    assert run.info.run_name == "serving-v1"
    assert run.data.metrics["drift_psi_age"] == report["features"]["age"]["psi"]
    assert run.data.metrics["drift_psi_probability"] == report["probability"]["psi"]
    (stamp,) = client.list_artifacts(run.info.run_id, "drift")
    names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, stamp.path)}
    assert names == {"drift.html", "drift.json"}
    logged = Path(client.download_artifacts(run.info.run_id, f"{stamp.path}/drift.json"))
    assert json.loads(logged.read_text())["features"] == report["features"]


def test_shifted_income_and_age_are_flagged_significant(real_project, unseen):
    shifted = unseen.copy()
    shifted["MonthlyIncome"] = shifted["MonthlyIncome"] / 2
    shifted["age"] = (shifted["age"] + 15).clip(upper=120)
    result, output = serve_and_report(real_project, shifted, "shifted")
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads((output / "drift.json").read_text())
    flagged = {name for name, r in report["features"].items() if r["status"] == "significant"}
    assert flagged == {"MonthlyIncome", "age"}
    assert report["status"] == "significant"
    print(f"shifted applicants: {result.stdout.strip()}")


def test_the_report_renders_in_a_headless_browser(stable, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    screenshot = tmp_path / "drift.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={screenshot}", "--window-size=1280,2600",
         (stable[1] / "drift.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1280, 2600)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50  # text, bars, badges: not a blank page
    pixels = np.asarray(image)
    bar_orange = np.all(np.abs(pixels.astype(int) - (0xF0, 0x8A, 0x24)) < 8, axis=2)
    assert bar_orange.sum() > 1000  # the current distribution's bars were drawn
