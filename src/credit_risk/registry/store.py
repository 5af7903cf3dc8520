"""The MLflow tracking store: which one (URI), checked reachable, with errors naming it.

MLflow is imported only where it is used: the ``register`` stage decides without it whether it
needs the store at all (see :mod:`credit_risk.pipeline.register`).
"""

import os
import re
import socket
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


SQLITE_PREFIX = "sqlite:///"
SERVER_CHECK_SECONDS = 5
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
"""Default ports of the database servers MLflow's SQLAlchemy store connects to."""


USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
PASSWORD_FILE_ENV = "MLFLOW_TRACKING_PASSWORD_FILE"
REFUSALS = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}
"""MLflow's error codes for a tracking server's HTTP 401 and 403."""


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
    return f"{SQLITE_PREFIX}{root / 'mlflow.db'}"


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded store of the project at ``root``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or embedded_tracking_uri(root)


def configure_tracking(root: Path, create: bool = False) -> str:
    """Use :func:`tracking_uri` for MLflow; check that a tracking server answers, or (unless
    ``create``) that a SQLite store exists: MLflow would create an empty one.

    Returns the URI as configured, credentials included: show it only through :func:`redact`.
    """
    import mlflow

    uri = tracking_uri(root)
    if not create:
        require_existing_store(uri)
    connect(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def require_existing_store(uri: str) -> None:
    """Raise :class:`TrackingError` if ``uri`` is a SQLite store whose file does not exist."""
    if not uri.startswith(SQLITE_PREFIX):
        return
    if not Path(uri.removeprefix(SQLITE_PREFIX).split("?")[0]).is_file():
        raise TrackingError(
            f"no MLflow tracking store at {redact(uri)}: run `dvc repro` first (it trains, "
            "registers and promotes the model)"
        )


def connect(uri: str):
    """An ``MlflowClient`` for the store at ``uri``, once a tracking server there answers."""
    from mlflow import MlflowClient

    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    load_tracking_password()
    check_server(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def load_tracking_password() -> None:
    """Put the content of the file named by ``MLFLOW_TRACKING_PASSWORD_FILE`` (a mounted
    secret; its final newline dropped), if set, in ``MLFLOW_TRACKING_PASSWORD``, where MLflow's
    client reads it. Read anew at each call: a password changed in the file is used from the
    next connection on. MLflow itself reads only the variable; ``_FILE`` is Docker's custom."""
    path = os.environ.get(PASSWORD_FILE_ENV)
    if not path:
        return
    try:
        os.environ[PASSWORD_ENV] = Path(path).read_text(encoding="utf-8").rstrip("\n")
    except OSError as error:
        raise TrackingError(
            f"{PASSWORD_FILE_ENV}: cannot read the tracking password from {path}: {error.strerror}"
        ) from None


def check_server(uri: str) -> None:
    """Raise :class:`TrackingError` unless the tracking server at ``uri`` answers ``/health``,
    or the database server of a database URI accepts a connection (:func:`check_database`);
    a SQLite or file store is not checked.

    ``requests`` (MLflow's own HTTP client) sends ``user:password@`` in the URI as basic auth.
    """
    import requests

    if urllib.parse.urlsplit(uri).scheme.split("+")[0] in DATABASE_PORTS:
        check_database(uri)
        return
    if not uri.startswith(("http://", "https://")):
        return
    try:
        answer = requests.get(f"{uri.rstrip('/')}/health", timeout=SERVER_CHECK_SECONDS)
    except requests.RequestException as error:
        reason = redact_text(_connection_failure(error), uri)
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} is unreachable: {reason}"
        ) from None
    if answer.status_code >= 500:
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} is unhealthy: /health answered HTTP "
            f"{answer.status_code}"
        )


def check_database(uri: str) -> None:
    """Raise :class:`TrackingError` unless the database server of ``uri`` accepts a TCP
    connection within :data:`SERVER_CHECK_SECONDS`: MLflow's SQLAlchemy store retries a
    refused connection for over a minute. A URI without a host (a Unix socket) is not checked.
    """
    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname:
        return
    try:
        port = parts.port or DATABASE_PORTS[parts.scheme.split("+")[0]]
        socket.create_connection((parts.hostname, port), timeout=SERVER_CHECK_SECONDS).close()
    except TimeoutError:
        reason = f"no answer within {SERVER_CHECK_SECONDS} s"
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    else:
        return
    raise TrackingError(f"MLflow tracking database {redact(uri)} is unreachable: {reason}")


def _connection_failure(error) -> str:
    """The operating system's reason (``Connection refused``) in what ``requests`` raised, if
    it names one, rather than urllib3's whole chain of wrappers."""
    import requests

    if isinstance(error, requests.Timeout):
        return f"no answer within {SERVER_CHECK_SECONDS} s"
    found = re.search(r"\[Errno -?\d+\] ([^\"')]+)", str(error))
    return found[1] if found else str(error)


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


def tracking_user(uri: str) -> str | None:
    """The user MLflow sends to the server at ``uri``: the URI's own (``user:password@``), else
    ``MLFLOW_TRACKING_USERNAME`` (or ``~/.mlflow/credentials``), as MLflow's client reads it."""
    from mlflow.utils.credentials import read_mlflow_creds

    return urllib.parse.urlsplit(uri).username or read_mlflow_creds().username


def access_refused(uri: str, status: int, request: str, user: str | None = None) -> str:
    """One line for a tracking server's 401 or 403 to ``user`` (default: the one MLflow
    sends): who was refused, and what to do."""
    user = user or tracking_user(uri)
    where = f"MLflow at {redact(uri)}"
    if status == 401 and user is None:
        return f"{where} needs a user (HTTP 401): set {USERNAME_ENV} and {PASSWORD_ENV}"
    if status == 401:
        return (f"{where} refused user {user!r}: wrong username or password (HTTP 401; "
                f"{USERNAME_ENV}, {PASSWORD_ENV} or {PASSWORD_FILE_ENV})")  # fmt: skip
    return (f"{where}: user {user!r} may not call {request} (HTTP 403 Permission denied): "
            "the MLflow admin grants permissions (docs/security.md)")  # fmt: skip


@contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """Turn an ``MlflowException`` (or a refused artifact transfer) into a
    :class:`TrackingError` naming the store (redacted); a 401 or 403 names the user."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        status = REFUSALS.get(error.error_code)
        if status:
            endpoint = re.search(r"endpoint (\S+) failed", error.message)
            request = endpoint[1] if endpoint else "this request"
            raise TrackingError(access_refused(uri, status, request)) from None
        message = redact_text(error.message.strip().splitlines()[0], uri)
        raise TrackingError(f"MLflow at {redact(uri)}: {message}") from error
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status not in (401, 403):
            raise
        path = urllib.parse.urlsplit(error.response.url).path
        raise TrackingError(access_refused(uri, status, path)) from None
