"""DVC stage `prepare`: validate the raw CSV against the feature contract and split it."""

from credit_risk.cli import run_stage
from credit_risk.pipeline import prepare

if __name__ == "__main__":
    run_stage(prepare)
