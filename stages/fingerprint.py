"""DVC stage `fingerprint`: hash the prepared dataset's values."""

from credit_risk.cli import run_stage
from credit_risk.pipeline import fingerprint

if __name__ == "__main__":
    run_stage(fingerprint)
