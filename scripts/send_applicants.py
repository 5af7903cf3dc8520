"""Send the applicants of a Kaggle-format CSV to a running service, in batches.

Usage: python scripts/send_applicants.py FILE [--url URL] [--skip K] [--rows N] [--outcomes OUT.csv]

Reads the file as the Kaggle files are (unnamed index column, hyphenated headers, ``NA``),
posts N applicants (the first ones, or those after the first K) to ``URL/predict/batch`` and
prints how many were declined. Every
answer is logged by the service, like any other. With ``--outcomes``, the file's own target
column stands in for the defaults a lender learns months later: each answer's
``prediction_id`` with its applicant's ``SeriousDlqin2yrs`` and today's date are written to
OUT.csv, the input of ``credit-risk outcomes``.
"""

import argparse
import csv
import json
import urllib.request
from datetime import UTC, datetime
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
    parser.add_argument("--skip", type=int, default=0, help="skip the first SKIP applicants")
    parser.add_argument("--rows", type=int, help="send only ROWS applicants")
    parser.add_argument(
        "--outcomes", type=Path, metavar="OUT.csv",
        help="write each answer's prediction_id with the file's SeriousDlqin2yrs to OUT.csv",
    )  # fmt: skip
    args = parser.parse_args()

    table = pd.read_csv(
        args.file, index_col=0, skiprows=range(1, args.skip + 1), nrows=args.rows, na_values=["NA"]
    )
    table = table.rename(columns=KAGGLE_TO_CANONICAL)
    if args.outcomes and TARGET not in table:
        parser.error(f"--outcomes: {args.file} has no {TARGET} column")
    labels = table[TARGET].tolist() if TARGET in table else []
    bodies = api_bodies(table.drop(columns=TARGET, errors="ignore"))
    declined, ids = 0, []
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
        ids += [answer["prediction_id"] for answer in answers]
    if args.outcomes:
        today = datetime.now(UTC).date().isoformat()
        with args.outcomes.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(["prediction_id", TARGET, "observed_at"])
            writer.writerows([i, int(label), today] for i, label in zip(ids, labels, strict=True))
    print(
        f"sent {len(bodies)} applicants to {args.url}: {declined} declined "
        f"({declined / len(bodies):.1%})"
    )


if __name__ == "__main__":
    main()
