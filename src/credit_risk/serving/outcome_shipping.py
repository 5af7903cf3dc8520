"""Shipping the outcomes file to MLflow: its new lines to the run ``outcomes``, each once.

``credit-risk outcomes`` ships the outcomes it stored at once; the service's shipper ships, every
round, whatever is left (MLflow was down when they were taken in). Both hold the outcomes file's
lock while they ship, so they take turns with each other and with new outcomes being taken in.
Chunks are named as the prediction log's are (:data:`~credit_risk.serving.shipping.CHUNK_NAME`):
``outcomes-<source>-<start>-<end>-<N>r-<D>p.jsonl``, ``D`` the defaults among the ``N`` outcomes,
``source`` a random name the directory's outcomes file gets when it is first shipped, so that
the files of several hosts never share a chunk name. A shipment that failed before its offset
was saved is shipped again from the same start (longer if outcomes came meanwhile), and the run's
totals count the longest chunk per start: a retry never counts twice. Progress is
``outcomes-shipped.json`` beside the file (replaced atomically).
"""

import fcntl
import os
import secrets
import tempfile
import time
from pathlib import Path

import orjson

from credit_risk.ml.contract import TARGET
from credit_risk.registry.names import MODEL_NAME, OUTCOMES_RUN, TAG_OUTCOMES_MODEL_NAME
from credit_risk.registry.store import connect, project_root, redact, tracking_errors
from credit_risk.serving.shipping_state import save_state

OUTCOMES_FILE = "outcomes.jsonl"
STATE_FILE = "outcomes-shipped.json"
ARTIFACT_DIR = "outcomes"


def read_outcome_state(directory: Path) -> dict:
    """Where shipping stopped (``offset``), the file's ``source`` name, the run per store."""
    try:
        state = orjson.loads((directory / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return {"offset": 0, "runs": {}}
    except orjson.JSONDecodeError as error:
        raise ValueError(
            f"{directory / STATE_FILE} is corrupt ({error}); delete it to ship every outcome again"
        ) from None
    return state


def ship_outcomes(directory: Path, uri: str, client=None, wait: bool = True) -> int | None:
    """Ship the outcomes of ``directory`` not yet shipped to the store at ``uri``; how many, or
    None when another process holds the outcomes file and ``wait`` is false."""
    try:
        descriptor = os.open(directory / OUTCOMES_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        state = read_outcome_state(directory)
        size, shipped = os.fstat(descriptor).st_size, 0
        if state["offset"] > size:
            raise ValueError(
                f"{directory / OUTCOMES_FILE} is shorter than the {state['offset']} bytes shipped "
                f"from it; delete {STATE_FILE} to ship it again"
            )
        while state["offset"] < size:
            client = client or connect(uri)
            shipped += _ship_chunk(client, uri, directory, descriptor, size, state)
        return shipped
    finally:
        os.close(descriptor)


def ship_now(directory: Path, uri: str | None) -> str:
    """Ship the outcomes of ``directory`` not yet shipped to the store at ``uri`` (if any), now
    rather than in the service's next round; what happened, in a few words."""
    if uri is None:
        return "not shipped to MLflow (no MLFLOW_TRACKING_URI and no mlflow.db here)"
    try:
        with tracking_errors(uri):
            shipped = ship_outcomes(directory, uri)
    except (OSError, ValueError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0]
        return f"not shipped yet ({reason}): a service's shipper or the next run ships them"
    return f"{shipped} shipped to the MLflow run {OUTCOMES_RUN} at {redact(uri)}"


def _ship_chunk(client, uri: str, directory: Path, descriptor: int, size: int, state: dict) -> int:
    """Ship the next chunk of the outcomes file, log the run's totals, save the offset."""
    from credit_risk.serving.shipping import MAX_SHIPMENT_BYTES

    start = state["offset"]
    data = os.pread(descriptor, min(MAX_SHIPMENT_BYTES, size - start), start)
    lines = data[: data.rfind(b"\n") + 1].splitlines(keepends=True)
    if not lines:  # the file is only ever appended whole lines, under its lock
        raise ValueError(f"{directory / OUTCOMES_FILE}: no complete line at byte {start}")
    if "source" not in state:  # saved before the first upload: its chunks keep their names
        state["source"] = secrets.token_hex(4)
        save_state(directory, state, STATE_FILE)
    run_id = state["runs"].get(redact(uri)) or outcomes_run(client, uri)
    end = start + sum(map(len, lines))
    defaults = sum(orjson.loads(line)[TARGET] for line in lines)
    name = f"outcomes-{state['source']}-{start:012d}-{end:012d}-{len(lines)}r-{defaults}p.jsonl"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / name).write_bytes(b"".join(lines))
        client.log_artifact(run_id, str(Path(folder) / name), artifact_path=ARTIFACT_DIR)
    _log_totals(client, run_id)
    state["offset"], state["runs"][redact(uri)] = end, run_id
    save_state(directory, state, STATE_FILE)
    return len(lines)


def _log_totals(client, run_id: str) -> None:
    """``outcomes_total``, ``defaults_total`` and ``default_rate`` of the outcome records shipped
    (summed from the chunks' names; an outcome taken in on two hosts is two records)."""
    from mlflow.entities import Metric

    from credit_risk.serving.shipping import run_totals

    names = [artifact.path for artifact in client.list_artifacts(run_id, ARTIFACT_DIR)]
    total, defaults = run_totals(names)
    metrics = {"outcomes_total": total, "defaults_total": defaults}
    metrics["default_rate"] = defaults / total
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, total) for k, v in metrics.items()])


def outcomes_run(client, uri: str) -> str:
    """The id of the run ``outcomes`` in the store at ``uri``, created if there is none."""
    from credit_risk.registry.lookups import get_or_create_experiment
    from credit_risk.serving.shipping import tagged_run

    experiment = get_or_create_experiment(client, uri, project_root())
    return tagged_run(client, experiment, OUTCOMES_RUN, {TAG_OUTCOMES_MODEL_NAME: MODEL_NAME})
