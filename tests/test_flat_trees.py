"""Leaf masks give sklearn's probabilities to the last bit, or are not used."""

import copy

import numpy as np
import pytest
from conftest import PROJECT, REAL_DATA
from sklearn.ensemble import HistGradientBoostingClassifier

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES, PAST_DUE_SENTINEL_CODES, TARGET
from credit_risk.ml.data import load_applicants, split_applicants
from credit_risk.ml.flat_trees import CHUNK_ROWS, DefaultProbability, LeafMasks
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
    assert probability.masks is not None
    expected = model.predict_proba(values)[:, 1]
    assert np.array_equal(probability(values), expected)  # many chunks, the last one short
    assert len(values) > 10 * CHUNK_ROWS and len(values) % CHUNK_ROWS
    for size in (1, 6, 48, 1000):  # /predict's groups
        assert np.array_equal(probability(values[:size]), expected[:size])


def test_changed_copies_the_same_to_the_bit(synthetic):
    """Copies scored with their originals' bins where an input kept its value (``copies_of``)
    come out as sklearn scores them: values changed to odd ones, to NaN, from NaN, to -0.0."""
    model, applicants = synthetic
    values = np.vstack(
        [applicants.loc[:, FEATURE_NAMES].to_numpy("float64")[:3000], odd_applicants(3000)]
    )
    rng = np.random.default_rng(2)
    copies_of = rng.integers(0, len(values), 20_000)
    copies, odd = values[copies_of], odd_applicants(len(copies_of), seed=5)
    changed = rng.random(copies.shape) < 0.15
    copies[changed] = odd[changed]
    copies[copies == 0] = -0.0
    rows = np.vstack([values, copies])
    probability = DefaultProbability(model)
    expected = model.predict_proba(rows)[:, 1]
    assert np.array_equal(probability(rows, copies_of), expected)
    assert np.array_equal(probability(values[:1], np.zeros(0, np.intp)), expected[:1])


@pytest.mark.parametrize("leaves", [31, 64])
def test_wider_trees_the_same_to_the_bit(synthetic, leaves):
    model, applicants = trained(
        PROJECT / "data" / "gmsc-synthetic.csv",
        hist_gradient_boosting=PARAMS["train"]["hist_gradient_boosting"]
        | {"max_leaf_nodes": leaves, "min_samples_leaf": 20, "max_iter": 30},
    )
    masks = LeafMasks.of(model[-1])
    assert masks is not None and masks.dtype == (np.uint32 if leaves == 31 else np.uint64)
    values = np.vstack([applicants.loc[:, FEATURE_NAMES].to_numpy("float64"), odd_applicants(3000)])
    probability = DefaultProbability(model)
    assert np.array_equal(probability(values), model.predict_proba(values)[:, 1])


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_file(), reason=f"{REAL_DATA} is not on this machine")
def test_the_same_probabilities_to_the_bit_on_the_real_rows():
    model, applicants = trained(REAL_DATA)
    values = applicants.loc[:, FEATURE_NAMES].to_numpy("float64")
    masks = LeafMasks.of(model[-1])
    assert masks is not None
    inputs = model[:-1].transform(values)
    assert np.array_equal(masks.default_probability(inputs), model.predict_proba(values)[:, 1])


class RootChanged(LeafMasks):
    """Leaf masks built from a copy of the classifier whose first tree's root split is changed
    by ``change``, answering for the unchanged classifier."""

    change = None

    def __init__(self, classifier):
        changed = copy.deepcopy(classifier)
        self.change(changed._predictors[0][0].nodes[0])
        super().__init__(changed)
        self.classifier = classifier


class OneUlpOff(RootChanged):
    """The root splits one float higher than sklearn's."""

    @staticmethod
    def change(root):
        root["num_threshold"] = np.nextafter(root["num_threshold"], np.inf)


class MissingGoesTheOtherWay(RootChanged):
    """The root sends missing values the other way."""

    @staticmethod
    def change(root):
        root["missing_go_to_left"] = not root["missing_go_to_left"]


class CopiesMissAChange(LeafMasks):
    """Changed copies take their original's bin in the second input even where it changed."""

    def bins(self, inputs, copies_of=None):
        bins = super().bins(inputs, copies_of)
        if copies_of is not None:
            bins[1][len(inputs) - len(copies_of) :] = bins[1][copies_of]
        return bins


@pytest.mark.parametrize("flawed", [OneUlpOff, MissingGoesTheOtherWay, CopiesMissAChange])
def test_leaf_masks_that_would_differ_are_not_used(synthetic, flawed):
    model, _ = synthetic
    assert flawed.of(model[-1]) is None
    assert LeafMasks.of(model[-1]) is not None


def test_models_it_cannot_reproduce_use_sklearn(synthetic):
    _, applicants = synthetic
    logistic, _ = trained(PROJECT / "data" / "gmsc-synthetic.csv", model="logistic_regression")
    assert DefaultProbability(logistic).masks is None
    values = applicants.loc[:, FEATURE_NAMES].to_numpy("float64")[:2000]
    three_classes = HistGradientBoostingClassifier(max_iter=5).fit(values, np.arange(2000) % 3)
    assert LeafMasks.of(three_classes) is None
    wide = HistGradientBoostingClassifier(max_iter=2, max_leaf_nodes=80, min_samples_leaf=5)
    wide.fit(values, applicants[TARGET][:2000])
    assert max(p[0].nodes["is_leaf"].sum() for p in wide._predictors) > 64
    assert LeafMasks.of(wide) is None
