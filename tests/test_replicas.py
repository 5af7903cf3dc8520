"""Replicas on two hosts are one population: two real ``bentoml serve`` processes, each with its
own log directory, ship to one real ``mlflow server``; outcomes of one host's predictions are
taken in on the other; ``drift``, ``compare``, ``performance`` and ``training-data`` with
``--from-mlflow`` see every prediction of both, once, also after a host shipped its whole log
again.
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    CREDIT_RISK,
    PROJECT,
    Server,
    make_served_project,
    run,
    start_mlflow_server,
    stop,
)
from httpx import Client
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from credit_risk.ml.api_bodies import api_bodies
from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.ml.data import load_applicants
from credit_risk.serving.prediction_log import read_records
from credit_risk.serving.schemas import MAX_BATCH_ROWS
from credit_risk.serving.shipping_state import STATE_FILE, read_state

pytestmark = pytest.mark.slow
APPLICANTS = load_applicants(PROJECT / "data" / "gmsc-synthetic.csv").head(3000)
HOSTS = {"a": slice(0, 1800), "b": slice(1800, 3000)}


def sent(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` in the order a host was sent them (every other one, twice)."""
    return pd.concat([rows.iloc[0::2], rows.iloc[1::2]])


def wait_until_shipped(log: Path, records: int, timeout: float = 180) -> None:
    """Wait until the shipper of ``log`` counts ``records`` records shipped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (log / STATE_FILE).exists() and read_state(log)["shipped"] == records:
            return
        time.sleep(0.5)
    pytest.fail(f"{log}: {records} records not shipped within {timeout} s: {read_state(log)}")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """One tracking server, a Production model, two services (hosts ``a`` and ``b``) serving
    at once, each with its own log directory; each host's applicants sent and shipped. Yields
    the project folder, its environment, the log directories and every answer by host."""
    folder = tmp_path_factory.mktemp("replicas")
    tracking, url = start_mlflow_server(
        f"sqlite:///{folder / 'server.db'}", folder / "artifacts", folder / "mlflow.log"
    )
    try:
        project, env = make_served_project(folder / "project", MLFLOW_TRACKING_URI=url)
        logs = {host: project / f"log-{host}" for host in HOSTS}
        servers = {
            host: Server(env | {"CREDIT_RISK_PREDICTION_LOG": str(logs[host])}, project)
            for host in HOSTS
        }
        try:
            answers = {host: [] for host in HOSTS}
            for half in range(2):  # each host's log shipped in two rounds at least
                for host, rows in HOSTS.items():
                    bodies = api_bodies(APPLICANTS[rows])
                    answers[host] += predictions(servers[host], bodies[half::2])
                for host in HOSTS:
                    wait_until_shipped(logs[host], len(answers[host]))
            yield project, env, logs, servers, answers
        finally:
            for server in servers.values():
                server.stop()
    finally:
        stop(tracking)


def predictions(server: Server, bodies: list[dict]) -> list[dict]:
    """The service's answers to ``bodies``, through ``/predict/batch``."""
    answers = []
    with Client(base_url=server.url, timeout=120) as client:
        for start in range(0, len(bodies), MAX_BATCH_ROWS):
            batch = bodies[start : start + MAX_BATCH_ROWS]
            answer = client.post("/predict/batch", json={"applicants": batch})
            assert answer.status_code == 200, answer.text[:500]
            answers += answer.json()["predictions"]
    return answers


def credit_risk(replicas, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    project, env, *_ = replicas
    return run([CREDIT_RISK, *arguments], project, env, check=check)


def outcomes_file(path: Path, replicas, host: str, every: int = 1) -> tuple[Path, dict]:
    """An outcomes CSV for every ``every``-th prediction of ``host`` (the applicant's own label);
    its outcomes by prediction id."""
    answers = replicas[4][host]
    labels = sent(APPLICANTS[HOSTS[host]])[TARGET].to_numpy()
    outcomes = {a["prediction_id"]: int(y) for a, y in zip(answers, labels, strict=True)}
    chosen = dict(list(outcomes.items())[::every])
    lines = [f"prediction_id,{TARGET},observed_at"]
    lines += [f"{identifier},{label},2027-06-30" for identifier, label in chosen.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, chosen


@pytest.fixture(scope="module")
def taken_in(replicas):
    """Host b's outcomes taken in on host a and host a's (every other one) on host b, from the
    shipped log; the commands' results and every outcome by prediction id."""
    project, _, logs, *_ = replicas
    of_b, outcomes_b = outcomes_file(project / "outcomes-b.csv", replicas, "b")
    of_a, outcomes_a = outcomes_file(project / "outcomes-a.csv", replicas, "a", every=2)
    refused = credit_risk(replicas, "outcomes", str(of_b), str(logs["a"]), check=False)
    results = [
        credit_risk(replicas, "outcomes", str(of_b), str(logs["a"]), "--from-mlflow"),
        credit_risk(replicas, "outcomes", str(of_a), str(logs["b"]), "--from-mlflow"),
        credit_risk(replicas, "outcomes", str(of_b), str(logs["b"]), "--from-mlflow"),
    ]
    return refused, results, outcomes_a | outcomes_b


def test_outcomes_of_one_hosts_predictions_are_taken_in_on_the_other(replicas, taken_in):
    _, env, logs, _, answers = replicas
    refused, (on_a, on_b, again), outcomes = taken_in
    of_b = logs["a"].parent / "outcomes-b.csv"
    first = answers["b"][0]["prediction_id"]
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (
        f"outcomes: error: {of_b}: line 2: prediction_id {first!r} is not in the prediction log "
        f"{logs['a']} (logged by another host? --from-mlflow looks in the log every host "
        "shipped)\n"
    )
    url = env["MLFLOW_TRACKING_URI"]
    count_b, count_a = len(answers["b"]), len(answers["a"]) // 2
    assert on_a.stdout == (
        f"outcomes: {count_b} rows read from {of_b}: {count_b} new, 0 already known; {count_b} "
        f"outcomes in {logs['a'] / 'outcomes.jsonl'}; {count_b} shipped to the MLflow run "
        f"outcomes at {url}\n"
    )
    assert f": {count_a} new, 0 already known; {count_a} outcomes in {logs['b']}" in on_b.stdout
    # Host a's outcomes of host b's predictions are known on host b once shipped.
    assert f": 0 new, {count_b} already known; {count_a} outcomes in" in again.stdout
    assert again.stdout.endswith(f"; 0 shipped to the MLflow run outcomes at {url}\n")
    assert len(outcomes) == count_a + count_b


def report(replicas, command: str, *arguments: str) -> tuple[subprocess.CompletedProcess, dict]:
    project = replicas[0]
    output = project / f"report-{command}-{len(list(project.glob(f'report-{command}-*')))}"
    result = credit_risk(replicas, command, *arguments, "--output", str(output), check=False)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    return result, json.loads((output / f"{command}.json").read_text())


def without_source(report: dict) -> dict:
    return {
        key: value
        for key, value in report.items()
        if key not in ("log_directory", "from_mlflow", "generated_at")
    }


def test_drift_from_mlflow_sees_every_prediction_of_both_hosts_once(replicas):
    project, env, logs, _, answers = replicas
    union = project / "log-union"
    union.mkdir()
    for log in logs.values():
        for path in log.glob("predictions-*.jsonl"):
            shutil.copy(path, union)
    _, local = report(replicas, "drift", str(union))
    result, shipped = report(replicas, "drift", "--from-mlflow")
    total = sum(map(len, answers.values()))
    assert shipped["records"] == local["records"] == total
    assert shipped["from_mlflow"] == env["MLFLOW_TRACKING_URI"] and not shipped["log_directory"]
    assert without_source(shipped) == without_source(local)
    assert result.stdout.startswith(f"drift: {total} predictions of credit-risk-model version 1")
    # Host b's shipped.json is lost: its shipper ships its whole log again, in one chunk that
    # overlaps the two it had shipped. The run's totals now count part of it twice; the reports
    # count every prediction once.
    (logs["b"] / STATE_FILE).unlink()
    wait_until_shipped(logs["b"], len(answers["b"]))
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (serving,) = client.search_runs(
        [client.get_experiment_by_name("credit-risk-prediction").experiment_id],
        "attributes.run_name = 'serving-v1'",
    )
    assert serving.data.metrics["predictions_total"] > total
    _, again = report(replicas, "drift", "--from-mlflow")
    assert without_source(again) == without_source(local)


def test_performance_from_mlflow_is_measured_on_both_hosts_outcomes(replicas, taken_in):
    _, _, _, _, answers = replicas
    outcomes = taken_in[2]
    result, measured = report(replicas, "performance", "--from-mlflow")
    (entry,) = measured["versions"]
    probabilities = {a["prediction_id"]: a["probability"] for host in answers.values()
                     for a in host}  # fmt: skip
    ids = sorted(outcomes)
    expected = roc_auc_score([outcomes[i] for i in ids], [probabilities[i] for i in ids])
    assert entry["realized"]["roc_auc"] == pytest.approx(expected, abs=1e-6)
    assert (entry["decisions"], entry["with_outcome"]) == (len(probabilities), len(outcomes))
    assert measured["outcomes_known"] == len(outcomes)
    assert measured["skipped"]["conflicting_outcomes"] == 0
    assert measured["skipped"]["repeated_prediction_ids"] == 0
    assert f"version 1: {len(outcomes):,} of {len(probabilities):,} decisions" in result.stdout


def test_training_data_from_mlflow_holds_both_hosts_applicants(replicas, taken_in):
    project, _, _, _, answers = replicas
    outcomes = taken_in[2]
    output = project / "data" / "from-both-hosts.csv"
    result = credit_risk(replicas, "training-data", "--from-mlflow", "--output", str(output))
    assert result.stdout.startswith(f"training-data: {len(outcomes)} applicants with outcomes")
    ids = [a["prediction_id"] for host in HOSTS for a in answers[host]]
    applicants = pd.concat([sent(APPLICANTS[rows]) for rows in HOSTS.values()])
    chosen = [n for n, identifier in enumerate(ids) if identifier in outcomes]
    expected = applicants.iloc[chosen][[TARGET, *FEATURE_NAMES]]
    written = load_applicants(output)[[TARGET, *FEATURE_NAMES]]
    assert len(written) == len(outcomes)
    pd.testing.assert_frame_equal(sorted_rows(written), sorted_rows(expected))


def sorted_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table.fillna(-1.0).sort_values(list(table.columns)).reset_index(drop=True)


def test_compare_from_mlflow_scores_both_hosts_applicants(replicas):
    _, _, logs, _, answers = replicas
    result, compared = report(replicas, "compare", "1", "--from-mlflow")
    total = sum(map(len, answers.values()))
    assert compared["records"] == total
    assert compared["swap_share"] == 0 and compared["score_shift"]["mean_change"] == 0
    assert "on 3000 logged applicants" in result.stdout
    logged = [record for log in logs.values() for record in read_records(log)]
    declined = np.mean([record["prediction"] for record in logged])
    assert compared["approval_rate"]["champion"] == round(1 - declined, 6)
