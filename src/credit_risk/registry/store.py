"""The MLflow tracking store: which one (URI), checked reachable, with errors naming it.

MLflow is imported only where it is used: the ``register`` stage decides without it whether it
needs the store at all (see :mod:`credit_risk.pipeline.register`).
"""

import os
import urllib.parse
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
    """Use :func:`tracking_uri` for MLflow; check that a tracking server answers.

    Returns the URI as configured, credentials included: show it only through :func:`redact`.
    """
    import mlflow

    uri = tracking_uri(root)
    connect(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def connect(uri: str):
    """An ``MlflowClient`` for the store at ``uri``, once a tracking server there answers."""
    from mlflow import MlflowClient

    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_server(uri: str) -> None:
    """Raise :class:`TrackingError` unless the tracking server at ``uri`` answers ``/health``.

    ``requests`` (MLflow's own HTTP client) sends ``user:password@`` in the URI as basic auth.
    """
    import requests

    try:
        answer = requests.get(f"{uri.rstrip('/')}/health", timeout=5)
    except requests.RequestException as error:
        reason = redact_text(str(error), uri)
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} is unreachable: {reason}"
        ) from None
    if answer.status_code >= 500:
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} is unhealthy: /health answered HTTP "
            f"{answer.status_code}"
        )


def redact(uri: str) -> str:
    """``uri`` with its password, if any, replaced by ``***`` (``scheme://user:***@host/...``)."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    if ":" not in userinfo:
        return uri
    netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def redact_text(text: str, uri: str) -> str:
    """``text`` with the URI's password (raw or percent-encoded) and the URI itself redacted."""
    password = urllib.parse.urlsplit(uri).password
    text = text.replace(uri, redact(uri))
    if password:
        for secret in {password, urllib.parse.quote(password, safe="")}:
            text = text.replace(secret, "***")
    return text


@contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """Turn an ``MlflowException`` into a :class:`TrackingError` naming the store (redacted)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        message = redact_text(error.message.strip().splitlines()[0], uri)
        raise TrackingError(f"MLflow at {redact(uri)}: {message}") from error
