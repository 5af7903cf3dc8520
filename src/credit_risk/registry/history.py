"""Every change of Production, by the gate or by hand: one tag of the registered model each.

Each change is recorded as it is made, under the registry lock, as the tag
``production_change.<sequence>`` of the registered model, holding JSON: ``at`` (UTC),
``from`` and ``to`` (versions), ``how`` (``gate``, ``hand`` or ``hand, overriding the gate``),
``by`` (who ran the gate, or approved), ``reason`` (given by hand) and ``gate`` (the new
version's gate decision, reason and evidence). Registered-model tags are kept by every MLflow
store (SQLite, a tracking server's SQL database), go wherever the model goes, and no edit of a
version touches them; a version's own ``promoted_*`` tags hold only its latest promotion.
"""

import getpass
import json
import os
import socket
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from credit_risk.registry.names import MODEL_NAME, TAG_PRODUCTION_CHANGE_PREFIX

APPROVER_VARIABLE = "CREDIT_RISK_APPROVER"


def user_at_host() -> str:
    """``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # a container user without a name
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def approver() -> str:
    """Who approves a promotion by hand: ``$CREDIT_RISK_APPROVER``, else ``user@host``."""
    return os.environ.get(APPROVER_VARIABLE, "").strip() or user_at_host()


def now() -> str:
    """The current UTC time, to the second, ISO 8601."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def record_change(client: MlflowClient, change: dict) -> None:
    """Append ``change`` to the history (the caller holds the registry lock)."""
    tags = client.get_registered_model(MODEL_NAME).tags
    sequence = 1 + max((_sequence(name) for name in tags if _sequence(name)), default=0)
    name = f"{TAG_PRODUCTION_CHANGE_PREFIX}{sequence:06d}"
    client.set_registered_model_tag(MODEL_NAME, name, json.dumps(change, sort_keys=True))


def production_changes(client: MlflowClient) -> list[dict]:
    """The recorded changes of Production, newest first."""
    try:
        tags = client.get_registered_model(MODEL_NAME).tags
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    recorded = sorted((_sequence(name), value) for name, value in tags.items() if _sequence(name))
    return [json.loads(value) for _, value in reversed(recorded)]


def describe_changes(changes: list[dict], production: str | None) -> str:
    """The history as text: two lines per change, newest first; a warning first when
    Production is not where the last recorded change left it."""
    lines = []
    if changes and changes[0]["to"] != production:
        lines.append(
            f"warning: Production is version {production}, but the last recorded change made it "
            f"version {changes[0]['to']}: it was changed outside credit-risk"
        )
    elif production and not changes:
        lines.append(
            f"warning: Production is version {production}, but no change is recorded: it was "
            "set before credit-risk kept a history, or outside credit-risk"
        )
    for change in changes:
        moved = f"{change['at']}  version {change['from'] or 'none'} -> {change['to']}"
        if change["how"] == "gate":
            lines.append(f"{moved}  by the gate (register stage run by {change['by']})")
        else:
            lines.append(f"{moved}  by {change['how']}, approved by {change['by']}: "
                         f"{change['reason']}")  # fmt: skip
        gate = change["gate"]
        lines.append(f"    gate: {gate.get('decision') or 'none'} ({gate.get('reason') or '-'})")
    return "\n".join(lines) if lines else f"{MODEL_NAME} has had no Production version yet"


def _sequence(tag_name: str) -> int:
    """The sequence number of a history tag's name, else 0."""
    if not tag_name.startswith(TAG_PRODUCTION_CHANGE_PREFIX):
        return 0
    number = tag_name.removeprefix(TAG_PRODUCTION_CHANGE_PREFIX)
    return int(number) if number.isdigit() else 0
