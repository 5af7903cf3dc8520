"""What a command prints besides its own lines: an expected error as one line on stderr
(exit status 1), MLflow's warnings and errors only."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXPECTED_ERRORS = (ValueError, KeyError, OSError, RuntimeError)
"""Bad data (``DataError`` is a ValueError), bad settings, missing files, MLflow trouble
(:class:`~credit_risk.registry.store.TrackingError` is a RuntimeError)."""


@contextmanager
def errors_as_one_line(command: str, params_file: str = "params.yaml") -> Iterator[None]:
    """Print ``<command>: error: <first line>`` for an expected error and exit with status 1.

    A ``KeyError`` is a setting missing from ``params_file``.
    """
    try:
        yield
    except EXPECTED_ERRORS as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if isinstance(error, KeyError):
            message = f"{params_file}: missing setting {error}"
        print(f"{command}: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None


def quiet_mlflow() -> None:
    """MLflow logs warnings and errors only (not its INFO lines about database tables and
    the like), unless ``MLFLOW_LOGGING_LEVEL`` says otherwise. Call before importing MLflow."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
