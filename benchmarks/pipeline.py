"""Benchmark the pipeline on the real Kaggle rows: wall times of `dvc repro` and test ROC AUC.

Copies the project into a temporary git repository, points ``data.raw`` at the real file, then
times a full ``dvc repro`` (MLflow logging included, embedded SQLite store) and no-op ones, and
runs the pipeline once more without monotone constraints (``dvc exp run``) to compare. For
the AUC it also fits, on the same split, the two reference models the targets name:
HistGradientBoosting with default settings and the original project's random forest
(100 trees, depth 10, median fill).

    python benchmarks/pipeline.py [--data ../shared/data/gmsc/cs-training.csv]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline

from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.pipeline.paths import read_splits

PROJECT = Path(__file__).resolve().parent.parent
NOOP_RUNS = 5
COPIED = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config", "stages", "src"]


def timed(command: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=PROJECT.parent / "shared/data/gmsc/cs-training.csv"
    )
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        for name in COPIED:
            source, target = PROJECT / name, repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, target)
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["data"]["raw"] = str(args.data.resolve())
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
        subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
        subprocess.run([*git, "commit", "-qm", "bench"], cwd=repo, check=True)

        full = timed(["dvc", "repro"], repo, env)
        noops = sorted(timed(["dvc", "repro"], repo, env) for _ in range(NOOP_RUNS))
        metrics = json.loads((repo / "reports/metrics.json").read_text())
        auc = metrics["roc_auc"]
        train, test = read_splits(repo)
        # The same pipeline without the monotone constraints, as a DVC experiment.
        timed(["dvc", "exp", "run", "-S", "train.monotone=false"], repo, env)
        free = json.loads((repo / "reports/metrics.json").read_text())

    x_train, y_train = train.loc[:, FEATURE_NAMES], train[TARGET]
    x_test, y_test = test.loc[:, FEATURE_NAMES], test[TARGET]
    references = {
        "HistGradientBoosting defaults": HistGradientBoostingClassifier(random_state=42),
        "random forest (100 trees, depth 10, median fill)": make_pipeline(
            SimpleImputer(strategy="median"),
            RandomForestClassifier(n_estimators=100, max_depth=10, random_state=42, n_jobs=-1),
        ),
    }
    print(f"data: {args.data} ({len(train) + len(test)} rows), load average {os.getloadavg()}")
    print(f"full dvc repro:  {full:6.1f} s   (target <= 15 s)")
    print(
        f"no-op dvc repro: {statistics.median(noops):6.1f} s   (target <= 2.5 s; median of "
        f"{NOOP_RUNS}, from {noops[0]:.1f} to {noops[-1]:.1f} s)"
    )
    print(f"pipeline test ROC AUC: {auc:.4f}   (target >= 0.864)")
    print(
        f"  monotone constraints cost {free['roc_auc'] - auc:+.4f} AUC (target <= 0.002): "
        f"{auc:.4f} with, {free['roc_auc']:.4f} without (dvc exp run -S train.monotone=false)"
    )
    print(
        f"  expected calibration error {metrics['calibration_error']:.4f} (target <= 0.005), "
        f"{free['calibration_error']:.4f} without the constraints"
    )
    for name, model in references.items():
        model.fit(x_train, y_train)
        reference = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
        print(f"  vs {name}: {reference:.4f} (difference {auc - reference:+.4f})")


if __name__ == "__main__":
    main()
