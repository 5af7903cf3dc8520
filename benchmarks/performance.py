"""Benchmark ``credit-risk performance``: wall time and peak memory for logs of growing size.

Writes logs of N records in the service's format, as ``benchmarks/drift.py`` does (the model
trained on the embedded synthetic data, 20,000 of its applicants scored as the service does,
spread over 30 days), and outcomes for 30 % of them (each applicant defaults with its predicted
probability, seeded), in the format ``credit-risk outcomes`` stores. Then runs the real command
on each log and prints its wall time and peak memory, e.g.::

    python benchmarks/performance.py                    # 250,000 and 1,000,000 records
    python benchmarks/performance.py --records 100000
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import orjson
from drift import PROJECT, measure, scored_applicants, write_log

from credit_risk.monitoring.outcomes import OUTCOMES_FILE, Outcome
from credit_risk.params import load_params
from credit_risk.serving.prediction_log import iter_records

SHARE_WITH_OUTCOMES = 0.3


def write_outcomes(log: Path, seed: int = 0) -> int:
    """Outcomes for every third or so record of ``log``, drawn from its probabilities."""
    generator = np.random.default_rng(seed)
    written = 0
    with (log / OUTCOMES_FILE).open("wb") as stream:
        for record in iter_records(log):
            if generator.random() >= SHARE_WITH_OUTCOMES:
                continue
            defaulted = int(generator.random() < record["probability"])
            outcome = Outcome(record["prediction_id"], defaulted, "2027-06-30")
            stream.write(orjson.dumps(outcome.record()) + b"\n")
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[250_000, 1_000_000])
    args = parser.parse_args()
    params = load_params(PROJECT / "params.yaml")
    values, answers, _ = scored_applicants(params)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        shutil.copy(PROJECT / "params.yaml", folder / "params.yaml")
        for records in args.records:
            log = folder / f"log-{records}"
            write_log(log, records, values, answers, params["serve"]["threshold"])
            outcomes = write_outcomes(log)
            size = sum(path.stat().st_size for path in log.iterdir()) / 2**20
            seconds, rss, _, output = measure(folder, log, ("performance",))
            print(f"{records:>9,} records, {outcomes:,} outcomes ({size:,.0f} MiB): "
                  f"{seconds:.1f} s, peak RSS {rss:,.0f} MiB")  # fmt: skip
            print(f"          {output}")
            shutil.rmtree(log)


if __name__ == "__main__":
    main()
