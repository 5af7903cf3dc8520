"""ASGI middleware for POST bodies: JSON only, within the route's size limit, read in full here.

A body larger than its route's limit is answered 413 (at once from ``Content-Length``, or as
soon as a streamed body passes the limit); a body that is not JSON, or is encoded
(``Content-Encoding`` other than ``identity``: gzip is not decoded), 415. A client that goes
away before its whole body arrived costs one INFO line and a response to nobody (status 499,
which the metrics count like any other answer). The route then gets
the body in one message; its later ``receive()`` calls reach the server, which is how it learns
that a client went away while waiting for its answer.
"""

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_BODY_BYTES = {"/predict": 64 * 1024, "/predict/batch": 16 * 1024 * 1024}
"""Per route: one applicant is about 370 bytes, 10,000 of them about 4 MB (7 MB indented)."""
DEFAULT_MAX_BODY_BYTES = 64 * 1024
CLIENT_CLOSED_REQUEST = 499
"""The status of a request whose client left before its answer (nginx's convention)."""

logger = logging.getLogger("bentoml.credit_risk")


class RequestBodies:
    """POST bodies: JSON, within :data:`MAX_BODY_BYTES`, read before the route runs."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"application/json")
        if content_type.split(b";")[0].strip().lower() != b"application/json":
            message = "the request body must be JSON (Content-Type: application/json)"
            await JSONResponse({"error": message}, status_code=415)(scope, receive, send)
            return
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding != b"identity":
            shown = encoding.decode("latin-1")[:40]
            message = (
                f"the request body must not be encoded (Content-Encoding: {shown}); send plain JSON"
            )
            await JSONResponse({"error": message}, status_code=415)(scope, receive, send)
            return
        limit = MAX_BODY_BYTES.get(scope["path"], DEFAULT_MAX_BODY_BYTES)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                client = scope.get("client") or ("?", "?")
                logger.info(
                    "client %s:%s went away after %d bytes of its POST %s body; nothing done",
                    *client[:2],
                    size,
                    scope["path"],
                )
                await client_left("the client went away before its body arrived")(
                    scope, receive, send
                )
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await _too_large(limit)(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        delivered = False

        async def receive_body():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, receive_body, send)


async def client_went_away(request: Request) -> bool:
    """Whether the client of ``request`` (whose body was read) has gone away, without waiting:
    the server's next message is taken only if it is there already, which after the body is
    only a disconnect. Starlette's ``Request.is_disconnected`` does the same with a cancelled
    anyio scope, at about ten times the cost, once per ``/predict`` request."""
    receiving = request.receive()
    try:
        receiving.send(None)  # runs the server's receive() until it would wait
    except StopIteration as received:
        return received.value.get("type") == "http.disconnect"
    receiving.close()  # it would wait: nothing has arrived, so the client is still there
    return False


def client_left(why: str) -> JSONResponse:
    """The answer to a request whose client went away (nobody reads it)."""
    return JSONResponse({"error": why}, status_code=CLIENT_CLOSED_REQUEST)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": f"the request body is larger than {limit} bytes, the limit of this route"},
        status_code=413,
        headers={"Connection": "close"},  # the server stops reading the rest of the body
    )
