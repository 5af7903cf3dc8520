"""Group commit: concurrent ``/predict`` requests scored and logged together, in bounded order.

Requests arriving while a group is being scored and logged form the next group, so one model
call and one fsync serve them all. The queue of waiting requests is bounded (a full queue is
:class:`Overloaded`, answered 503), and a request whose client has gone away before its group
is scored is dropped: it is neither scored nor logged, and its request ends with
:class:`ClientLeft` (answered 499, to nobody: the request ends at once and the metrics count
it like any answer).
"""

import asyncio
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

MAX_GROUP = 256
"""Most ``/predict`` requests scored and logged together."""
MAX_WAITING_ENV = "CREDIT_RISK_MAX_WAITING"
DEFAULT_MAX_WAITING = 1024
"""Most ``/predict`` requests waiting for their group (unless the setting above says otherwise);
more are turned away."""


class Overloaded(RuntimeError):
    """Too many requests are waiting; the client should retry shortly."""


class ClientLeft(RuntimeError):
    """The caller went away before its request was scored."""


class ScoringError(RuntimeError):
    """The model could not score an applicant that passed validation."""


class GroupCommit:
    """Scores requests in groups with ``score(applicants, api_keys)``, which returns a
    prediction or an exception per applicant (so one bad row fails alone), in an executor
    thread; ``api_keys`` are the names of the callers' keys, for the log records."""

    def __init__(self, score: Callable[[list[dict], list[str | None]], list], executor: Executor):
        self.score, self.executor = score, executor
        self.max_waiting = int(os.environ.get(MAX_WAITING_ENV) or DEFAULT_MAX_WAITING)
        self.waiting: list[
            tuple[dict, str | None, Callable[[], Awaitable[bool]], asyncio.Future]
        ] = []
        self.task: asyncio.Task | None = None

    async def submit(
        self, applicant: dict, client_gone: Callable[[], Awaitable[bool]], api_key: str | None
    ) -> dict:
        """The logged prediction for ``applicant``; ``client_gone`` tells if the caller left,
        ``api_key`` is the name of the caller's key (None when anonymous)."""
        if len(self.waiting) >= self.max_waiting:
            raise Overloaded(f"{self.max_waiting} requests are waiting to be scored")
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((applicant, api_key, client_gone, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            group, self.waiting = self.waiting[:MAX_GROUP], self.waiting[MAX_GROUP:]
            live = []
            for applicant, api_key, client_gone, future in group:
                if future.done():
                    continue
                if await client_gone():
                    future.set_exception(ClientLeft("the client went away before scoring"))
                else:
                    live.append((applicant, api_key, future))
            if not live:
                continue
            try:
                applicants, api_keys, _ = zip(*live, strict=True)
                results = await loop.run_in_executor(
                    self.executor, self.score, list(applicants), list(api_keys)
                )
            except Exception as error:  # noqa: BLE001 - every request of the group gets it
                results = [error] * len(live)
            for (*_, future), result in zip(live, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
