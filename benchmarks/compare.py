"""Benchmark ``credit-risk compare``: wall time and peak memory for logs of growing size.

Runs the pipeline twice on the embedded synthetic data into a temporary MLflow store: version 1
(gradient boosting, Production) and version 2 (the challenger, gradient boosting too unless
``--challenger logistic_regression``: the slower model to re-score). Version 1's model, as
downloaded and verified from the registry, answers 20,000 of the applicants as the service
does; logs of N records are written as ``benchmarks/drift.py`` writes them. Then the real
command compares version 2 on each log, e.g.::

    python benchmarks/compare.py                    # 250,000 and 1,000,000 records
    python benchmarks/compare.py --records 100000
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from drift import DISTINCT, PROJECT, measure, write_log
from mlflow import MlflowClient

from credit_risk.ml.contract import FEATURE_NAMES
from credit_risk.ml.data import load_applicants
from credit_risk.ml.model_file import load_model
from credit_risk.ml.scorecard import ScoreScale, assess
from credit_risk.params import load_params
from credit_risk.registry.names import MODEL_NAME
from credit_risk.serving.release import download_verified, registry_record

STAGES = (
    "from credit_risk.params import load_params; "
    "from credit_risk.pipeline import prepare, fingerprint, train, register; p = load_params(); "
    "[step(p) for step in (prepare.prepare, fingerprint.fingerprint, train.train, "
    "register.register)]"
)


def registered_project(folder: Path, challenger: str) -> dict:
    """``folder`` with an MLflow store holding versions 1 (Production) and 2; its environment."""
    shutil.copytree(PROJECT / "data", folder / "data", ignore=shutil.ignore_patterns("prepared"))
    params = (PROJECT / "params.yaml").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    second = params.replace("model: hist_gradient_boosting", f"model: {challenger}")
    second = second.replace("learning_rate: 0.05", "learning_rate: 0.06")  # another model
    for text in (params, second.replace("max_auc_drop: 0.005", "max_auc_drop: -1")):
        (folder / "params.yaml").write_text(text)
        subprocess.run([sys.executable, "-c", STAGES], cwd=folder, env=env, check=True,
                       capture_output=True)  # fmt: skip
    (folder / "params.yaml").write_text(params)
    return env


def champion_answers(folder: Path, env: dict, params: dict):
    """Version 1's answers to the first :data:`DISTINCT` synthetic applicants."""
    uri = env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    version = client.get_model_version(MODEL_NAME, "1")
    served = registry_record(client, uri, version, "Production", "production")
    model = load_model(download_verified(uri, served, folder / "champion"))
    rows = load_applicants(PROJECT / "data" / "gmsc-synthetic.csv")
    values = rows.loc[:, FEATURE_NAMES].to_numpy("float64")[:DISTINCT]
    scale = ScoreScale.from_params(params["score"])
    return values, list(zip(*assess(model, values, scale), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument(
        "--challenger",
        choices=["hist_gradient_boosting", "logistic_regression"],
        default="hist_gradient_boosting",
    )
    args = parser.parse_args()
    params = load_params(PROJECT / "params.yaml")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        env = registered_project(folder, args.challenger)
        values, answers = champion_answers(folder, env, params)
        for records in args.records:
            log = folder / f"log-{records}"
            write_log(log, records, values, answers, params["serve"]["threshold"])
            size = sum(path.stat().st_size for path in log.iterdir()) / 2**20
            seconds, rss, tree, output = measure(folder, log, ("compare", "2"), env)
            print(f"{records:>9,} records ({size:,.0f} MiB of log): {seconds:.1f} s, peak RSS "
                  f"{rss:,.0f} MiB (command), {tree:,.0f} MiB (with its workers)")  # fmt: skip
            print(f"          {output}")
            shutil.rmtree(log)


if __name__ == "__main__":
    main()
