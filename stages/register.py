"""DVC stage `register`: log, register and (if it passes the gate) promote the model in MLflow."""

from credit_risk.cli import run_stage
from credit_risk.tracking import register

if __name__ == "__main__":
    run_stage(register)
