"""Run a stage function as the command DVC calls: one summary line, or one error line."""

from collections.abc import Callable

from credit_risk.errors import errors_as_one_line, quiet_mlflow
from credit_risk.params import load_params


def run_stage(step: Callable[[dict], str], params_file: str = "params.yaml") -> None:
    """Call ``step(params)`` and print its summary line, prefixed with the stage's name."""
    quiet_mlflow()
    with errors_as_one_line(step.__name__, params_file):
        summary = step(load_params(params_file))
    print(f"{step.__name__}: {summary}")
