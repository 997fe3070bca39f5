"""Errors as the API answers them: a status, the field, the reason, the CloudStack code.

Every refusal has the shape FastAPI gives validation errors (`detail` is a list of
`{loc, msg, type}`), plus `errorcode`, so a client reads a bad offering id the same way it reads
a malformed one: a request the OpenAPI document calls malformed is 430, one that is well formed
but names something that does not exist or cannot be done is 431 (or the domain's own code).
Unknown routes, wrong methods and unreadable bodies answer in the same shape.

Nothing unforeseen leaks a stack trace: it is logged and answered as 500 with code 530 by a
middleware (not an exception handler, after which Starlette re-raises and the server drops the
keep-alive connection), so the connection stays usable.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.cursors import UNKNOWN_CURSOR
from domain.errors import (
    DomainError,
    ErrorCode,
    IllegalStateTransition,
    InsufficientCapacity,
    NotFound,
    ResourceInUse,
    ResourceUnavailable,
    UnsupportedAction,
)
from domain.resource_limits import ResourceLimitExceeded
from projections.store import InvalidCursor

log = logging.getLogger("stratus.api")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: ErrorCode,
        loc: tuple[str, ...] = (),
        kind: str = "error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.loc = loc
        self.kind = kind


def not_found(what: str, loc: tuple[str, ...] = ()) -> ApiError:
    return ApiError(404, f"{what} not found", code=ErrorCode.PARAM_ERROR, loc=loc, kind="not_found")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message, code=ErrorCode.ACCOUNT_ERROR, kind="forbidden")


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description='where: ["body", "name"], ["query", "page"], ...')
    msg: str = Field(description="why, in words")
    type: str = Field(description="a stable name for the kind of error")


class ErrorBody(BaseModel):
    """Every refusal and failure the API answers."""

    detail: list[ErrorDetail]
    errorcode: int = Field(
        description="CloudStack's error code: 401, 405, 430 malformed, 431 parameter error, "
        "432 unsupported, 530 internal, 531 account, 532 resource limit, 533 capacity, "
        "534 unavailable, 536 in use"
    )


#: Validation errors about values the document calls well formed (a cursor the API never
#: handed out): a parameter error (431), not a malformed request (430).
WELL_FORMED_REFUSALS = frozenset({UNKNOWN_CURSOR})
#: A location part or message echoed from a request is cut to this many characters.
MAX_ECHO = 200
_SURROGATE = re.compile("[\ud800-\udfff]")


def _echo(part: Any) -> str | int:
    """A part of a request echoed back: an int as is, text as UTF-8 can carry it, bounded."""
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    text = _SURROGATE.sub("\ufffd", str(part))
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def _detail(loc: tuple[Any, ...] | list[Any], message: str, kind: str) -> dict[str, Any]:
    return {"loc": [_echo(part) for part in loc], "msg": str(_echo(message)), "type": kind}


def body(status: int, message: str, code: int, loc: tuple[str, ...], kind: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"detail": [_detail(loc, message, kind)], "errorcode": code}
    )


def error_response(error: ApiError) -> JSONResponse:
    return body(error.status, error.message, int(error.code), error.loc, error.kind)


def status_of(error: DomainError) -> int:
    if isinstance(error, ResourceLimitExceeded):
        return 409
    if error.field is not None:
        return 422
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, IllegalStateTransition | ResourceInUse):
        return 409
    if isinstance(error, UnsupportedAction):
        return 400
    if isinstance(error, InsufficientCapacity | ResourceUnavailable):
        return 503
    return 400


def _place_of(error: DomainError) -> str:
    """Where the field an error names lives: a limit is named under `limits`, not `body`."""
    return "limits" if isinstance(error, ResourceLimitExceeded) else "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return body(error.status, error.message, int(error.code), error.loc, error.kind)

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, error: DomainError) -> JSONResponse:
        loc = (_place_of(error), error.field) if error.field else ()
        return body(status_of(error), error.message, int(error.code), loc, error.kind)

    @app.exception_handler(InvalidCursor)
    async def invalid_cursor(_: Request, error: InvalidCursor) -> JSONResponse:
        return body(
            422, str(error), int(ErrorCode.MALFORMED_PARAMETER), ("query", "cursor"), "value_error"
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        detail = [
            _detail(tuple(e.get("loc", ())), str(e.get("msg", "")), str(e.get("type", "")))
            for e in errors
        ]
        malformed = any(e.get("type") not in WELL_FORMED_REFUSALS for e in errors)
        code = ErrorCode.MALFORMED_PARAMETER if malformed else ErrorCode.PARAM_ERROR
        return JSONResponse(status_code=422, content={"detail": detail, "errorcode": int(code)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _http_error(request, error)


def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own refusals, in the API's shape."""
    if error.status_code == 404:
        return body(
            404, f"no route {request.url.path}", int(ErrorCode.PARAM_ERROR), (), "not_found"
        )
    if error.status_code == 405:
        allowed = allowed_methods(request.app, request.scope)
        response = body(
            405,
            f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
            int(ErrorCode.METHOD_NOT_ALLOWED),
            (),
            "method_not_allowed",
        )
        response.headers["Allow"] = ", ".join(allowed)
        return response
    if error.status_code == 400 and isinstance(error.__cause__, RecursionError | ValueError):
        # FastAPI's "error parsing the body": JSON nested too deep, or a number too long.
        return body(
            422,
            "the body is not JSON this API can read (nested too deeply, or a number too long)",
            int(ErrorCode.MALFORMED_PARAMETER),
            ("body",),
            "json_invalid",
        )
    response = body(
        error.status_code,
        str(error.detail),
        int(ErrorCode.MALFORMED_PARAMETER),
        (),
        "http_error",
    )
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    return response


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method some route of this path takes: Starlette's own 405 names only the first
    route's, though GET and POST of one path are two routes."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        route_methods = route.methods
        if route_methods and route.matches(scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    return sorted(methods)


class UnforeseenErrors:
    """The last net: an exception nothing else handled is logged and answered as 500/530
    without a stack trace, and the connection stays usable. One raised after the response
    started cannot be answered: it goes on to the server, which closes the connection (the
    client sees a cut response, never a wrong one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = body(
                500,
                "internal error; it has been logged",
                int(ErrorCode.INTERNAL_ERROR),
                (),
                "internal",
            )
            await response(scope, receive, send)
