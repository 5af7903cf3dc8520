"""The model Pipeline: preprocessing inside it, skops persistence with trusted types only."""

import numpy as np
import pandas as pd
import pytest
import skops.io
from conftest import PROJECT
from sklearn.metrics import roc_auc_score

from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.ml.data import load_applicants, split_applicants
from credit_risk.ml.features import DERIVED_FEATURES, CreditFeatures
from credit_risk.ml.model import TRUSTED_TYPES, build_model, load_model, save_model
from credit_risk.params import load_params


@pytest.fixture(scope="module")
def splits():
    applicants = load_applicants(PROJECT / "data" / "gmsc-synthetic.csv")
    split = split_applicants(applicants, 0.2, seed=42)
    return applicants[split == "train"], applicants[split == "test"]


def applicant(**changes) -> pd.DataFrame:
    row = dict.fromkeys(FEATURE_NAMES, 1.0) | {"age": 40.0, "MonthlyIncome": 5000.0}
    return pd.DataFrame([row | changes])


def test_sentinel_codes_become_missing_and_flagged():
    codes = dict.fromkeys(
        [
            "NumberOfTime30_59DaysPastDueNotWorse",
            "NumberOfTimes90DaysLate",
            "NumberOfTime60_89DaysPastDueNotWorse",
        ],
        98.0,
    )
    out = CreditFeatures().fit_transform(applicant(**codes))
    names = list(CreditFeatures().get_feature_names_out())
    assert np.isnan(out[0, names.index("NumberOfTimes90DaysLate")])
    assert np.isnan(out[0, names.index("TotalPastDue")])
    assert out[0, names.index("PastDueCodeReported")] == 1
    plain = CreditFeatures().fit_transform(applicant())
    assert plain[0, names.index("TotalPastDue")] == 3 and plain[0, -1] == 0


def test_debt_ratio_in_dollars_when_income_is_missing():
    names = list(CreditFeatures().get_feature_names_out())
    with_income = CreditFeatures().transform(applicant(DebtRatio=0.5, MonthlyIncome=4000.0))
    assert with_income[0, names.index("MonthlyDebt")] == 2000
    assert with_income[0, names.index("DebtRatio")] == 0.5
    without = CreditFeatures().transform(applicant(DebtRatio=1500.0, MonthlyIncome=np.nan))
    assert without[0, names.index("MonthlyDebt")] == 1500
    assert np.isnan(without[0, names.index("DebtRatio")])
    assert len(names) == len(FEATURE_NAMES) + len(DERIVED_FEATURES)


def test_columns_are_taken_by_name_and_checked():
    frame = applicant()
    assert np.array_equal(
        CreditFeatures().transform(frame[list(reversed(FEATURE_NAMES))]),
        CreditFeatures().transform(frame),
        equal_nan=True,
    )
    with pytest.raises(ValueError, match="missing feature column"):
        CreditFeatures().transform(frame.drop(columns="age"))


@pytest.mark.parametrize("kind", ["hist_gradient_boosting", "logistic_regression"])
def test_both_models_learn_and_round_trip_through_skops(tmp_path, splits, kind):
    train, test = splits
    settings = load_params(PROJECT / "params.yaml")["train"] | {"model": kind}
    model = build_model(settings).fit(train.loc[:, FEATURE_NAMES], train[TARGET])
    probability = model.predict_proba(test.loc[:, FEATURE_NAMES])[:, 1]
    assert roc_auc_score(test[TARGET], probability) > 0.7

    path = tmp_path / "model.skops"
    save_model(model, path)
    assert set(skops.io.get_untrusted_types(file=path)) <= set(TRUSTED_TYPES)
    reloaded = load_model(path)
    assert np.array_equal(reloaded.predict_proba(test.loc[:, FEATURE_NAMES])[:, 1], probability)


def test_untrusted_types_are_refused(tmp_path):
    skops.io.dump(object.__new__(type("Sneaky", (), {})), tmp_path / "other.skops")
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        load_model(tmp_path / "other.skops")


def test_bad_model_settings_name_the_setting():
    with pytest.raises(ValueError, match="train.model must be one of"):
        build_model({"model": "xgboost", "seed": 0})
    with pytest.raises(ValueError, match="train.hist_gradient_boosting: .*learning_rat"):
        build_model({"model": "hist_gradient_boosting", "seed": 0,
                     "hist_gradient_boosting": {"learning_rat": 0.1}})  # fmt: skip
