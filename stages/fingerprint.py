"""DVC stage `fingerprint`: hash the prepared dataset's values."""

from credit_risk.pipeline.fingerprint import fingerprint
from credit_risk.pipeline.runner import run_stage

if __name__ == "__main__":
    run_stage(fingerprint)
