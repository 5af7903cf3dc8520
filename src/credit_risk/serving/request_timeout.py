"""The service's request timeout (BentoML's ``traffic.timeout``) without a timer left behind.

BentoML answers 504 when a request has not started its response within the service's
``traffic.timeout``. Its middleware (``TimeoutMiddleware`` in
``bentoml._internal.server.http.traffic``, BentoML 1.4) schedules a timer per request and never
cancels it: each request leaves a timer, a future and their callback in the event loop for the
whole timeout after it was answered. At 1,000 requests a second a worker holds about 60,000 of
them (60 s), which the garbage collector walks again and again: young-generation collections
that free nothing and pause the event loop for up to 70 ms (docs/performance.md).

:class:`RequestTimeout` does the same job with a deadline that ends when the response starts
(or the request ends), and :func:`replace_bentoml_timeout` makes BentoML build it in place of
its own.
"""

import asyncio

from starlette.responses import JSONResponse


class RequestTimeout:
    """ASGI middleware: 504 for an HTTP request that has not started its response within
    ``timeout`` seconds (the request is cancelled); none once its response has started."""

    def __init__(self, app, timeout: float):
        self.app, self.timeout = app, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_disarm(message):
            nonlocal started
            if not started:
                started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self.app(scope, receive, send_and_disarm)
        except TimeoutError:
            if started or not deadline.expired():  # the app's own error, not the deadline
                raise
            message = f"no answer within {self.timeout:g} s (the service's traffic.timeout)"
            await JSONResponse({"error": message}, status_code=504)(scope, receive, send)


def replace_bentoml_timeout() -> None:
    """Make BentoML's HTTP app use :class:`RequestTimeout`, with the same setting, where it
    would use its own timeout middleware (it looks that class up in its module each time it
    builds an app, so this must run before ``bentoml serve`` builds the workers' apps: at the
    import of the service module)."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = RequestTimeout
