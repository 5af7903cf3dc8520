"""Flat trees give sklearn's probabilities to the last bit, or are not used."""

import numpy as np
import pytest
from conftest import PROJECT, REAL_DATA
from sklearn.ensemble import HistGradientBoostingClassifier

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES, PAST_DUE_SENTINEL_CODES, TARGET
from credit_risk.ml.data import load_applicants, split_applicants
from credit_risk.ml.flat_trees import MAX_FLAT_ROWS, DefaultProbability, FlatTrees
from credit_risk.ml.model import build_model
from credit_risk.params import load_params

PARAMS = load_params(PROJECT / "params.yaml")


def trained(path, **changes):
    applicants = load_applicants(path)
    train = applicants[split_applicants(applicants, 0.2, seed=42) == "train"]
    model = build_model(PARAMS["train"] | changes)
    return model.fit(train.loc[:, FEATURE_NAMES], train[TARGET]), applicants


@pytest.fixture(scope="module")
def synthetic():
    return trained(PROJECT / "data" / "gmsc-synthetic.csv")


def odd_applicants(count: int, seed: int = 1) -> np.ndarray:
    """Applicants at and beyond the contract's edges, half their values odd: missing, 96/98
    codes, zero, a bound, tiny."""
    rng = np.random.default_rng(seed)
    columns = []
    for feature in FEATURES:
        odd = [np.nan, 0.0, feature.minimum, feature.maximum, 1e-9, *PAST_DUE_SENTINEL_CODES]
        usual = rng.uniform(feature.minimum, min(feature.maximum, 1e5), count)
        columns.append(np.where(rng.random(count) < 0.5, rng.choice(odd, count), usual))
    return np.column_stack(columns)


def test_the_same_probabilities_to_the_bit(synthetic):
    model, applicants = synthetic
    values = np.vstack(
        [applicants.loc[:, FEATURE_NAMES].to_numpy("float64"), odd_applicants(5_000)]
    )
    probability = DefaultProbability(model)
    assert probability.flat is not None
    expected = model.predict_proba(values)[:, 1]
    for start in range(0, len(values), 1000):  # every call small enough for the flat trees
        rows = values[start : start + 1000]
        assert np.array_equal(probability(rows), expected[start : start + 1000])
    assert np.array_equal(probability(values[:1]), expected[:1])


def test_calls_above_the_limit_go_to_sklearn(synthetic, monkeypatch):
    model, applicants = synthetic
    probability = DefaultProbability(model)
    flat_rows, flat_call = [], probability.flat.default_probability
    monkeypatch.setattr(
        probability.flat,
        "default_probability",
        lambda rows: flat_rows.append(len(rows)) or flat_call(rows),
    )
    values = applicants.loc[:, FEATURE_NAMES].to_numpy("float64")[: MAX_FLAT_ROWS + 1]
    probability(values[:MAX_FLAT_ROWS])
    probability(values)
    assert flat_rows == [MAX_FLAT_ROWS]


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"{REAL_DATA} is not on this machine")
def test_the_same_probabilities_to_the_bit_on_the_real_rows():
    model, applicants = trained(REAL_DATA)
    values = applicants.loc[:, FEATURE_NAMES].to_numpy("float64")
    flat = FlatTrees.of(model[-1])
    assert flat is not None
    inputs = model[:-1].transform(values)
    assert np.array_equal(flat.default_probability(inputs), model.predict_proba(values)[:, 1])


class OneUlpOff(FlatTrees):
    """Flat trees whose first tree's root splits one float higher than sklearn's."""

    def __init__(self, classifier):
        super().__init__(classifier)
        root = self.roots[self.restore_order[0]]
        self.thresholds[root] = np.nextafter(self.thresholds[root], np.inf)


class MissingGoesTheOtherWay(FlatTrees):
    """Flat trees whose first tree's root sends missing values the other way."""

    def __init__(self, classifier):
        super().__init__(classifier)
        root = self.roots[self.restore_order[0]]
        self.columns[root] = (self.columns[root] + self.inputs) % (2 * self.inputs)


@pytest.mark.parametrize("flawed", [OneUlpOff, MissingGoesTheOtherWay])
def test_flat_trees_that_would_differ_are_not_used(synthetic, flawed):
    model, _ = synthetic
    assert flawed.of(model[-1]) is None
    assert FlatTrees.of(model[-1]) is not None


def test_models_it_cannot_reproduce_use_sklearn(synthetic):
    _, applicants = synthetic
    logistic, _ = trained(PROJECT / "data" / "gmsc-synthetic.csv", model="logistic_regression")
    assert DefaultProbability(logistic).flat is None
    values = applicants.loc[:, FEATURE_NAMES].to_numpy("float64")[:50]
    three_classes = HistGradientBoostingClassifier(max_iter=5).fit(values, np.arange(50) % 3)
    assert FlatTrees.of(three_classes) is None
