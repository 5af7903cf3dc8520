"""Write the synthetic "Give Me Some Credit" dataset to disk.

Usage: python scripts/make_synthetic_data.py [--rows N] [--seed S] [--world W] [--output PATH]

``--world drifted`` draws later applicants of a world whose risk rule changed (see
``credit_risk.ml.synthetic.WORLDS``), with their true outcomes: the input of the outcomes loop
in docs/outcomes.md.
"""

import argparse
from pathlib import Path

from credit_risk.ml.synthetic import WORLDS, generate_csv

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = PROJECT_ROOT / "data" / "gmsc-synthetic.csv"


def main() -> None:
    """Parse the command line, generate the CSV and write its bytes unchanged."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="number of data rows")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument(
        "--world", choices=sorted(WORLDS), default="original", help="default: %(default)s"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="CSV file to write")
    args = parser.parse_args()

    data = generate_csv(n_rows=args.rows, seed=args.seed, world=args.world)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"wrote {args.rows} rows ({len(data):,} bytes) to {args.output}")


if __name__ == "__main__":
    main()
