"""params.yaml reading, and the embedded synthetic dataset."""

import subprocess
import sys

from conftest import PROJECT

from credit_risk.ml.synthetic import generate_csv
from credit_risk.params import load_params

SYNTHETIC = PROJECT / "data" / "gmsc-synthetic.csv"


def test_yaml_1_2_floats_written_by_dvc_exp_run_are_numbers(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  a: 1e-05\n  b: 2.5E+3\n  c: 7\n  d: 0.1\n  e: abc\n")
    assert load_params(path)["train"] == {"a": 1e-05, "b": 2500.0, "c": 7, "d": 0.1, "e": "abc"}


def test_project_params_name_the_raw_file():
    assert load_params(PROJECT / "params.yaml")["data"]["raw"] == "data/gmsc-synthetic.csv"


def test_synthetic_file_is_regenerated_byte_identically(tmp_path):
    output = tmp_path / "regenerated.csv"
    subprocess.run(
        [sys.executable, str(PROJECT / "scripts" / "make_synthetic_data.py"), "--output", output],
        check=True,
        capture_output=True,
    )
    assert output.read_bytes() == SYNTHETIC.read_bytes()


def test_synthetic_file_has_the_kaggle_format_and_quirks():
    data = SYNTHETIC.read_bytes()
    assert len(data) <= 2 * 1024 * 1024
    lines = data.split(b"\r\n")
    assert lines[-1] == b"" and b"\n" not in b"".join(lines)
    assert lines[0].startswith(b",SeriousDlqin2yrs,") and b"30-59Days" in lines[0]
    rows = [line.split(b",") for line in lines[1:-1]]
    assert [int(row[0]) for row in rows[:3]] == [1, 2, 3]
    assert any(row[6] == b"NA" for row in rows) and any(row[11] == b"NA" for row in rows)
    for code in (b"96", b"98"):
        assert any(row[4] == row[8] == row[10] == code for row in rows)
    dollars = [float(row[5]) for row in rows if row[6] == b"NA"]
    assert max(dollars) > 10_000
    assert sum(row[3] == b"0" for row in rows) == 1


def test_generator_is_seeded():
    assert generate_csv(200, seed=1) == generate_csv(200, seed=1)
    assert generate_csv(200, seed=1) != generate_csv(200, seed=2)
