"""The pipeline's DVC semantics and reproducibility, with real ``dvc`` in temporary git repos."""

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from conftest import PROJECT, Server, make_project_repo, pipeline_env, run
from mlflow import MlflowClient

from credit_risk.ml.contract import EXAMPLE_APPLICANT, FEATURE_NAMES
from credit_risk.ml.model import predict_default_probability
from credit_risk.ml.model_file import load_model
from credit_risk.pipeline.paths import read_splits
from credit_risk.registry.lookups import production_version
from credit_risk.registry.names import EXPERIMENT_NAME, MODEL_NAME

pytestmark = pytest.mark.slow


def registry_state(uri: str) -> dict:
    """Runs, versions and the Production version (alias and stage) in an MLflow store."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    production = production_version(client)
    return {
        "runs": len(runs),
        "versions": sorted(int(v.version) for v in versions),
        "production": int(production.version) if production else None,
        "stages": {int(v.version): v.current_stage for v in versions},
    }


def embedded_uri(repo: Path) -> str:
    return f"sqlite:///{repo / 'mlflow.db'}"


def read_json(path: Path):
    return json.loads(path.read_text())


def held_out_probabilities(repo: Path) -> np.ndarray:
    """The trained model's probabilities on the prepared test split of ``repo``."""
    _, test_rows = read_splits(repo)
    return predict_default_probability(
        load_model(repo / "models/model.skops"), test_rows.loc[:, FEATURE_NAMES]
    )


def set_param(repo: Path, section: str, key: str, value) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    node = params
    for part in section.split("."):
        node = node[part]
    node[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_two_clean_runs_are_identical(tmp_path: Path):
    first = make_project_repo(tmp_path / "first")
    second = make_project_repo(tmp_path / "second")
    for repo in (first, second):
        run(["dvc", "repro"], repo)

    assert read_json(first / "data/dataset_fingerprint.json") == read_json(
        second / "data/dataset_fingerprint.json"
    )
    assert read_json(first / "reports/metrics.json") == read_json(second / "reports/metrics.json")
    assert 0.80 <= read_json(first / "reports/metrics.json")["roc_auc"] <= 0.87
    assert np.array_equal(held_out_probabilities(first), held_out_probabilities(second))
    assert read_json(first / "models/model.json") == read_json(second / "models/model.json")
    model_file = "models/model.skops"
    assert (first / model_file).read_bytes() == (second / model_file).read_bytes()
    assert (first / "dvc.lock").read_bytes() == (second / "dvc.lock").read_bytes()
    for repo in (first, second):
        state = registry_state(embedded_uri(repo))
        assert state["production"] == 1 and state["stages"] == {1: "Production"}


def test_a_fresh_copy_reproduces_the_committed_lock(tmp_path: Path):
    """What CI checks on a fresh clone: after `dvc repro`, git sees no change at all, and
    `dvc status` lists only the always-run register stage."""
    repo = tmp_path / "clone"
    tracked = run(["git", "ls-files", "-z"], PROJECT).stdout.split("\0")
    for name in filter(None, tracked):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, repo / name)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "clone"], repo)
    run(["dvc", "repro"], repo)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert run(["dvc", "status"], repo).stdout.split() == ["register:", "always", "changed"]


def test_repro_semantics_registry_and_run_cache(project_repo: Path):
    repo, uri = project_repo, embedded_uri(project_repo)
    first = run(["dvc", "repro"], repo)
    assert ran_stages(first.stdout) == {"prepare", "fingerprint", "train", "register"}
    # Quiet: each stage prints its own line; MLflow no INFO lines, no registration notices.
    chatter = ("INFO", "Successfully registered model", "Created version")
    printed = (first.stdout + first.stderr).splitlines()
    assert [line for line in printed if any(word in line for word in chatter)] == []
    assert registry_state(uri) == {
        "runs": 1, "versions": [1], "production": 1, "stages": {1: "Production"}
    }  # fmt: skip
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first model"], repo)

    # Nothing changed: only the register stage runs; the embedded store's file is as its
    # receipt left it, so the receipt stands. Once the store changed, it checks the registry.
    receipt = read_json(repo / "reports/registration.json")
    again = run(["dvc", "repro"], repo)
    assert ran_stages(again.stdout) == {"register"}
    assert "store unchanged since the last check" in again.stdout
    assert read_json(repo / "reports/registration.json") == receipt
    MlflowClient(tracking_uri=uri).set_experiment_tag(
        MlflowClient(tracking_uri=uri).get_experiment_by_name(EXPERIMENT_NAME).experiment_id,
        "touched",
        "yes",
    )
    checked = run(["dvc", "repro"], repo)
    assert "store unchanged" not in checked.stdout
    assert registry_state(uri)["runs"] == 1 and registry_state(uri)["versions"] == [1]
    receipt = read_json(repo / "reports/registration.json")
    assert receipt["decision"] == "promoted" and receipt["reason"].startswith("decided before")

    # One train param changes: train and register rerun; the weaker model is registered but
    # the gate keeps the current Production model.
    set_param(repo, "train", "model", "logistic_regression")
    changed = run(["dvc", "repro"], repo)
    assert ran_stages(changed.stdout) == {"train", "register"}
    diff = run(["dvc", "params", "diff"], repo).stdout
    assert "train.model" in diff and "logistic_regression" in diff
    receipt = read_json(repo / "reports/registration.json")
    assert receipt["decision"] == "rejected" and "max_auc_drop" in receipt["reason"]
    assert registry_state(uri) == {
        "runs": 2, "versions": [1, 2], "production": 1, "stages": {1: "Production", 2: "None"}
    }  # fmt: skip

    # A version promoted by hand (the gate overridden) stays Production: rerunning the
    # pipeline decides nothing anew.
    run(["credit-risk", "promote", "2", "--reason", "compare in production", "--override-gate"],
        repo)  # fmt: skip
    assert registry_state(uri)["stages"] == {1: "Archived", 2: "Production"}
    run(["dvc", "repro"], repo)
    assert registry_state(uri)["production"] == 2

    # Back to the committed params: DVC restores train from its run-cache without running it;
    # register finds version 1 and its earlier decision, and changes nothing.
    run(["git", "checkout", "params.yaml"], repo)
    restored = run(["dvc", "repro"], repo)
    assert "train" not in ran_stages(restored.stdout)
    assert "Stage 'train' is cached - skipping run, checking out outputs" in restored.stdout
    assert read_json(repo / "reports/registration.json")["version"] == 1
    assert registry_state(uri) == {
        "runs": 2, "versions": [1, 2], "production": 2, "stages": {1: "Archived", 2: "Production"}
    }  # fmt: skip

    # A fresh MLflow store with the DVC cache intact: the stages are restored, not rerun, and
    # register still ends with the model in Production in the new store, exactly once.
    fresh_uri = f"sqlite:///{repo / 'fresh.db'}"
    fresh_env = pipeline_env(MLFLOW_TRACKING_URI=fresh_uri)
    for output in ("models", "reports", "data/prepared", "data/dataset_fingerprint.json"):
        run(["rm", "-rf", output], repo)
    fresh = run(["dvc", "repro"], repo, fresh_env)
    assert ran_stages(fresh.stdout) == {"register"}
    assert registry_state(fresh_uri) == {
        "runs": 1, "versions": [1], "production": 1, "stages": {1: "Production"}
    }  # fmt: skip
    run(["dvc", "repro"], repo, fresh_env)
    assert registry_state(fresh_uri)["runs"] == 1 and registry_state(fresh_uri)["versions"] == [1]


def test_threshold_flows_from_params_through_the_registry_to_the_service(project_repo: Path):
    """serve.threshold: a DVC param of register, a tag on the version, served after import."""
    repo, uri = project_repo, embedded_uri(project_repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "first model"], repo)
    set_param(repo, "serve", "threshold", 0.2)

    status = run(["dvc", "status", "register"], repo).stdout
    assert "modified:" in status and "serve" in status
    diff = run(["dvc", "params", "diff"], repo).stdout
    assert "serve.threshold" in diff and "0.2" in diff
    changed = run(["dvc", "repro"], repo)
    assert ran_stages(changed.stdout) == {"register"}
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_model_version(MODEL_NAME, "1").tags["serve_threshold"] == "0.2"
    assert read_json(repo / "reports/registration.json")["serving_tags"]["serve_threshold"] == "0.2"
    assert registry_state(uri)["versions"] == [1]

    env = pipeline_env(BENTOML_HOME=str(repo / "bentoml"))
    imported = run(["credit-risk", "import"], repo, env).stdout
    assert "imported credit-risk-model version 1" in imported
    server = Server(env | {"CREDIT_RISK_PREDICTION_LOG": str(repo / "predictions")}, repo)
    try:
        assert httpx.get(f"{server.url}/model/info").json()["decision_threshold"] == 0.2
        answer = httpx.post(f"{server.url}/predict", json=EXAMPLE_APPLICANT).json()
        assert answer["prediction"] == int(answer["probability"] >= 0.2)
    finally:
        server.stop()
