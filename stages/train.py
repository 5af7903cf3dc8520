"""DVC stage `train`: fit the model pipeline and evaluate it on the held-out split."""

from credit_risk.pipeline.runner import run_stage
from credit_risk.pipeline.train import train

if __name__ == "__main__":
    run_stage(train)
