"""Errors as the API answers them: a status, the field, the reason, the CloudStack code.

Every refusal has the shape FastAPI gives validation errors (`detail` is a list of
`{loc, msg, type}`), plus `errorcode`, so a client reads a bad offering id the same way it reads
a malformed one. Nothing unforeseen leaks a stack trace: it is logged and answered as 500/530.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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


def body(status: int, message: str, code: int, loc: tuple[str, ...], kind: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"detail": [{"loc": list(loc), "msg": message, "type": kind}], "errorcode": code},
    )


def status_of(error: DomainError) -> int:
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return body(error.status, error.message, int(error.code), error.loc, error.kind)

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, error: DomainError) -> JSONResponse:
        loc = ("body", error.field) if error.field else ()
        return body(status_of(error), error.message, int(error.code), loc, error.kind)

    @app.exception_handler(InvalidCursor)
    async def invalid_cursor(_: Request, error: InvalidCursor) -> JSONResponse:
        return body(
            422, str(error), int(ErrorCode.MALFORMED_PARAMETER), ("query", "cursor"), "value_error"
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        detail: list[dict[str, Any]] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in error.errors()
        ]
        return JSONResponse(
            status_code=422,
            content=jsonable_encoder(
                {"detail": detail, "errorcode": int(ErrorCode.MALFORMED_PARAMETER)}
            ),
        )

    @app.exception_handler(Exception)
    async def unforeseen(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return body(
            500, "internal error; it has been logged", int(ErrorCode.INTERNAL_ERROR), (), "internal"
        )
