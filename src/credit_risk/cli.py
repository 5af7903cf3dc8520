"""Run a pipeline step as a command: one summary line on success, one error line on failure."""

import sys
from collections.abc import Callable

from credit_risk.params import load_params

EXPECTED_ERRORS = (ValueError, KeyError, OSError, RuntimeError)
"""Bad data (``DataError`` is a ValueError), bad settings, missing files, MLflow trouble."""


def run_stage(step: Callable[[dict], str], params_file: str = "params.yaml") -> None:
    """Call ``step(params)``; print its summary, or ``error: ...`` and exit with status 1."""
    name = step.__name__
    try:
        summary = step(load_params(params_file))
    except EXPECTED_ERRORS as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if isinstance(error, KeyError):
            message = f"{params_file}: missing setting {error}"
        print(f"{name}: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"{name}: {summary}")
