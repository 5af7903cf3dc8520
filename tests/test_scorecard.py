"""Monotone model, calibration error, credit score and reason codes, on the model itself."""

import math
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT, REAL_DATA

from credit_risk.ml.contract import (
    FEATURE_NAMES,
    FEATURES,
    PAST_DUE_SENTINEL_CODES,
    REASON_CODES,
    REFERENCE_APPLICANT,
    TARGET,
    is_past_due_code,
)
from credit_risk.ml.data import load_applicants, split_applicants
from credit_risk.ml.evaluation import expected_calibration_error
from credit_risk.ml.features import DERIVED_FEATURES, DERIVED_MONOTONE, monotonic_constraints
from credit_risk.ml.flat_trees import DefaultProbability
from credit_risk.ml.model import build_model
from credit_risk.ml.scorecard import MAX_REASONS, MIN_REASON_POINTS, ScoreScale, assess
from credit_risk.params import load_params
from credit_risk.registry.promotion import gate

PARAMS = load_params(PROJECT / "params.yaml")
SCALE = ScoreScale.from_params(PARAMS["score"])


@pytest.fixture(scope="module")
def splits():
    applicants = load_applicants(PROJECT / "data" / "gmsc-synthetic.csv")
    split = split_applicants(applicants, 0.2, seed=42)
    return applicants[split == "train"], applicants[split == "test"]


@pytest.fixture(scope="module")
def model(splits):
    train, _ = splits
    return build_model(PARAMS["train"]).fit(train.loc[:, FEATURE_NAMES], train[TARGET])


def moved(values: np.ndarray, index: int, direction: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose feature ``index`` can move one step in ``direction`` within its bounds and
    without landing on (or starting from) a 96/98 code or a missing value; the moved copies."""
    feature = FEATURES[index]
    value = values[:, index]
    step = np.where(feature.integer, 1.0, np.maximum(np.abs(value) * 0.5, 0.05))
    target = value + direction * step
    keep = ~np.isnan(value) & (target >= feature.minimum) & (target <= feature.maximum)
    if feature.sentinel_codes:
        codes = list(PAST_DUE_SENTINEL_CODES)
        keep &= ~np.isin(value, codes) & ~np.isin(target, codes)
    copies = values[keep].copy()
    copies[:, index] = target[keep]
    return values[keep], copies


def monotonicity_violations(model, values: np.ndarray) -> dict[str, int]:
    """Per constrained feature: applicants whose risk moved against the declared direction
    when that one input moved one step in it."""
    violations = {}
    for index, feature in enumerate(FEATURES):
        if feature.monotone == 0:
            continue
        before, after = moved(values, index, +1)
        change = model.predict_proba(after)[:, 1] - model.predict_proba(before)[:, 1]
        violations[feature.name] = int(np.sum(feature.monotone * change < -1e-12))
    return violations


def test_past_due_codes_are_found_as_np_isin_finds_them():
    values = np.array([[96, 98, 0], [96.5, np.nan, -0.0], [np.inf, 97, 98.0]])
    expected = np.isin(values, PAST_DUE_SENTINEL_CODES)
    assert np.array_equal(is_past_due_code(values), expected) and expected.sum() == 3


def test_the_reason_code_table():
    codes = [code.code for code in REASON_CODES]
    assert len(set(codes)) == len(codes) == len(FEATURES) + 3
    assert {"LATE90", "UTIL", "NOINCOME", "NODEPENDENTS", "LATECODE"} <= set(codes)
    assert all(code.description and code.feature in FEATURE_NAMES for code in REASON_CODES)


def test_every_model_input_has_a_declared_direction_and_reason():
    constraints = monotonic_constraints()
    assert len(constraints) == len(FEATURE_NAMES) + len(DERIVED_FEATURES)
    assert set(constraints) <= {-1, 0, 1}
    assert all(feature.why for feature in FEATURES) and all(w for _, w in DERIVED_MONOTONE.values())
    assert {f.name: f.monotone for f in FEATURES}["NumberOfTimes90DaysLate"] == 1
    assert {f.name: f.monotone for f in FEATURES}["MonthlyIncome"] == -1


def test_the_constrained_model_never_moves_risk_against_a_declared_direction(model, splits):
    train, test = splits
    values = test.loc[:, FEATURE_NAMES].to_numpy(dtype="float64")
    assert monotonicity_violations(model, values) == dict.fromkeys(
        [f.name for f in FEATURES if f.monotone], 0
    )
    free = build_model(PARAMS["train"] | {"monotone": False})
    free.fit(train.loc[:, FEATURE_NAMES], train[TARGET])
    assert sum(monotonicity_violations(free, values).values()) > 0  # what the switch prevents


def test_monotone_switch_and_its_check():
    assert build_model(PARAMS["train"] | {"monotone": False})[-1].monotonic_cst is None
    assert build_model(PARAMS["train"])[-1].monotonic_cst == monotonic_constraints()
    with pytest.raises(ValueError, match="train.monotone must be true or false"):
        build_model(PARAMS["train"] | {"monotone": "yes"})


def test_calibration_error_is_the_weighted_gap_over_quantile_bins():
    probability = np.array([0.1, 0.1, 0.2, 0.2, 0.7, 0.9])
    outcome = np.array([0, 0, 0, 1, 1, 1])
    # three bins of two: |0.1 - 0| , |0.2 - 0.5|, |0.8 - 1|, each weighing 2/6
    expected = (0.1 + 0.3 + 0.2) / 3
    assert expected_calibration_error(outcome, probability, 3) == pytest.approx(expected)
    assert expected_calibration_error(outcome, np.array([0, 0, 0.5, 0.5, 1, 1]), 3) == 0


def test_the_gate_rejects_a_badly_calibrated_model():
    settings = PARAMS["register"] | {"max_calibration_error": 0.01}
    passed, reason = gate({"roc_auc": 0.9, "calibration_error": 0.02}, settings, None, None)
    assert not passed and "register.max_calibration_error 0.01" in reason
    passed, _ = gate({"roc_auc": 0.9, "calibration_error": 0.005}, settings, None, None)
    assert passed


def test_the_score_scale():
    assert SCALE.points(np.array([1 / 51]))[0] == 600  # 50:1 good:bad
    assert SCALE.points(np.array([1 / 101]))[0] == 620  # odds doubled
    assert SCALE.points(np.array([1 / 26]))[0] == 580  # odds halved
    assert SCALE.points(np.array([1e-12, 0.999999, 0.0, 1.0])).tolist() == [850, 300, 850, 300]
    scores = SCALE.points(np.linspace(0.001, 0.999, 50))
    assert np.all(np.diff(scores) <= 0)
    with pytest.raises(ValueError, match="score.min_points must be below"):
        ScoreScale.from_params(PARAMS["score"] | {"min_points": 900})
    with pytest.raises(ValueError, match="score: .*unexpected keyword"):
        ScoreScale.from_params(PARAMS["score"] | {"pdo": 20})


def applicant(**changes) -> np.ndarray:
    row = REFERENCE_APPLICANT | changes
    return np.array([[row[name] for name in FEATURE_NAMES]], dtype="float64")


def test_the_reference_applicant_gets_no_reason(model):
    _, scores, reasons = assess(model, applicant(), SCALE)
    assert reasons == [[]]


def test_many_90_day_delinquencies_come_first(model):
    _, _, reasons = assess(model, applicant(NumberOfTimes90DaysLate=4), SCALE)
    assert reasons[0][0]["code"] == "LATE90"
    _, _, reasons = assess(model, applicant(MonthlyIncome=np.nan, DebtRatio=1500), SCALE)
    assert "NOINCOME" in [reason["code"] for reason in reasons[0]]


def test_reasons_are_faithful_and_only_adverse(model, splits):
    """Every reason names a factor whose change to the reference raises the score by at least
    the minimum, strongest first; no factor that lowered risk is ever named."""
    _, test = splits
    values = test.loc[:, FEATURE_NAMES].to_numpy(dtype="float64")[:300]
    probabilities, scores, reasons = assess(model, values, SCALE)
    factors = {code.code: code for code in REASON_CODES}
    changed = []  # each applicant with each named factor at the reference, scored in one call
    for row, given in zip(values, reasons, strict=True):
        assert len(given) <= MAX_REASONS
        for reason in given:
            assert factors[reason["code"]].feature == reason["feature"]
            changed.append(at_reference(row, reason["code"]))
    better = iter(model.predict_proba(np.array(changed))[:, 1])
    for probability, given in zip(probabilities, reasons, strict=True):
        gains = [points(next(better)) - points(probability) for _ in given]
        assert all(gain >= MIN_REASON_POINTS - 1e-9 for gain in gains)
        assert gains == sorted(gains, reverse=True)
    assert len(changed) > 300  # most applicants differ from the reference somewhere that matters


def points(probability: float) -> float:
    return float(SCALE.raw_points(np.array([probability]))[0])


def at_reference(row: np.ndarray, code: str) -> np.ndarray:
    """The applicant with the factor ``code`` set to the reference (independently written)."""
    changed, ref = row.copy(), REFERENCE_APPLICANT
    index = {f.reason_code: i for i, f in enumerate(FEATURES)}
    income, debt = FEATURE_NAMES.index("MonthlyIncome"), FEATURE_NAMES.index("DebtRatio")
    if code == "NOINCOME":
        changed[debt] = row[debt] / ref["MonthlyIncome"]
        changed[income] = ref["MonthlyIncome"]
    elif code == "NODEPENDENTS":
        changed[FEATURE_NAMES.index("NumberOfDependents")] = ref["NumberOfDependents"]
    elif code == "LATECODE":
        for i, feature in enumerate(FEATURES):
            if feature.sentinel_codes and row[i] in PAST_DUE_SENTINEL_CODES:
                changed[i] = 0
    elif code == "DEBT" and math.isnan(row[income]):
        changed[debt] = ref["DebtRatio"] * ref["MonthlyIncome"]
    else:
        changed[index[code]] = ref[FEATURE_NAMES[index[code]]]
    return changed


def test_scores_follow_the_probabilities(model, splits):
    _, test = splits
    values = test.loc[:, FEATURE_NAMES].to_numpy(dtype="float64")[:500]
    probabilities, scores, _ = assess(model, values, SCALE)
    assert np.allclose(
        probabilities, model.predict_proba(pd.DataFrame(values, columns=FEATURE_NAMES))[:, 1]
    )
    assert scores == SCALE.points(np.array(probabilities)).tolist()


def applicable_codes(row: np.ndarray, directions: list[int]) -> list[str]:
    """The factors an applicant is changed in (independently written from the docstring of
    ``credit_risk.ml.scorecard``): each feature that differs from the reference, is reported
    and not a 96/98 code, and is not on the reference's side of a monotone model; each missing
    value; past-due counts reported as a code."""
    codes = []
    income, debt = FEATURE_NAMES.index("MonthlyIncome"), FEATURE_NAMES.index("DebtRatio")
    for i, feature in enumerate(FEATURES):
        value, reference = row[i], feature.reference
        if i == debt and math.isnan(row[income]):  # monthly debt in dollars
            reference = REFERENCE_APPLICANT["DebtRatio"] * REFERENCE_APPLICANT["MonthlyIncome"]
        coded = bool(feature.sentinel_codes) and value in PAST_DUE_SENTINEL_CODES
        if math.isnan(value) or value == reference or coded:
            continue
        if directions[i] and directions[i] * (value - reference) <= 0:
            continue
        codes.append(feature.reason_code)
    codes += [f.missing_reason_code for i, f in enumerate(FEATURES) if math.isnan(row[i])]
    if any(f.sentinel_codes and row[i] in PAST_DUE_SENTINEL_CODES for i, f in enumerate(FEATURES)):
        codes.append("LATECODE")
    return codes


def plain_assessment(model, values: np.ndarray) -> tuple[list, list, list]:
    """Probabilities, scores and reasons the plain way: every applicant and each changed copy
    of it scored by sklearn's ``predict_proba``, each applicant's factors ranked in Python by the
    points they lose (ties in the order of the reason code table)."""
    directions = getattr(model[-1], "monotonic_cst", None) or [0] * len(FEATURES)
    copies, owners, codes = [], [], []
    for owner, row in enumerate(values):
        for code in applicable_codes(row, directions):
            copies.append(at_reference(row, code))
            owners.append(owner)
            codes.append(code)
    probabilities = model.predict_proba(np.vstack([values, *copies]))[:, 1]
    raw = SCALE.raw_points(probabilities)
    lost = [[] for _ in values]
    for copy_points, owner, code in zip(raw[len(values) :], owners, codes, strict=True):
        lost[owner].append((copy_points - raw[owner], code))
    table = {code.code: (order, asdict(code)) for order, code in enumerate(REASON_CODES)}
    reasons = []
    for factors in lost:
        ranked = sorted(factors, key=lambda factor: (-factor[0], table[factor[1]][0]))
        strongest = ranked[:MAX_REASONS]
        reasons.append([table[code][1] for gain, code in strongest if gain >= MIN_REASON_POINTS])
    first = probabilities[: len(values)]
    return first.tolist(), SCALE.points(first).tolist(), reasons


def edge_applicants(values: np.ndarray, count: int, seed: int = 3) -> np.ndarray:
    """Applicants within the contract, half their values odd: a bound, the reference's value,
    missing (where allowed), a 96/98 code (for past-due counts); the rest from ``values``."""
    rng = np.random.default_rng(seed)
    rows = values[rng.integers(0, len(values), count)].copy()
    for i, feature in enumerate(FEATURES):
        odd = [feature.minimum, feature.maximum, feature.reference]
        odd += [np.nan] * feature.nullable + list(feature.sentinel_codes)
        pick = rng.random(count) < 0.5
        rows[pick, i] = rng.choice(odd, int(pick.sum()))
    return rows


def test_fast_reasons_are_the_plain_ones_to_the_bit(model, splits):
    """The service's assessment (leaf masks) answers what the plain algorithm does: the same
    probabilities and scores to the bit, the same reason codes in the same order."""
    train, test = splits
    values = pd.concat([train, test]).loc[:, FEATURE_NAMES].to_numpy(dtype="float64")
    values = np.vstack([values, edge_applicants(values, 20_000), applicant()])
    fast = assess(model, values, SCALE, DefaultProbability(model))
    assert DefaultProbability(model).masks is not None
    assert fast == plain_assessment(model, values)
    assert sum(map(len, fast[2])) > len(values)  # many reasons to compare
    for size in (1, 7, 300):  # /predict's groups
        assert assess(model, values[:size], SCALE, DefaultProbability(model)) == tuple(
            column[:size] for column in fast
        )


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"{REAL_DATA} is not on this machine")
def test_fast_reasons_are_the_plain_ones_on_the_real_rows():
    applicants = load_applicants(REAL_DATA)
    train = applicants[split_applicants(applicants, 0.2, seed=42) == "train"]
    real_model = build_model(PARAMS["train"]).fit(train.loc[:, FEATURE_NAMES], train[TARGET])
    values = applicants.loc[:, FEATURE_NAMES].to_numpy(dtype="float64")
    values = np.vstack([values, edge_applicants(values, 20_000)])
    fast = assess(real_model, values, SCALE, DefaultProbability(real_model))
    assert fast == plain_assessment(real_model, values)
    assert fast == assess(real_model, values, SCALE)  # sklearn's predict_proba for every row
