"""The whole pipeline on the real Kaggle rows (skipped where the file is absent)."""

import json
import time
from pathlib import Path

import pytest
from conftest import REAL_DATA, make_project_repo, run
from test_pipeline_dvc import embedded_uri, registry_state

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"{REAL_DATA} is not on this machine"),
]


def test_pipeline_on_the_real_kaggle_file_is_reproducible_to_the_byte(tmp_path: Path):
    """`dvc exp run -S data.raw=...` in two fresh repositories: the same model bytes, metrics
    and lock file; a second `dvc repro` retrains nothing."""
    outcomes = []
    for name in ("first", "second"):
        repo = make_project_repo(tmp_path / name)
        started = time.monotonic()
        run(["dvc", "exp", "run", "-S", f"data.raw={REAL_DATA}"], repo)
        full = time.monotonic() - started
        started = time.monotonic()
        noop = run(["dvc", "repro"], repo)
        again = time.monotonic() - started
        assert "Running stage 'train'" not in noop.stdout
        state = registry_state(embedded_uri(repo))  # an experiment registers, never promotes
        assert state["versions"] == [1] and state["production"] is None
        fingerprint = json.loads((repo / "data/dataset_fingerprint.json").read_text())
        assert fingerprint["rows"] == 120_000 and fingerprint["positives"] == 8_021
        metrics = json.loads((repo / "reports/metrics.json").read_text())
        assert metrics["roc_auc"] > 0.85
        lock = (repo / "dvc.lock").read_text().replace(str(REAL_DATA), "REAL_DATA")
        outcomes.append(((repo / "models/model.skops").read_bytes(), metrics, lock))
        print(f"real data ({name}): full exp run {full:.1f} s, no-op repro {again:.1f} s, "
              f"test ROC AUC {metrics['roc_auc']:.4f}")  # fmt: skip
    assert outcomes[0] == outcomes[1]
