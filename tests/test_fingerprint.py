"""The dataset fingerprint depends on the data's values only."""

import hashlib
import shutil

import numpy as np
from test_data import GOOD_ROW, NA_ROW, SENTINEL_ROW, write_csv

from credit_risk.ml.data import load_applicants
from credit_risk.ml.fingerprints import DATASET_COLUMNS as COLUMNS
from credit_risk.ml.fingerprints import dataset_fingerprint, dataset_sha256


def test_matches_the_documented_definition(tmp_path):
    applicants = load_applicants(write_csv(tmp_path, GOOD_ROW, NA_ROW))
    values = applicants.loc[:, list(COLUMNS)].to_numpy(dtype="<f8")
    expected = hashlib.sha256((",".join(COLUMNS) + "\n").encode() + values.tobytes())
    assert dataset_sha256(applicants) == expected.hexdigest()
    nan_bytes = np.frombuffer(values.tobytes(), dtype="<u8")[np.isnan(values).ravel()]
    assert set(nan_bytes.tolist()) == {0x7FF8000000000000}


def test_independent_of_path_line_endings_number_format_and_row_ids(tmp_path):
    reference = dataset_sha256(load_applicants(write_csv(tmp_path, GOOD_ROW, NA_ROW)))
    moved = tmp_path / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    shutil.copy(write_csv(tmp_path, GOOD_ROW, NA_ROW), moved)
    assert dataset_sha256(load_applicants(moved)) == reference
    respelled = GOOD_ROW.replace(",45,", ",45.000,").replace("1,0,", "17,0.0,", 1)
    lf = write_csv(tmp_path, respelled, NA_ROW, newline="\n")
    assert dataset_sha256(load_applicants(lf)) == reference


def test_changes_with_any_value_or_row_order(tmp_path):
    reference = dataset_sha256(load_applicants(write_csv(tmp_path, GOOD_ROW, NA_ROW)))
    one_value = write_csv(tmp_path, GOOD_ROW.replace(",9120,", ",9121,"), NA_ROW)
    assert dataset_sha256(load_applicants(one_value)) != reference
    swapped = write_csv(tmp_path, NA_ROW, GOOD_ROW)
    assert dataset_sha256(load_applicants(swapped)) != reference
    missing = write_csv(tmp_path, GOOD_ROW.replace(",9120,", ",NA,"), NA_ROW)
    assert dataset_sha256(load_applicants(missing)) != reference


def test_describes_size_positives_and_schema(tmp_path):
    record = dataset_fingerprint(
        load_applicants(write_csv(tmp_path, GOOD_ROW, NA_ROW, SENTINEL_ROW))
    )
    assert record["rows"] == 3 and record["positives"] == 2 and record["columns"] == 11
    assert record["schema"]["SeriousDlqin2yrs"] == "int64"
    assert record["schema"]["age"] == "float64"
    assert len(record["sha256"]) == 64
