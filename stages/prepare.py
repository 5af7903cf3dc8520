"""DVC stage `prepare`: validate the raw CSV against the feature contract and split it."""

from credit_risk.pipeline.prepare import prepare
from credit_risk.pipeline.runner import run_stage

if __name__ == "__main__":
    run_stage(prepare)
