"""`/client/api`: the CloudStack-compatible endpoint, for CloudStack's clients used unchanged.

A request names its `command` and signs its parameters (query and form together) with the
user's secret key, as CloudStack's clients do (api/cloudstack/signing.py); the answer is
CloudStack's JSON (api/cloudstack/responses.py) with the HTTP status equal to the error code.
The caller is the same `Caller` `/v1` knows, the same rate limit applies per key, and each
command calls the `/v1` function that does the same thing.

The request admission (api/admission.py) lets this path through without an `X-API-Key`: the
signature is the credential here. The body limit still applies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, identify_by_digest

# The command modules register their commands when imported.
from api.cloudstack import alert_commands, ha_commands, job_commands, listings  # noqa: F401
from api.cloudstack.commands import Context, find, not_offered
from api.cloudstack.params import CloudStackError, Params
from api.cloudstack.responses import cloudstack_json, error_response
from api.cloudstack.signing import SignatureRefused, api_key_of, verify
from api.errors import ApiError
from api.rate_limit import RateLimited, caller_key, check
from api.services import CloudServices
from domain.account import api_key_digest
from domain.errors import DomainError, ErrorCode
from domain.text import forbidden_character
from projections.store import InvalidCursor

PATH = "/client/api"
UNVERIFIED = "unable to verify user credentials and/or request signature"
log = logging.getLogger("stratus.api.cloudstack")

router = APIRouter()


@router.api_route(PATH, methods=["GET", "POST"], include_in_schema=False)
async def client_api(request: Request) -> Response:
    command_name: str | None = None
    try:
        given = await parameters_of(request)
        command_name = _named(given, "command")
        services: CloudServices = request.app.state.services
        caller = await run_in_threadpool(signed_caller, services, given)
        check(getattr(request.app.state, "rate_limiter", None), caller_key(caller))
        if not command_name:
            raise CloudStackError(int(ErrorCode.PARAM_ERROR), "the command parameter is missing")
        if (_named(given, "response") or "json").lower() != "json":
            raise CloudStackError(
                int(ErrorCode.UNSUPPORTED_ACTION), "only response=json is offered"
            )
        found = find(command_name)
        if found is None:
            why = not_offered(command_name) or "it does not exist or is not available to you"
            shown = command_name[:80] if forbidden_character(command_name) is None else "?"
            raise CloudStackError(
                int(ErrorCode.UNSUPPORTED_ACTION),
                f"The given command {shown} is not offered: {why}",
            )
        context = Context(services, caller, request, Params(found.name, given))
        return cloudstack_json(await found.handler(context))
    except Exception as error:  # every refusal answers in CloudStack's shape, never a trace
        return refusal_of(command_name if command_name and find(command_name) else None, error)


async def parameters_of(request: Request) -> dict[str, str]:
    """Query and form parameters as one mapping. A name given twice is refused: the command
    must run on exactly the values whose signature was checked."""
    pairs = list(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "").lower()
    if request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
        try:
            text = (await request.body()).decode()
        except UnicodeDecodeError:
            raise CloudStackError(
                int(ErrorCode.MALFORMED_PARAMETER), "the form body is not UTF-8"
            ) from None
        pairs += parse_qsl(text, keep_blank_values=True)
    given: dict[str, str] = {}
    for name, value in pairs:
        if name in given:
            raise CloudStackError(
                int(ErrorCode.MALFORMED_PARAMETER), f"parameter {name[:40]!r} is given twice"
            )
        given[name] = value
    return given


def signed_caller(services: CloudServices, given: Mapping[str, str]) -> Caller:
    """The user whose secret signed the request (checked before anything else is told)."""
    try:
        api_key = api_key_of(given)
        digest = api_key_digest(api_key)
        secret = services.secrets.secret_of(digest)
        if secret is None:
            raise CloudStackError(int(ErrorCode.UNAUTHORIZED), UNVERIFIED)
        verify(given, secret, datetime.now(UTC))
    except SignatureRefused as refused:
        log.info("CloudStack request refused: %s", refused.kind)
        raise CloudStackError(
            int(ErrorCode.UNAUTHORIZED), f"{UNVERIFIED}: {refused.reason}"
        ) from None
    try:
        return identify_by_digest(services, digest)
    except ApiError as refused:
        raise CloudStackError(int(refused.code), refused.message) from None


def refusal_of(command: str | None, error: Exception) -> Response:
    headers: dict[str, str] = {}
    if isinstance(error, CloudStackError):
        code, text = error.errorcode, error.text
    elif isinstance(error, RateLimited):
        code, text = int(ErrorCode.API_LIMIT_EXCEEDED), error.message
        headers = dict(error.headers)
    elif isinstance(error, ApiError | DomainError):
        code, text = int(error.code), error.message
    elif isinstance(error, ValidationError | InvalidCursor):
        code, text = int(ErrorCode.PARAM_ERROR), str(error).splitlines()[0]
    else:
        log.exception("CloudStack command %s failed unforeseen", command)
        code, text = int(ErrorCode.INTERNAL_ERROR), "internal error; it has been logged"
    status, body = error_response(command, code, text)
    response = cloudstack_json(body, status)
    response.headers.update(headers)
    return response


def _named(given: Mapping[str, Any], name: str) -> str | None:
    lowered = name.lower()
    return next((str(v) for k, v in given.items() if k.lower() == lowered), None)
