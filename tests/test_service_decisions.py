"""Decisions a credit officer can act on, through a real ``bentoml serve``: every answer has a
credit score and faithful reason codes, and risk moves with each input as the contract says."""

import numpy as np
import pytest
from conftest import PROJECT, Server
from httpx import Client
from test_scorecard import SCALE, at_reference, moved

from credit_risk.ml.contract import (
    EXAMPLE_APPLICANT,
    FEATURE_NAMES,
    FEATURES,
    REASON_CODES,
    REASON_CODES_VERSION,
    REFERENCE_APPLICANT,
)
from credit_risk.ml.data import load_applicants
from credit_risk.serving.prediction_log import read_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(project, tmp_path_factory):
    folder, env = project
    log = tmp_path_factory.mktemp("decisions-log")
    server = Server(env | {"CREDIT_RISK_PREDICTION_LOG": str(log)}, folder)
    with Client(base_url=server.url, timeout=60) as client:
        client.log_dir = log
        yield client
    server.stop()


def as_body(row: np.ndarray) -> dict:
    """An applicant row (contract order, NaN for missing) as the API takes it."""
    body = {}
    for value, feature in zip(row.tolist(), FEATURES, strict=True):
        if np.isnan(value):
            body[feature.name] = None
        else:
            body[feature.name] = int(value) if feature.integer else value
    return body


def probabilities(client: Client, rows: np.ndarray) -> np.ndarray:
    answer = client.post("/predict/batch", json={"applicants": [as_body(r) for r in rows]})
    assert answer.status_code == 200, answer.text
    return np.array([p["probability"] for p in answer.json()["predictions"]])


@pytest.fixture(scope="module")
def applicants() -> np.ndarray:
    rows = load_applicants(PROJECT / "data" / "gmsc-synthetic.csv")
    return rows.loc[:, FEATURE_NAMES].to_numpy(dtype="float64")[:400]


def test_every_answer_has_a_score_and_reasons_and_they_are_logged(client):
    answer = client.post("/predict", json=EXAMPLE_APPLICANT).json()
    assert list(answer)[:5] == ["prediction", "probability", "model_version", "prediction_id",
                                "timestamp"]  # fmt: skip
    assert answer["score"] == SCALE.points(np.array([answer["probability"]]))[0]
    assert isinstance(answer["reasons"], list) and len(answer["reasons"]) <= 4
    record = {r["prediction_id"]: r for r in read_records(client.log_dir)}[answer["prediction_id"]]
    assert record["score"] == answer["score"] and record["reasons"] == answer["reasons"]
    info = client.get("/model/info").json()
    assert info["score_scale"]["base_points"] == 600 and info["score_scale"]["base_odds"] == 50
    assert info["reason_codes_version"] == REASON_CODES_VERSION
    assert [code["code"] for code in info["reason_codes"]] == [c.code for c in REASON_CODES]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Prediction"]
    assert {"score", "reasons"} <= set(schema["required"])


def test_reason_codes_through_the_api(client, applicants):
    reference = client.post("/predict", json=REFERENCE_APPLICANT).json()
    assert reference["reasons"] == []
    late = client.post("/predict", json=REFERENCE_APPLICANT | {"NumberOfTimes90DaysLate": 5})
    assert late.json()["reasons"][0]["code"] == "LATE90"

    answers = client.post(
        "/predict/batch", json={"applicants": [as_body(r) for r in applicants]}
    ).json()["predictions"]
    changed, before = [], []
    for row, answer in zip(applicants, answers, strict=True):
        for reason in answer["reasons"]:
            changed.append(at_reference(row, reason["code"]))
            before.append(answer["probability"])
    assert len(changed) > 300
    after = probabilities(client, np.array(changed))
    gained = SCALE.raw_points(after) - SCALE.raw_points(np.array(before))
    assert np.all(gained >= 1 - 1e-9)  # every named factor really cost points


def test_risk_moves_with_each_input_as_the_contract_declares(client, applicants):
    for index, feature in enumerate(FEATURES):
        if feature.monotone == 0:
            continue
        before, after = moved(applicants, index, +1)
        change = probabilities(client, after) - probabilities(client, before)
        assert np.all(feature.monotone * change >= -1e-12), feature.name
