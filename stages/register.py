"""DVC stage `register`: log, register and (if it passes the gate) promote the model in MLflow."""

from credit_risk.pipeline.register import register
from credit_risk.pipeline.runner import run_stage

if __name__ == "__main__":
    run_stage(register)
