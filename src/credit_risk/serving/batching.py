"""Group commit: concurrent ``/predict`` requests scored and logged together."""

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

MAX_GROUP = 256
"""Most ``/predict`` requests scored and logged together."""


class GroupCommit:
    """Scores requests in groups: the ones arriving while a group is being scored and logged
    form the next group, so one model call and one fsync serve them all."""

    def __init__(self, score: Callable[[list[dict]], list[dict]], executor: Executor):
        self.score, self.executor = score, executor
        self.waiting: list[tuple[dict, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def submit(self, applicant: dict) -> dict:
        """The logged prediction for ``applicant``."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((applicant, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            group, self.waiting = self.waiting[:MAX_GROUP], self.waiting[MAX_GROUP:]
            try:
                results = await loop.run_in_executor(
                    self.executor, self.score, [applicant for applicant, _ in group]
                )
            except Exception as error:  # noqa: BLE001 - every waiting request gets it
                results = [error] * len(group)
            for (_, future), result in zip(group, results, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
