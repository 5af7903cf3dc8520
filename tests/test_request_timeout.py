"""The request timeout that replaces BentoML's: 504 when no response started in time, none once
it has, and no timer left in the event loop by an answered request (BentoML's middleware leaves
one per request for the whole timeout). The middleware runs over small ASGI apps here; the last
test is a real ``bentoml serve`` with a one-second ``traffic.timeout``.
"""

import asyncio
import gc
import importlib.util
import json
import socket

import httpx
import pytest
import uvloop
from bentoml._internal.server.http import traffic
from conftest import Server

from credit_risk.ml.contract import EXAMPLE_APPLICANT
from credit_risk.serving.request_timeout import RequestTimeout, replace_bentoml_timeout

SCOPE = {"type": "http", "method": "POST", "path": "/predict", "headers": []}


async def quick(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def call(middleware) -> list[dict]:
    """The messages ``middleware`` sends for one request."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await middleware(SCOPE, receive, send)
    return sent


def timers_left_by(middleware_class, requests: int) -> int:
    """How many timers are alive after ``requests`` answered requests, in the event loop the
    service runs on (uvloop's, where a cancelled timer is freed at once)."""

    async def answer_all() -> int:
        middleware = middleware_class(quick, timeout=60)
        for _ in range(requests):
            assert (await call(middleware))[1]["body"] == b"ok"
        await asyncio.sleep(0.01)  # a turn of the loop, which frees the timers it closed
        gc.collect()
        return sum(type(o).__name__ == "TimerHandle" for o in gc.get_objects())

    return uvloop.run(answer_all())


def bentomls_own_timeout_middleware() -> type:
    """BentoML's class, from its module's source (the service module replaces its name)."""
    spec = importlib.util.spec_from_file_location("bentoml_traffic", traffic.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TimeoutMiddleware


def test_answered_requests_leave_no_timer_where_bentomls_middleware_leaves_one_each():
    before = timers_left_by(RequestTimeout, 0)
    assert timers_left_by(RequestTimeout, 500) == before
    assert timers_left_by(bentomls_own_timeout_middleware(), 500) >= before + 500


def test_a_request_without_a_response_in_time_is_cancelled_and_answered_504():
    cancelled = []

    async def never_answers(scope, receive, send):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    start, body = asyncio.run(call(RequestTimeout(never_answers, timeout=0.05)))
    assert cancelled == [True]
    assert start["status"] == 504
    assert json.loads(body["body"]) == {
        "error": "no answer within 0.05 s (the service's traffic.timeout)"
    }


def test_a_response_that_started_in_time_is_not_cut_off():
    async def slow_body(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"late but whole"})

    start, body = asyncio.run(call(RequestTimeout(slow_body, timeout=0.05)))
    assert (start["status"], body["body"]) == (200, b"late but whole")


def test_the_apps_own_timeout_error_is_not_taken_for_the_deadline():
    async def fails(scope, receive, send):
        raise TimeoutError("the registry did not answer")

    with pytest.raises(TimeoutError, match="registry"):
        asyncio.run(call(RequestTimeout(fails, timeout=60)))


def test_bentoml_builds_this_middleware_in_place_of_its_own():
    from bentoml._internal.server.base_app import BaseAppFactory

    replace_bentoml_timeout()

    class Factory(BaseAppFactory):
        name = "probe"

    built = [middleware.cls for middleware in Factory(timeout=60).middlewares]
    assert built == [RequestTimeout]


@pytest.mark.slow
def test_bentoml_serve_answers_a_stalled_request_504_after_traffic_timeout(project):
    folder, env = project
    options = {"BENTOML_CONFIG_OPTIONS": "services.CreditRiskService.traffic.timeout=1"}
    server = Server(env | options, folder)
    try:
        head = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\nConnection: close\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(head + b'{"age": ')  # and nothing more
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 504"), answer
        assert json.loads(body) == {"error": "no answer within 1 s (the service's traffic.timeout)"}
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE_APPLICANT).status_code == 200
    finally:
        server.stop()
