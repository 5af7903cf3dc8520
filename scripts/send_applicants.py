"""Send the applicants of a Kaggle-format CSV to a running service, in batches.

Usage: python scripts/send_applicants.py FILE [--url URL] [--rows N]

Reads the file as the Kaggle files are (unnamed index column, hyphenated headers, ``NA``; the
target column, if any, is ignored), posts the first N applicants to ``URL/predict/batch`` and
prints how many were declined. Every answer is logged by the service, like any other.
"""

import argparse
import json
import urllib.request
from pathlib import Path

import pandas as pd

from credit_risk.ml.api_bodies import api_bodies
from credit_risk.ml.contract import KAGGLE_TO_CANONICAL, TARGET

BATCH = 1_000


def main() -> None:
    """Parse the command line, send the applicants, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="Kaggle-format CSV (cs-training.csv, cs-test.csv)")
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="default: %(default)s")
    parser.add_argument("--rows", type=int, help="send only the first ROWS applicants")
    args = parser.parse_args()

    table = pd.read_csv(args.file, index_col=0, nrows=args.rows, na_values=["NA"])
    table = table.rename(columns=KAGGLE_TO_CANONICAL).drop(columns=TARGET, errors="ignore")
    bodies = api_bodies(table)
    declined = 0
    for start in range(0, len(bodies), BATCH):
        payload = json.dumps({"applicants": bodies[start : start + BATCH]}).encode()
        request = urllib.request.Request(
            f"{args.url.rstrip('/')}/predict/batch",
            data=payload,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answers = json.load(response)["predictions"]
        declined += sum(answer["prediction"] for answer in answers)
    print(
        f"sent {len(bodies)} applicants to {args.url}: {declined} declined "
        f"({declined / len(bodies):.1%})"
    )


if __name__ == "__main__":
    main()
