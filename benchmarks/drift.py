"""Benchmark ``credit-risk drift``: wall time and peak memory for logs of growing size.

Trains the model on the embedded synthetic data, scores 20,000 of its applicants as the service
does (probability, score, reason codes), and writes logs of N records in the service's format
(files of 64 MiB, predictions spread over 30 days) to a temporary folder, with a BentoML store
holding that model's reference profile. Then runs the real command on each log and prints its
wall time and peak memory, e.g.::

    python benchmarks/drift.py                    # 250,000 and 1,000,000 records
    python benchmarks/drift.py --records 100000
"""

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bentoml
import numpy as np
import orjson
import psutil

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES
from credit_risk.ml.data import load_applicants
from credit_risk.ml.model import build_model
from credit_risk.ml.profile import build_profile, profile_bytes
from credit_risk.ml.scorecard import ScoreScale, assess
from credit_risk.params import load_params
from credit_risk.serving.prediction_log import DEFAULT_MAX_BYTES
from credit_risk.serving.release import BENTO_MODEL, PROFILE_FILE, SERVED_MODEL_KEY, ServedModel

PROJECT = Path(__file__).resolve().parent.parent
DISTINCT = 20_000
CREDIT_RISK = str(Path(sys.executable).parent / "credit-risk")


def scored_applicants(params: dict):
    """The synthetic applicants, the model's answers to them and the reference profile."""
    rows = load_applicants(PROJECT / "data" / "gmsc-synthetic.csv")
    features = rows.loc[:, FEATURE_NAMES]
    model = build_model(params["train"]).fit(features, rows["SeriousDlqin2yrs"])
    scale = ScoreScale.from_params(params["score"])
    profile = build_profile(features, *assess(model, features.to_numpy("float64"), scale))
    values = features.to_numpy("float64")[:DISTINCT]
    answers = list(zip(*assess(model, values, scale), strict=True))
    return values, answers, profile


def applicant(row: np.ndarray) -> dict:
    """A row as the API takes it (and the log records it)."""
    return {
        f.name: None if np.isnan(v) else (int(v) if f.integer else float(v))
        for f, v in zip(FEATURES, row.tolist(), strict=True)
    }


def write_log(folder: Path, records: int, values, answers, threshold: float) -> None:
    """``records`` log records over 30 days, in files of at most 64 MiB."""
    folder.mkdir(parents=True)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    bodies = [applicant(row) for row in values]
    files, size, stream = 0, 0, None
    for i in range(records):
        if stream is None or size > DEFAULT_MAX_BYTES:
            if stream:
                stream.close()
            files += 1
            stream = (folder / f"predictions-20261001T000000-1-abcdef-{files:04d}.jsonl").open("wb")
            size = 0
        probability, score, reasons = answers[i % DISTINCT]
        when = start + timedelta(seconds=i * 30 * 86400 / records)
        line = orjson.dumps(
            {
                "prediction": int(probability >= threshold),
                "probability": probability,
                "model_version": "1",
                "prediction_id": os.urandom(16).hex(),
                "timestamp": when.isoformat(),
                "score": score,
                "reasons": reasons,
                "inputs": bodies[i % DISTINCT],
            }
        )
        stream.write(line + b"\n")
        size += len(line) + 1
    stream.close()


def make_store(folder: Path, profile: dict, params: dict) -> None:
    """A BentoML store with one imported model carrying ``profile``."""
    os.environ["BENTOML_HOME"] = str(folder / "bentoml")
    served = ServedModel(
        model_name=BENTO_MODEL, model_version="1", model_stage="Production",
        alias="production", run_id="benchmark", dataset_hash="", model_sha256="",
        decision_threshold=params["serve"]["threshold"], score_scale=params["score"],
        reason_codes_version=1, metrics={}, trained_at="", imported_at="", tracking_uri="",
    )  # fmt: skip
    data = profile_bytes(profile)
    import hashlib

    served = served.model_copy(
        update={"reference_profile_sha256": hashlib.sha256(data).hexdigest()}
    )
    with bentoml.models.create(BENTO_MODEL, metadata={SERVED_MODEL_KEY: served.model_dump()}) as m:
        Path(m.path_of(PROFILE_FILE)).write_bytes(data)


def measure(
    folder: Path, log: Path | None, command: tuple[str, ...] = ("drift",), env: dict | None = None
) -> tuple[float, float, float, str]:
    """Run ``credit-risk <command> LOG`` (default ``drift``) on ``log`` (none: the command's
    own arguments say where): seconds, peak RSS in MiB of the command (from ``wait4``) and of
    its process tree (command and workers, sampled every 20 ms), output."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    started = time.monotonic()
    where = [str(log)] if log else []
    process = subprocess.Popen(
        [CREDIT_RISK, *command, *where, "--output", str(folder / "report")],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    tree_peak, command = 0, psutil.Process(process.pid)
    while not (waited := os.wait4(process.pid, os.WNOHANG))[0]:
        with contextlib.suppress(psutil.Error):
            members = [command, *command.children(recursive=True)]
            tree_peak = max(tree_peak, sum(_rss(member) for member in members))
        time.sleep(0.02)
    seconds = time.monotonic() - started
    _, status, usage = waited
    process.returncode = os.waitstatus_to_exitcode(status)
    output = process.stdout.read().decode()
    if process.returncode not in (0, 3):
        raise SystemExit(f"credit-risk {command[0]} failed:\n{output}")
    return seconds, usage.ru_maxrss / 1024, tree_peak / 2**20, output.strip()


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[250_000, 1_000_000])
    args = parser.parse_args()
    params = load_params(PROJECT / "params.yaml")
    values, answers, profile = scored_applicants(params)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        shutil.copy(PROJECT / "params.yaml", folder / "params.yaml")
        make_store(folder, profile, params)
        for records in args.records:
            log = folder / f"log-{records}"
            write_log(log, records, values, answers, params["serve"]["threshold"])
            size = sum(path.stat().st_size for path in log.iterdir()) / 2**20
            seconds, rss, tree, output = measure(folder, log)
            print(f"{records:>9,} records ({size:,.0f} MiB of log): {seconds:.1f} s, peak RSS "
                  f"{rss:,.0f} MiB (command), {tree:,.0f} MiB (with its workers)")  # fmt: skip
            print(f"          {output}")
            shutil.rmtree(log)


if __name__ == "__main__":
    main()
