"""API keys: `X-API-Key: <key>` or `Authorization: Bearer <key>`.

The key is looked up by its SHA-256 digest in the accounts read model; the key itself is never
stored. An unknown or missing key is 401, answered by the request admission before the body is
read (api/admission.py); an admin-only route asked by a user is 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from api.errors import ApiError, forbidden
from api.services import CloudServices
from domain.account import AccountState, AccountType, api_key_digest
from domain.errors import ErrorCode

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    account_id: UUID
    name: str
    is_admin: bool

    def may_see(self, account_id: Any) -> bool:
        return self.is_admin or str(account_id) == str(self.account_id)


#: Where the request admission leaves the caller it identified (before the body was read).
CALLER_SCOPE_KEY = "stratus.caller"


def key_of(headers: Headers) -> str | None:
    """The API key of a request: `X-API-Key`, else a Bearer token."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def identify(services: CloudServices, key: str | None) -> Caller:
    """The enabled account an API key belongs to; 401 otherwise."""
    if not key:
        raise ApiError(
            401,
            "an API key is required (X-API-Key header or Bearer token)",
            code=ErrorCode.UNAUTHORIZED,
            kind="unauthorized",
        )
    row = services.reads.find_one(
        "inventory", {"kind": "account", "lookup_key": api_key_digest(key)}
    )
    if row is None:
        raise ApiError(401, "unknown API key", code=ErrorCode.UNAUTHORIZED, kind="unauthorized")
    data = row["data"]
    if data.get("state") != AccountState.ENABLED.value:
        raise ApiError(
            401, "account is disabled", code=ErrorCode.ACCOUNT_ERROR, kind="unauthorized"
        )
    return Caller(
        account_id=row["id"],
        name=row["name"],
        is_admin=data.get("account_type") == AccountType.ADMIN.value,
    )


def authenticate(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_header)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller the request admission identified before the body was read (the security
    schemes above document the headers in OpenAPI)."""
    caller = request.scope.get(CALLER_SCOPE_KEY)
    if isinstance(caller, Caller):
        return caller
    key = api_key or (credentials.credentials if credentials else None)
    return identify(request.app.state.services, key)


def require_admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    if not caller.is_admin:
        raise forbidden("this operation is for administrators")
    return caller


CurrentCaller = Annotated[Caller, Depends(authenticate)]
AdminCaller = Annotated[Caller, Depends(require_admin)]
