"""params.yaml reading, the embedded synthetic dataset and the drifted synthetic world."""

import subprocess
import sys

from conftest import PROJECT
from sklearn.metrics import roc_auc_score

from credit_risk.ml.contract import TARGET
from credit_risk.ml.data import load_applicants
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


def test_the_drifted_world_is_seeded_and_changed_as_documented(tmp_path):
    """Younger applicants using more of their revolving credit, who default about twice as
    often, utilisation a risk of its own (``credit_risk.ml.synthetic.WORLDS``); the original
    world's bytes are those of the default."""
    assert generate_csv(200, seed=1, world="drifted") == generate_csv(200, seed=1, world="drifted")
    assert generate_csv(200, seed=1, world="drifted") != generate_csv(200, seed=1)
    assert generate_csv(200, seed=1, world="original") == generate_csv(200, seed=1)
    worlds = {}
    for world in ("original", "drifted"):
        path = tmp_path / f"{world}.csv"
        path.write_bytes(generate_csv(20_000, seed=5, world=world))
        worlds[world] = load_applicants(path)
    original, drifted = worlds["original"], worlds["drifted"]
    assert 0.06 < original[TARGET].mean() < 0.075 and 0.13 < drifted[TARGET].mean() < 0.16
    utilization = "RevolvingUtilizationOfUnsecuredLines"
    assert drifted[utilization].median() > 1.5 * original[utilization].median()
    assert drifted["age"].median() < original["age"].median()
    # Utilisation alone ranks the defaults better than before; late payments worse.
    late = "NumberOfTime30_59DaysPastDueNotWorse"
    auc = {(name, column): roc_auc_score(frame[TARGET], frame[column])
           for name, frame in worlds.items() for column in (utilization, late)}  # fmt: skip
    assert auc["drifted", utilization] > auc["original", utilization] + 0.02
    assert auc["drifted", late] < auc["original", late] - 0.02
