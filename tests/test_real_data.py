"""The whole pipeline on the real Kaggle rows (skipped where the file is absent)."""

import json
import time
from pathlib import Path

import pytest
import yaml
from conftest import REAL_DATA, run
from test_pipeline_dvc import embedded_uri, registry_state

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"{REAL_DATA} is not on this machine"),
]


def test_pipeline_on_the_real_kaggle_file(project_repo: Path):
    params_path = project_repo / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["data"]["raw"] = str(REAL_DATA)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    started = time.monotonic()
    run(["dvc", "repro"], project_repo)
    full = time.monotonic() - started
    started = time.monotonic()
    noop = run(["dvc", "repro"], project_repo)
    again = time.monotonic() - started

    fingerprint = json.loads((project_repo / "data/dataset_fingerprint.json").read_text())
    assert fingerprint["rows"] == 120_000 and fingerprint["positives"] == 8_021
    metrics = json.loads((project_repo / "reports/metrics.json").read_text())
    assert metrics["roc_auc"] > 0.85
    assert "Running stage 'train'" not in noop.stdout
    assert registry_state(embedded_uri(project_repo))["production"] == 1
    print(f"real data: full repro {full:.1f} s, no-op repro {again:.1f} s, "
          f"test ROC AUC {metrics['roc_auc']:.4f}")  # fmt: skip
