"""Request admission: who asks, and how much they send, settled before the body is read.

An ASGI middleware in front of FastAPI. FastAPI reads a request's body before its dependencies
run, so an unauthenticated client could make the API buffer any amount (three 300 MB POSTs once
took it from 149 MB to 1.7 GB). Here, in order:

1. the API key is checked (401 in the API's error format otherwise; documentation and
   /healthz are open), and the caller's rate (429 with Retry-After past it);
2. a declared `Content-Length` over the limit is refused with 413 at once;
3. a query parameter holding a character no text field takes is refused with 422 naming it
   (the typed parameters say so too; this also covers every string parameter of every route);
4. the body is read, counting bytes as they stream (chunked bodies have no length to check
   first), and refused with 413 the moment it passes the limit; a body within the limit is
   handed to FastAPI as received.

An answer given before the body was read carries `Connection: close`: the unread bytes are
still on their way, and the server closes the connection rather than read them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import CALLER_SCOPE_KEY, identify, key_of
from api.errors import ApiError, error_response
from api.rate_limit import RateLimited, RateLimiter, caller_key, check, rate_limited_response
from api.services import CloudServices
from domain.errors import ErrorCode
from domain.text import forbidden_character

#: Paths anyone may read: the API's documentation and the health probes.
OPEN_PATHS = frozenset(
    {"/healthz", "/livez", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
#: Paths that authenticate by a protocol of their own: CloudStack's signed requests, whose
#: signature covers form parameters in the body (api/cloudstack/endpoint.py).
SIGNED_PATHS = frozenset({"/client/api"})


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes",
            code=ErrorCode.MALFORMED_PARAMETER,
            loc=("body",),
            kind="body_too_large",
        )


class RequestAdmission:
    def __init__(
        self,
        app: ASGIApp,
        services: CloudServices,
        max_body_bytes: int,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.services = services
        self.max_body_bytes = max_body_bytes
        self.rate_limiter = rate_limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        has_body = _has_body(headers)
        try:
            if scope["path"] not in OPEN_PATHS | SIGNED_PATHS:
                caller = await run_in_threadpool(identify, self.services, key_of(headers))
                scope[CALLER_SCOPE_KEY] = caller
                check(self.rate_limiter, caller_key(caller))
            declared = _content_length(headers)
            if declared is not None and declared > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            if scope["path"] not in SIGNED_PATHS:
                _check_query(scope.get("query_string", b""))
        except ApiError as refusal:
            await _refuse(refusal, scope, send, close=has_body)
            return
        try:
            body = await self._read_body(receive)
        except BodyTooLarge as refusal:
            await _refuse(refusal, scope, send, close=True)
            return
        except _Disconnected:
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _Disconnected(Exception):
    """The client went away while sending its body: nobody to answer."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then whatever the server says next (a disconnect)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _has_body(headers: Headers) -> bool:
    return (_content_length(headers) or 0) > 0 or "transfer-encoding" in headers


def _check_query(query_string: bytes) -> None:
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        for part, what in ((name, "its name"), (value, "its value")):
            reason = forbidden_character(part)
            if reason is not None:
                raise ApiError(
                    422,
                    f"{what} {reason}",
                    code=ErrorCode.MALFORMED_PARAMETER,
                    loc=("query", name),
                    kind="value_error",
                )


async def _refuse(refusal: ApiError, scope: Scope, send: Send, *, close: bool) -> None:
    if isinstance(refusal, RateLimited):
        response = rate_limited_response(refusal)
    else:
        response = error_response(refusal)
    if close:
        response.headers["Connection"] = "close"
    await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
