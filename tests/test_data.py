"""Reading and validating Kaggle-format CSV files against the feature contract."""

from pathlib import Path

import numpy as np
import pytest

from credit_risk.ml.contract import FEATURE_NAMES, FEATURES, TARGET
from credit_risk.ml.data import DataError, load_applicants, split_applicants

HEADER = "," + ",".join([TARGET, *(f.kaggle_name for f in FEATURES)])
GOOD_ROW = "1,0,0.766126609,45,2,0.802982129,9120,13,0,6,0,2"
NA_ROW = "2,1,0.957151019,40,0,121,NA,4,0,0,0,NA"
SENTINEL_ROW = "3,1,1,27,98,0,NA,0,98,0,98,0"


def write_csv(tmp_path: Path, *rows: str, header: str = HEADER, newline: str = "\r\n") -> Path:
    path = tmp_path / "applicants.csv"
    path.write_bytes(newline.join([header, *rows, ""]).encode())
    return path


def test_reads_kaggle_format_with_its_quirks(tmp_path):
    applicants = load_applicants(write_csv(tmp_path, GOOD_ROW, NA_ROW, SENTINEL_ROW))
    assert list(applicants.columns) == [*FEATURE_NAMES, TARGET]
    assert (applicants[list(FEATURE_NAMES)].dtypes == "float64").all()
    assert applicants[TARGET].tolist() == [0, 1, 1]
    assert np.isnan(applicants.loc[1, "MonthlyIncome"])
    assert np.isnan(applicants.loc[1, "NumberOfDependents"])
    assert applicants.loc[2, "NumberOfTimes90DaysLate"] == 98
    assert applicants.loc[0, "NumberOfTime30_59DaysPastDueNotWorse"] == 2


def test_line_endings_and_number_spelling_do_not_matter(tmp_path):
    crlf = load_applicants(write_csv(tmp_path, GOOD_ROW))
    lf = load_applicants(write_csv(tmp_path, GOOD_ROW.replace(",45,", ",45.0,"), newline="\n"))
    assert crlf.equals(lf)


def test_reads_the_embedded_synthetic_file():
    applicants = load_applicants(Path(__file__).parent.parent / "data" / "gmsc-synthetic.csv")
    assert len(applicants) == 20_000
    assert applicants["MonthlyIncome"].isna().any()
    assert applicants["age"].min() == 0


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ((), HEADER, "no data rows after the header"),
        ((GOOD_ROW,), HEADER.replace(",DebtRatio", ""), "more fields than the header"),
        ((GOOD_ROW,), HEADER.replace(",DebtRatio", ",Debt"), "unexpected column 'Debt'"),
        ((GOOD_ROW + ",1",), HEADER + ",Extra", "unexpected column 'Extra'"),
        ((GOOD_ROW,), HEADER.replace(",age", ",age2"), "unexpected column 'age2'"),
        ((GOOD_ROW.replace(",45,", ",abc,"),), HEADER, "line 2, column 'age': not a number"),
        ((GOOD_ROW, NA_ROW.replace(",40,", ",NA,")), HEADER, "line 3, column 'age': missing"),
        ((GOOD_ROW.replace(",45,", ",45.5,"),), HEADER, "column 'age': not a whole number"),
        ((GOOD_ROW.replace(",45,", ",-1,"),), HEADER, "column 'age': below the minimum 0"),
        ((GOOD_ROW.replace(",9120,", ",inf,"),), HEADER, "'MonthlyIncome': not a finite"),
        ((GOOD_ROW.replace("1,0,", "1,2,", 1),), HEADER, "target must be 0 or 1, got '2'"),
        ((GOOD_ROW.replace("1,0,", "1,,", 1),), HEADER, "target must be 0 or 1, got ''"),
        (
            (GOOD_ROW.replace(",2,0.80", ",99,0.80"),),
            HEADER,
            "'NumberOfTime30-59DaysPastDueNotWorse': above the maximum 98",
        ),
    ],
)
def test_bad_files_get_one_line_naming_the_problem(tmp_path, rows, header, message):
    path = write_csv(tmp_path, *rows, header=header)
    with pytest.raises(DataError) as error:
        load_applicants(path)
    assert message in str(error.value)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_column_is_named(tmp_path):
    header = HEADER.replace(",DebtRatio", "")
    row = GOOD_ROW.replace(",0.802982129", "")
    with pytest.raises(DataError, match="missing column 'DebtRatio'"):
        load_applicants(write_csv(tmp_path, row, header=header))


def test_empty_and_absent_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        load_applicants(empty)
    with pytest.raises(DataError, match="no such file"):
        load_applicants(tmp_path / "absent.csv")


def test_counts_bad_rows_beyond_the_first(tmp_path):
    rows = [GOOD_ROW.replace(",45,", ",x,")] * 3
    with pytest.raises(DataError, match=r"and 2 more rows"):
        load_applicants(write_csv(tmp_path, *rows))


def test_split_is_stratified_and_seeded():
    applicants = load_applicants(Path(__file__).parent.parent / "data" / "gmsc-synthetic.csv")
    split = split_applicants(applicants, 0.2, seed=7)
    assert split.equals(split_applicants(applicants, 0.2, seed=7))
    assert not split.equals(split_applicants(applicants, 0.2, seed=8))
    assert (split == "test").mean() == pytest.approx(0.2)
    rates = applicants[TARGET].groupby(split).mean()
    assert rates["train"] == pytest.approx(rates["test"], abs=0.002)
    with pytest.raises(DataError, match="test_size"):
        split_applicants(applicants, 1.5, seed=7)
