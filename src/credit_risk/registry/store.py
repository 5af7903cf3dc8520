"""The MLflow tracking store: which one (URI), checked reachable, with errors naming it.

MLflow is imported only where it is used: the ``register`` stage decides without it whether it
needs the store at all (see :mod:`credit_risk.pipeline.register`).
"""

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HTTP_DEFAULTS = {
    # MLflow retries a failing HTTP call 7 times with growing pauses (minutes in all); an
    # unreachable server should fail a command in seconds. Explicit user settings win.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class TrackingError(RuntimeError):
    """MLflow cannot be used as configured; the message names the tracking URI."""


def project_root() -> Path:
    """The DVC project root, also from within ``dvc exp run``'s temporary copy.

    DVC sets ``DVC_ROOT`` for stage commands, and points it at the original project when it
    runs an experiment in a copy under ``.dvc/tmp/exps``.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def embedded_tracking_uri(root: Path) -> str:
    """The default store: a SQLite database in the project folder."""
    return f"sqlite:///{root / 'mlflow.db'}"


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded store of the project at ``root``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or embedded_tracking_uri(root)


def configure_tracking(root: Path) -> str:
    """Use :func:`tracking_uri` for MLflow; check that a tracking server answers."""
    import mlflow

    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    return uri


def _check_server(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"MLflow tracking server {uri} is unreachable: {reason}") from None


@contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """Turn an ``MlflowException`` into a :class:`TrackingError` naming the store."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        message = error.message.strip().splitlines()[0]
        raise TrackingError(f"MLflow at {uri}: {message}") from error
