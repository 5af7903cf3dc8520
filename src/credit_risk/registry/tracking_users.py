"""The tracking server's users, for MLflow's basic-auth app: the trainer and the api.

Run as the server's admin, with the passwords in a folder of files (:data:`SECRET_FILES`, the
compose stack's secrets). It creates the experiment and the registered model if there are none,
the two users, and grants each exactly :data:`PERMISSIONS`. What is already so is left alone,
so running it again changes nothing. A user's password changes when its file does; the admin's
when ``admin-password.previous`` holds the one that still works.
"""

import os
from pathlib import Path

from credit_risk.registry.names import EXPERIMENT_NAME, MODEL_NAME
from credit_risk.registry.store import (
    REFUSALS,
    TrackingError,
    access_refused,
    connect,
    redact,
    redact_text,
    tracking_uri,
)

ADMIN, TRAINER, API = "admin", "trainer", "api"
"""The admin is the user ``docker/mlflow/basic_auth.ini`` creates at the server's first start."""
SECRETS_ENV = "CREDIT_RISK_MLFLOW_SECRETS"
"""The folder of the password files, as compose.yaml names it (default: ``secrets/mlflow``)."""
SECRET_FILES = {ADMIN: "admin-password", TRAINER: "trainer-password", API: "api-password"}
PREVIOUS_ADMIN_PASSWORD = "admin-password.previous"
MIN_PASSWORD_LENGTH = 12
"""MLflow refuses shorter passwords."""
PERMISSIONS = {
    # Trains, registers versions, moves the aliases, holds the registry lock, promotes by hand.
    TRAINER: {"experiment": "MANAGE", "registered_model": "MANAGE"},
    # Reads the registry; creates and writes its serving-v<N> runs in the experiment.
    API: {"experiment": "EDIT", "registered_model": "READ"},
}
_API = "/api/2.0/mlflow"
_GRANTS = "/api/3.0/mlflow/users/permissions"
_ABSENT = ("RESOURCE_DOES_NOT_EXIST",)


def set_up_users(root: Path, secrets: Path) -> list[str]:
    """Make the users and permissions of the tracking server (``MLFLOW_TRACKING_URI``) what
    :data:`PERMISSIONS` and the password files in ``secrets`` say; one line per fact, saying
    whether it changed."""
    passwords = {user: read_password(secrets / name) for user, name in SECRET_FILES.items()}
    previous = secrets / PREVIOUS_ADMIN_PASSWORD
    uri = tracking_uri(root)
    if not uri.startswith(("http://", "https://")):
        raise TrackingError(
            f"{redact(uri)} is not a tracking server: users need `mlflow server --app-name "
            "basic-auth` (MLFLOW_TRACKING_URI=http://HOST:PORT)"
        )
    connect(uri)
    server = _Server(uri, passwords[ADMIN])
    previous_password = read_password(previous) if previous.exists() else None
    change = server.check_admin(previous_password)
    if change is None:
        raise TrackingError(
            f"MLflow at {redact(uri)} refused user {ADMIN!r} with the password in "
            f"{secrets / SECRET_FILES[ADMIN]} (HTTP 401); if that is a new password, put the one "
            f"that still works in {previous}"
        )
    lines = [f"admin {ADMIN!r} at {redact(uri)}: {change}"]
    experiment, created = server.experiment()
    lines.append(f"experiment {EXPERIMENT_NAME} (id {experiment}): {created}")
    lines.append(f"registered model {MODEL_NAME}: {server.registered_model()}")
    resources = {"experiment": (experiment, f"experiment {EXPERIMENT_NAME}"),
                 "registered_model": (MODEL_NAME, f"registered model {MODEL_NAME}")}  # fmt: skip
    for user in (TRAINER, API):
        lines.append(f"user {user!r}: {server.ensure_user(user, passwords[user])}")
        for kind, permission in PERMISSIONS[user].items():
            resource, what = resources[kind]
            change = server.ensure_permission(user, kind, resource, permission)
            lines.append(f"user {user!r}: {permission} on {what}: {change}")
    return lines


def secrets_folder(given: Path | None) -> Path:
    """``given``, else ``$CREDIT_RISK_MLFLOW_SECRETS``, else ``secrets/mlflow``."""
    return given or Path(os.environ.get(SECRETS_ENV) or "secrets/mlflow")


def read_password(path: Path) -> str:
    """A password file's content, without its final newline."""
    try:
        password = path.read_text(encoding="utf-8").rstrip("\n")
    except OSError as error:
        raise ValueError(f"{path}: cannot read the password: {error.strerror}") from None
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"{path}: MLflow needs a password of {MIN_PASSWORD_LENGTH} characters "
                         f"or more, the file has {len(password)}")  # fmt: skip
    return password


class _Server:
    """The tracking server's REST API at ``uri``, as the admin unless told otherwise."""

    def __init__(self, uri: str, admin_password: str):
        self.uri, self.admin_password = uri, admin_password

    def call(self, method: str, endpoint: str, body: dict | None = None, *, user: str = ADMIN,
             password: str | None = None, absent: tuple[str, ...] = ()) -> dict | None:  # fmt: skip
        """The JSON answer; None for an error whose code is in ``absent``; other errors as one
        line (:class:`TrackingError`)."""
        from mlflow.exceptions import MlflowException
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        creds = get_default_host_creds(self.uri)  # MLflow's TLS settings
        creds.username, creds.password = user, password or self.admin_password
        key = "params" if method == "GET" else "json"
        try:
            response = http_request(creds, endpoint, method, **{key: body or {}})
            verify_rest_response(response, endpoint)
        except MlflowException as error:
            if error.error_code in absent:
                return None
            if error.error_code in REFUSALS:
                refusal = access_refused(self.uri, REFUSALS[error.error_code], endpoint, user)
                raise TrackingError(refusal) from None
            if error.error_code == "ENDPOINT_NOT_FOUND":
                raise TrackingError(
                    f"MLflow at {redact(self.uri)} has no users: it does not run the basic-auth "
                    f"app (`mlflow server --app-name basic-auth`; {endpoint} answered 404)"
                ) from None
            message = redact_text(error.message.strip().splitlines()[0], self.uri)
            raise TrackingError(f"MLflow at {redact(self.uri)}: {message}") from None
        return response.json() if response.content else {}

    def logs_in(self, user: str, password: str) -> dict | None:
        """The user's record if ``password`` is its password, else None."""
        answer = self.call("GET", f"{_API}/users/current", user=user, password=password,
                           absent=("UNAUTHENTICATED",))  # fmt: skip
        return answer and answer["user"]

    def check_admin(self, previous: str | None) -> str | None:
        """Check that the admin logs in and is an admin; with the ``previous`` password, if the
        current one does not work yet, then change it to the current one. None if neither
        works."""
        me = self.logs_in(ADMIN, self.admin_password)
        change = "password unchanged"
        if me is None and previous and (me := self.logs_in(ADMIN, previous)):
            body = {"username": ADMIN, "password": self.admin_password,
                    "current_password": previous}  # fmt: skip
            self.call("PATCH", f"{_API}/users/update-password", body, password=previous)
            change = "password changed"
        if me is None:
            return None
        if not me.get("is_admin"):
            raise TrackingError(f"MLflow at {redact(self.uri)}: user {ADMIN!r} is not an admin")
        return change

    def experiment(self) -> tuple[str, str]:
        """The experiment's id, and whether it was created now (a grant on an experiment
        names its id, so it must exist)."""
        query = {"experiment_name": EXPERIMENT_NAME}
        found = self.call("GET", f"{_API}/experiments/get-by-name", query, absent=_ABSENT)
        if found:
            return found["experiment"]["experiment_id"], "exists"
        body = {"name": EXPERIMENT_NAME}
        return self.call("POST", f"{_API}/experiments/create", body)["experiment_id"], "created"

    def registered_model(self) -> str:
        """Create the registered model (no versions) if there is none: the server answers a
        user who asks for a model that does not exist with 403, not "does not exist", and
        the commands must tell "no Production version yet" from "not allowed"."""
        query = {"name": MODEL_NAME}
        if self.call("GET", f"{_API}/registered-models/get", query, absent=_ABSENT):
            return "exists"
        self.call("POST", f"{_API}/registered-models/create", query)
        return "created"

    def ensure_user(self, user: str, password: str) -> str:
        """Create ``user`` or change its password, as needed; never an admin."""
        record = self.call("GET", f"{_API}/users/get", {"username": user}, absent=_ABSENT)
        body = {"username": user, "password": password}
        if record is None:
            self.call("POST", f"{_API}/users/create", body)
            return "created"
        changes = []
        if self.logs_in(user, password) is None:
            self.call("PATCH", f"{_API}/users/update-password", body)
            changes.append("password changed")
        if record["user"].get("is_admin"):
            body = {"username": user, "is_admin": False}
            self.call("PATCH", f"{_API}/users/update-admin", body)
            changes.append("admin rights removed")
        return ", ".join(changes) or "password unchanged"

    def ensure_permission(self, user: str, kind: str, resource: str, permission: str) -> str:
        """Give ``user`` exactly ``permission`` on the resource, unless it has it already."""
        query = {"username": user, "resource_type": kind, "resource_id": resource}
        current = self.call("GET", f"{_GRANTS}/get", query)["permission"]
        if current == permission:
            return "unchanged"
        grant = query | {"permission": permission}
        if current == "NO_PERMISSIONS":
            self.call("POST", f"{_GRANTS}/grant", grant)
            return "granted"
        self.call("POST", f"{_GRANTS}/revoke", query)
        self.call("POST", f"{_GRANTS}/grant", grant)
        return f"changed from {current}"
