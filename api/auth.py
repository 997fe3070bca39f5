"""API keys: `X-API-Key: <key>` or `Authorization: Bearer <key>`.

The key is looked up by its SHA-256 digest in the accounts read model; the key itself is never
stored. An unknown or missing key is 401; an admin-only route asked by a user is 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError, forbidden
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


def authenticate(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_header)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    key = api_key or (credentials.credentials if credentials else None)
    if not key:
        raise ApiError(
            401,
            "an API key is required (X-API-Key header or Bearer token)",
            code=ErrorCode.UNAUTHORIZED,
            kind="unauthorized",
        )
    services = request.app.state.services
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


def require_admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    if not caller.is_admin:
        raise forbidden("this operation is for administrators")
    return caller


CurrentCaller = Annotated[Caller, Depends(authenticate)]
AdminCaller = Annotated[Caller, Depends(require_admin)]
