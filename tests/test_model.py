"""The model Pipeline: preprocessing inside it; the model file: skops, trusted types only,
the same bytes for the same model."""

import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io
from conftest import PROJECT
from sklearn.metrics import roc_auc_score

from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.ml.data import load_applicants, split_applicants
from credit_risk.ml.features import DERIVED_FEATURES, CreditFeatures
from credit_risk.ml.model import build_model
from credit_risk.ml.model_file import TRUSTED_TYPES, canonical_skops, load_model, save_model
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
    assert np.isnan(with_income[0, names.index("DebtDollarsWithoutIncome")])
    assert with_income[0, names.index("DebtRatio")] == 0.5
    without = CreditFeatures().transform(applicant(DebtRatio=1500.0, MonthlyIncome=np.nan))
    assert without[0, names.index("DebtDollarsWithoutIncome")] == 1500
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


TRAIN_AND_SAVE = """
import sys
from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.ml.data import load_applicants, split_applicants
from credit_risk.ml.model import build_model
from credit_risk.ml.model_file import save_model
from credit_risk.params import load_params
from threadpoolctl import threadpool_limits

applicants = load_applicants(sys.argv[1])
train = applicants[split_applicants(applicants, 0.2, seed=42) == "train"]
settings = load_params(sys.argv[2])["train"]
with threadpool_limits(limits=settings["threads"]):
    model = build_model(settings).fit(train.loc[:, FEATURE_NAMES], train[TARGET])
save_model(model, sys.argv[3])
"""


@pytest.mark.slow  # two trainings in processes of their own
def test_model_file_is_the_same_bytes_in_every_training_process(tmp_path, splits):
    """Two trainings in separate processes (other hash seeds, other thread settings) write the
    same bytes; skops reads them with the trusted types; the model predicts as before."""
    paths = [tmp_path / "first.skops", tmp_path / "second.skops"]
    environments = ({"PYTHONHASHSEED": "1"}, {"OMP_NUM_THREADS": "1"})
    for path, environment in zip(paths, environments, strict=True):
        command = [sys.executable, "-c", TRAIN_AND_SAVE, str(PROJECT / "data/gmsc-synthetic.csv")]
        subprocess.run(
            [*command, str(PROJECT / "params.yaml"), str(path)],
            check=True,
            env=os.environ | environment,
        )
    assert paths[0].read_bytes() == paths[1].read_bytes()
    train, test = splits
    settings = load_params(PROJECT / "params.yaml")["train"]
    in_memory = build_model(settings).fit(train.loc[:, FEATURE_NAMES], train[TARGET])
    loaded = skops.io.load(paths[0], trusted=TRUSTED_TYPES)
    assert np.array_equal(
        loaded.predict_proba(test.loc[:, FEATURE_NAMES]),
        in_memory.predict_proba(test.loc[:, FEATURE_NAMES]),
    )


def test_canonical_form_is_stable_and_loadable(tmp_path, splits):
    train, _ = splits
    settings = load_params(PROJECT / "params.yaml")["train"] | {"model": "logistic_regression"}
    model = build_model(settings).fit(train.loc[:, FEATURE_NAMES], train[TARGET])
    dumped = skops.io.dumps(model)
    assert dumped != skops.io.dumps(model)  # what skops alone does: ids and times differ
    canonical = canonical_skops(dumped)
    assert canonical == canonical_skops(skops.io.dumps(model)) == canonical_skops(canonical)
    with zipfile.ZipFile(io.BytesIO(canonical)) as archive:
        names = archive.namelist()
        assert names[-1] == "schema.json" and names[0] == "000001.npy"
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert isinstance(skops.io.loads(canonical, trusted=TRUSTED_TYPES), type(model))
