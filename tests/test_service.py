"""The BentoML service over real HTTP: a `bentoml serve` subprocess on a free loopback port.

A tiny Production model is trained by the pipeline functions into a temporary MLflow store and
imported into a temporary BentoML home; nothing touches the project's own stores.
"""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from conftest import (
    BENTOML,
    CREDIT_RISK,
    PROJECT,
    SERVICE,
    Server,
    free_port,
    hammering,
    make_project_folder,
    pipeline_env,
)

from credit_risk.ml.contract import EXAMPLE_APPLICANT as SAMPLE
from credit_risk.ml.contract import FEATURE_NAMES
from credit_risk.params import load_params
from credit_risk.serving.prediction_log import read_records

pytestmark = pytest.mark.slow  # real `bentoml serve`, `credit-risk` and pipeline runs
THRESHOLD = load_params(PROJECT / "params.yaml")["serve"]["threshold"]
RISKY = SAMPLE | {"NumberOfTimes90DaysLate": 3, "RevolvingUtilizationOfUnsecuredLines": 1.2}
CREDIT_RISK_IMPORT = [CREDIT_RISK, "import"]


def run(args: list[str], env: dict, cwd: Path, check: bool = True):
    """Run a command; fail with its output when ``check`` and it fails."""
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        pytest.fail(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def server(project):
    folder, env = project
    server = Server(env, folder)
    yield server
    server.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_import_refuses_without_production_model(project, tmp_path):
    folder, env = project
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    mlflow.MlflowClient(empty).search_experiments()  # a store that exists, holding no model
    env = env | {"MLFLOW_TRACKING_URI": empty, "BENTOML_HOME": str(tmp_path / "bentoml")}
    result = run(CREDIT_RISK_IMPORT, env, folder, False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert empty in lines[0] and "credit-risk-model" in lines[0] and "Production" in lines[0]
    assert "run `dvc repro`" in lines[0]
    assert not (tmp_path / "bentoml" / "models" / "credit-risk-model").exists()


@pytest.mark.parametrize(
    "command", [["import"], ["status"], ["promote", "1", "--reason", "a test"]]
)
def test_commands_before_dvc_repro_name_it_and_create_no_store(command, tmp_path):
    """No ``mlflow.db`` yet (a fresh clone): one line naming `dvc repro`; no file is made."""
    folder = make_project_folder(tmp_path / "project")
    before = sorted(folder.rglob("*"))
    env = pipeline_env(BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true")
    result = run([CREDIT_RISK, *command], env, folder, False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"{command[0]}: error: no MLflow tracking store at sqlite:///{folder / 'mlflow.db'}: "
        "run `dvc repro` first (it trains, registers and promotes the model)\n"
    )
    assert sorted(folder.rglob("*")) == before and not (tmp_path / "bentoml" / "models").exists()


def test_import_again_keeps_the_served_model(project):
    folder, env = project
    result = run(CREDIT_RISK_IMPORT, env, folder)
    assert "is already credit-risk-model version 1 (Production)" in result.stdout


def credit_risk_status(env: dict, cwd: Path) -> tuple[str, dict]:
    """`credit-risk status` as text and as JSON."""
    command = [str(Path(sys.executable).parent / "credit-risk"), "status"]
    text = run(command, env, cwd).stdout
    return text, json.loads(run([*command, "--json"], env, cwd).stdout)


def test_status_shows_registry_and_bentoml_store(project):
    folder, env = project
    text, status = credit_risk_status(env, folder)
    production, imported = status["production"], status["imported"]
    assert status["tracking_uri"] == env["MLFLOW_TRACKING_URI"]
    assert production["version"] == "1" and production["gate_decision"] == "promoted"
    assert len(production["dataset_hash"]) == 64 and production["serve_threshold"] == "0.3"
    assert imported["model_version"] == "1" and imported["run_id"] == production["run_id"]
    assert status["import_is_current"] is True
    assert "credit-risk-model version 1 is Production" in text and "up to date" in text
    assert production["run_id"] in text and production["dataset_hash"] in text


def serve_refused(env: dict, cwd: Path) -> str:
    """`bentoml serve` that must refuse to start: its one line of explanation."""
    command = ["bentoml", "serve", "credit_risk.serving.service:CreditRiskService", "--port", "0"]
    result = run(command, env, cwd, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "refusing to start" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_serve_before_import_names_it(tmp_path):
    """An empty BentoML store: one line naming `credit-risk import`, not BentoML's cloud."""
    home = tmp_path / "bentoml"
    env = pipeline_env(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true")
    result = run(["bentoml", "serve", SERVICE, "--port", "0"], env, tmp_path, False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: [serve] `serve` failed: credit-risk service: no imported model "
        f"credit-risk-model in the BentoML store {home}; run `credit-risk import` first"
    ]


def test_serve_refuses_when_the_prediction_log_cannot_be_written(project, tmp_path):
    folder, env = project
    (tmp_path / "a-file").write_text("")
    line = serve_refused(
        env | {"CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "a-file" / "log")}, folder
    )
    assert "cannot write the prediction log in" in line and "a-file" in line


def test_serve_refuses_without_production_version(project, tmp_path):
    folder, env = project
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    mlflow.MlflowClient(empty).search_experiments()
    line = serve_refused(env | {"MLFLOW_TRACKING_URI": empty}, folder)
    assert empty in line and "credit-risk-model" in line and "no Production version" in line


def test_serve_follows_production_beyond_the_imported_model(project, tmp_path):
    """Production moved by hand: `status` says the import is not current, and `bentoml serve`
    serves the Production version, fetched and verified at start, without `credit-risk import`."""
    folder, env = project
    shutil.copy(folder / "mlflow.db", tmp_path / "mlflow.db")
    env = env | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    files = client.get_model_version_download_uri("credit-risk-model", "1")
    run_id = client.get_model_version("credit-risk-model", "1").run_id
    second = client.create_model_version("credit-risk-model", files, run_id)
    for tag in ("serve_threshold", "score_scale", "model_sha256"):
        value = client.get_model_version("credit-risk-model", "1").tags[tag]
        client.set_model_version_tag("credit-risk-model", second.version, tag, value)
    client.set_registered_model_alias("credit-risk-model", "production", second.version)

    text, status = credit_risk_status(env, folder)
    assert status["production"]["version"] == "2" and status["imported"]["model_version"] == "1"
    assert status["import_is_current"] is False and "run `credit-risk import`" in text

    server = Server(env | {"CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions")}, folder)
    try:
        info = httpx.get(f"{server.url}/model/info").json()
        assert info["model_version"] == "2" and info["loaded_from"].startswith("MLflow registry")
        assert info["bento_model"].startswith("credit-risk-model:")  # the fallback, version 1
        answer = httpx.post(f"{server.url}/predict", json=SAMPLE).json()
        assert answer["model_version"] == "2"
    finally:
        server.stop()


def test_verify_script(server):
    result = subprocess.run(
        [str(PROJECT / "tests" / "verify.sh"), server.url], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "/predict prediction" in result.stdout


def test_status_health_and_model_info(client):
    assert client.get("/").json()["status"] == "ok"
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert (health["model_version"], health["model_stage"]) == ("1", "Production")
    assert health["prediction_log"]["ok"] is True
    info = client.get("/model/info").json()
    assert info["model_stage"] == "Production" and info["alias"] == "production"
    assert info["model_name"] == "credit-risk-model" and info["model_version"] == "1"
    assert len(info["dataset_hash"]) == 64 and len(info["run_id"]) == 32
    assert 0.5 < info["metrics"]["roc_auc"] <= 1 and info["trained_at"]
    assert info["decision_threshold"] == THRESHOLD


def test_predict_matches_the_mlflow_model_and_threshold(project, client):
    _, env = project
    answers = [client.post("/predict", json=body).json() for body in (SAMPLE, RISKY)]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model("models:/credit-risk-model@production")
    frame = pd.DataFrame([SAMPLE, RISKY], columns=list(FEATURE_NAMES)).astype("float64")
    expected = model.predict(frame)[:, 1]
    for answer, probability in zip(answers, expected, strict=True):
        assert answer["probability"] == probability  # to the bit (leaf masks, see ml/flat_trees)
        assert answer["prediction"] == int(probability >= THRESHOLD)
        assert answer["model_version"] == "1" and answer["prediction_id"] and answer["timestamp"]
    assert {answer["prediction"] for answer in answers} == {0, 1}


def test_batch_of_10000(client):
    rows = [SAMPLE | {"age": 20 + i % 70} for i in range(10_000)]
    answer = client.post("/predict/batch", json={"applicants": rows})
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    assert len(predictions) == 10_000 and len({p["prediction_id"] for p in predictions}) == 10_000
    single = client.post("/predict", json=rows[7]).json()  # flat trees; the batch: sklearn's
    assert predictions[7]["probability"] == single["probability"]


BAD_BODIES = [
    ("missing field", {k: v for k, v in SAMPLE.items() if k != "age"}, "age"),
    ("extra field", SAMPLE | {"SeriousDlqin2yrs": 1}, "SeriousDlqin2yrs"),
    ("negative", SAMPLE | {"DebtRatio": -1}, "DebtRatio"),
    ("above maximum", SAMPLE | {"age": 121}, "age"),
    ("fractional count", SAMPLE | {"NumberOfDependents": 1.5}, "NumberOfDependents"),
    ("string number", SAMPLE | {"MonthlyIncome": "5400"}, "MonthlyIncome"),
    ("boolean", SAMPLE | {"NumberOfTimes90DaysLate": True}, "NumberOfTimes90DaysLate"),
    ("null not nullable", SAMPLE | {"age": None}, "age"),
    ("huge integer", SAMPLE | {"NumberRealEstateLoansOrLines": 10**30}, "NumberRealEstateLoans"),
    ("NaN", json.dumps(SAMPLE).replace('"DebtRatio": 0.3', '"DebtRatio": NaN'), "DebtRatio"),
    ("Infinity", json.dumps(SAMPLE).replace("5400.0", "Infinity"), "MonthlyIncome"),
    ("overflow", json.dumps(SAMPLE).replace("5400.0", "1e999"), "MonthlyIncome"),
    ("not JSON", "{age: 1", "json_invalid"),
    ("empty", "", "missing"),
    ("list", [SAMPLE], "object"),
    ("wrapped", {"applicant": SAMPLE}, "applicant"),
]


@pytest.mark.parametrize(
    ("body", "named"), [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES]
)
def test_bad_body_is_4xx_naming_the_problem(client, body, named):
    content = body if isinstance(body, str) else json.dumps(body)
    answer = client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and named in answer.text
    batch = f'{{"applicants": [{json.dumps(SAMPLE)}, {content or "null"}]}}'
    answer = client.post(
        "/predict/batch", content=batch, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400


@pytest.mark.parametrize(
    ("path", "content", "content_type"),
    [
        ("/predict", json.dumps(SAMPLE), "multipart/form-data; boundary=x"),
        ("/predict", json.dumps(SAMPLE), "application/vnd.bentoml+pickle"),
        ("/predict", "age=1", "application/x-www-form-urlencoded"),
        ("/predict/batch", json.dumps({"applicants": [SAMPLE]}), "multipart/form-data"),
        ("/predict/batch", json.dumps({"applicants": [SAMPLE] * 10_001}), "application/json"),
        ("/predict/batch", json.dumps({"applicants": []}), "application/json"),
        ("/predict/batch", json.dumps({"applicants": [SAMPLE], "x": 1}), "application/json"),
    ],
)
def test_bad_request_is_4xx(client, path, content, content_type):
    answer = client.post(path, content=content, headers={"content-type": content_type})
    assert 400 <= answer.status_code < 500, answer.text


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_an_encoded_body_is_415_naming_the_encoding(client, encoding):
    body = gzip.compress(json.dumps(SAMPLE).encode())
    for path in ("/predict", "/predict/batch"):
        answer = client.post(
            path,
            content=body,
            headers={"content-type": "application/json", "content-encoding": encoding},
        )
        assert answer.status_code == 415 and f"Content-Encoding: {encoding}" in answer.text


def test_predictions_logged_locally_and_in_mlflow(project, server, client):
    folder, env = project
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/predict", json=SAMPLE).json(), range(64)))
    ids = {answer["prediction_id"] for answer in answers}
    records = {r["prediction_id"]: r for r in read_records(folder / "predictions")}
    assert ids <= records.keys()
    record = records[answers[0]["prediction_id"]]
    assert record["inputs"] == SAMPLE and record["model_version"] == "1"
    assert record["probability"] == answers[0]["probability"]
    assert record["prediction"] == answers[0]["prediction"]

    deadline = time.monotonic() + 30
    while (shipping := client.get("/health").json()["prediction_log"]["mlflow"])[
        "shipped_records"
    ] < len(records) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shipping["ok"] and shipping["pending_bytes"] == 0, shipping
    shipped = mlflow_records(env, shipping["run_id"])
    assert ids <= shipped.keys()
    run = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(shipping["run_id"])
    assert run.data.tags["serving_model_version"] == "1"
    assert run.data.metrics["predictions_total"] == len(shipped)
    assert 0 <= run.data.metrics["probability_mean"] <= 1


def mlflow_records(env: dict, run_id: str) -> dict[str, dict]:
    """The prediction records shipped to a run's artifacts, by id."""
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    records = {}
    for artifact in client.list_artifacts(run_id, "predictions"):
        local = Path(client.download_artifacts(run_id, artifact.path))
        for line in local.read_text().splitlines():
            records[json.loads(line)["prediction_id"]] = json.loads(line)
    return records


def shipping_error(server: Server) -> str | None:
    """The last MLflow shipping error the service reports."""
    return httpx.get(f"{server.url}/health").json()["prediction_log"]["mlflow"]["error"]


def test_sigkill_under_load_loses_no_acknowledged_prediction(project, tmp_path):
    """MLflow goes down, then SIGKILL mid-burst; a restart with MLflow back ships every record.

    The service starts against a tracking server (it checks the Production version there),
    which is then stopped.
    """
    folder, env = project
    port = free_port()
    tracking = subprocess.Popen(
        ["mlflow", "server", "--backend-store-uri", env["MLFLOW_TRACKING_URI"]]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        env = env | {
            "CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions"),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
        }
        server = Server(env, folder)
    finally:
        os.killpg(tracking.pid, signal.SIGKILL)
        tracking.wait()
    # Until a shipment has found MLflow stopped (one killed mid-request fails differently).
    deadline = time.monotonic() + 30
    while "unreachable" not in str(shipping_error(server)):
        assert time.monotonic() < deadline, "shipping to a stopped MLflow did not fail"
        time.sleep(0.3)
    with hammering(server.url, SAMPLE) as acknowledged:
        deadline = time.monotonic() + 60  # kill mid-burst, once enough answers arrived
        while len(acknowledged) <= 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        health = httpx.get(f"{server.url}/health").json()
        server.stop(signal.SIGKILL)
    assert (
        health["status"] == "degraded"
        and "unreachable" in health["prediction_log"]["mlflow"]["error"]
    )
    assert len(acknowledged) > 100
    logged = {record["prediction_id"] for record in read_records(tmp_path / "predictions")}
    assert set(acknowledged) <= logged

    restarted = Server(env | {"MLFLOW_TRACKING_URI": project[1]["MLFLOW_TRACKING_URI"]}, folder)
    try:
        deadline = time.monotonic() + 60
        while (shipping := httpx.get(f"{restarted.url}/health").json()["prediction_log"]["mlflow"])[
            "pending_bytes"
        ] and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        restarted.stop()
    assert shipping["ok"], shipping
    assert logged <= mlflow_records(project[1], shipping["run_id"]).keys()


def test_an_exported_bento_serves_from_an_empty_bentoml_home(project, tmp_path):
    """`bentoml build`, export, import into an empty BentoML home, serve outside the project.

    A bento refuses to start without API keys; with a keys file it serves, and with no tracking
    store configured it serves its packaged model unchecked. (That the bento's requirements
    suffice on their own is proved by the service image, built from them: test_containers.py.)
    """
    folder, env = project
    run(
        [BENTOML, "build", "-f", str(PROJECT / "bentofile.yaml"), str(PROJECT / "src")],
        env,
        PROJECT,
    )
    archive = tmp_path / "service.bento"
    run([BENTOML, "export", "credit-risk-service:latest", str(archive)], env, tmp_path)
    fresh = env | {
        "BENTOML_HOME": str(tmp_path / "home"),
        "CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions"),
        "PYTHONPATH": "",
    }
    fresh.pop("MLFLOW_TRACKING_URI")
    run([BENTOML, "import", str(archive)], fresh, tmp_path)
    serve = [BENTOML, "serve", "credit-risk-service:latest", "--port", "0"]
    refused = run(serve, fresh, tmp_path, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert [line for line in refused.stderr.splitlines() if "refusing to start" in line] == [
        "credit-risk service: refusing to start: no API keys: set CREDIT_RISK_API_KEYS_FILE to a "
        "keys file (`credit-risk keys add NAME`), or CREDIT_RISK_ALLOW_ANONYMOUS=1 to serve "
        "without keys"
    ]
    keys_file = tmp_path / "api-keys"
    key = run([CREDIT_RISK, "keys", "add", "verify", "--file", str(keys_file)], env, tmp_path)
    fresh["CREDIT_RISK_API_KEYS_FILE"] = str(keys_file)
    server = Server(fresh, tmp_path, "credit-risk-service:latest")
    try:
        result = subprocess.run(
            [str(PROJECT / "tests" / "verify.sh"), server.url],
            capture_output=True,
            text=True,
            env=os.environ | {"CREDIT_RISK_API_KEY": key.stdout.strip()},
        )
        health = httpx.get(f"{server.url}/health").json()
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "credit-risk-model v1 Production" in result.stdout
    # Without a tracking store nothing is shipped (no SQLite file appears), and it says so.
    shipping = health["prediction_log"]["mlflow"]
    assert health["status"] == "ok" and shipping["enabled"] is False
    assert shipping["status"].startswith("off: MLFLOW_TRACKING_URI is not set")
    assert health["production_verified"] is False and health["registry"]["check"].startswith("off")
    assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob("mlruns"))
