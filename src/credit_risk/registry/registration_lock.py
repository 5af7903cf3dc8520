"""One writer at a time in the registry: a lock any MLflow store can hold.

Two ``dvc repro`` runs against one tracking server could otherwise both miss the other's run
and log the same model twice, or interleave two promotions so that the alias ``production`` and
the stage ``Production`` end on different versions. The lock is a registered model of its own
(:data:`LOCK_NAME`): creating a registered model whose name exists fails in every MLflow store,
so whoever creates it holds the lock, and deleting it releases it. A lock older than
:data:`LOCK_TTL_SECONDS` (its holder died) is broken by the next writer that waits for it.
"""

import os
import random
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from credit_risk.registry.names import MODEL_NAME
from credit_risk.registry.store import TrackingError

LOCK_NAME = f"{MODEL_NAME}.registration-lock"
LOCK_TTL_SECONDS = 300
"""A registration takes seconds; a lock this old was left by a writer that died."""
_EXPIRES_TAG = "expires_at"
_HOLDER_TAG = "holder"


@contextmanager
def registration_lock(client: MlflowClient, command: str) -> Iterator[None]:
    """Hold the registry's write lock for the ``with`` block (waiting for it if need be)."""
    holder = f"{command} on {socket.gethostname()}, pid {os.getpid()}"
    deadline = time.monotonic() + LOCK_TTL_SECONDS + 60
    announced = False
    while not _try_create(client, holder):
        if not announced:
            print(f"{command}: waiting for the registry lock {LOCK_NAME!r}", file=sys.stderr)
            announced = True
        _break_if_expired(client)
        if time.monotonic() > deadline:
            raise TrackingError(
                f"the registry lock {LOCK_NAME!r} is still held; if no register stage or "
                "promotion is running, delete that registered model"
            )
        time.sleep(0.2 + random.random() * 0.3)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(LOCK_NAME)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise


def _try_create(client: MlflowClient, holder: str) -> bool:
    tags = {_HOLDER_TAG: holder, _EXPIRES_TAG: str(time.time() + LOCK_TTL_SECONDS)}
    try:
        client.create_registered_model(
            LOCK_NAME,
            tags=tags,
            description=f"Held while a writer changes {MODEL_NAME} versions; not a model.",
        )
    except MlflowException as error:
        # RESOURCE_DOES_NOT_EXIST: the name was taken when the store tried to insert it and gone
        # when it looked the holder up for its error message (SQL stores do): released meanwhile.
        if error.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            return False
        raise
    return True


def _break_if_expired(client: MlflowClient) -> None:
    """Delete the lock if its holder let it expire (a holder that died)."""
    try:
        lock = client.get_registered_model(LOCK_NAME)
        if float(lock.tags.get(_EXPIRES_TAG, "inf")) < time.time():
            client.delete_registered_model(LOCK_NAME)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
