"""Registering at the same time against one real ``mlflow server``: register stages of the
same model and of different models in parallel, repeated; one run per model fingerprint, and
the alias ``production`` and the stage ``Production`` agree at the end."""

import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    REGISTER,
    TRAIN,
    make_project_folder,
    pipeline_env,
    run,
    start_mlflow_server,
    stop,
)
from mlflow import MlflowClient

pytestmark = pytest.mark.slow
MODEL = "credit-risk-model"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Trained project folders: two of the same model (a, a-again), two other models."""
    folders = {}
    for name, max_iter in [("a", 200), ("a-again", 200), ("b", 190), ("c", 210)]:
        folder = make_project_folder(tmp_path_factory.mktemp(name))
        params = (folder / "params.yaml").read_text()
        (folder / "params.yaml").write_text(
            params.replace("max_iter: 200", f"max_iter: {max_iter}")
        )
        run([sys.executable, "-c", TRAIN], folder)
        folders[name] = folder
    return folders


def register_at_once(folders: list[Path], url: str) -> None:
    """Run the register stage of every folder at the same time; all must succeed."""
    env = pipeline_env(MLFLOW_TRACKING_URI=url)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in folders
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stdout + stderr


def assert_consistent(url: str, models: int) -> None:
    """One finished run per model fingerprint, one version per run; alias = stage."""
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("credit-risk-prediction").experiment_id
    runs = client.search_runs([experiment], "tags.model_fingerprint != ''")
    per_fingerprint = Counter(run.data.tags["model_fingerprint"] for run in runs)
    assert len(per_fingerprint) == models and set(per_fingerprint.values()) == {1}
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert Counter(version.run_id for version in versions) == Counter(
        {run.info.run_id: 1 for run in runs}
    )
    production = client.get_model_version_by_alias(MODEL, "production").version
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        staged = [v.version for v in versions if v.current_stage == "Production"]
    assert staged == [production]
    assert MODEL + ".registration-lock" not in {m.name for m in client.search_registered_models()}


@pytest.mark.parametrize("attempt", [1, 2])
def test_parallel_registrations_leave_one_run_per_model_and_one_production(
    trained, tmp_path, attempt
):
    process, url = start_mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "server.log"
    )
    try:
        register_at_once([trained["a"], trained["a-again"]], url)
        assert_consistent(url, models=1)
        register_at_once([trained["b"], trained["c"]], url)
        assert_consistent(url, models=3)
        register_at_once(list(trained.values()), url)
        assert_consistent(url, models=3)
    finally:
        stop(process)
