"""API keys: `X-API-Key: <key>` or `Authorization: Bearer <key>`, and who they make the caller.

The key is looked up by its SHA-256 digest in the inventory read model (users, and accounts
made before users existed); the key itself is never stored. An unknown or missing key, a
disabled user or a disabled account is 401, answered by the request admission before the body
is read (api/admission.py); an admin-only route asked by a user is 403.

Roles are CloudStack's: the root admin sees and does everything; a domain admin sees and acts
for the accounts of its domain's subtree (known at identification, so `may_see` is a set
lookup) but not the infrastructure; a user, its own account only.
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
from domain.domain_tree import ROOT_DOMAIN_ID, ROOT_DOMAIN_NAME
from domain.errors import ErrorCode
from domain.user import UserState
from projections.resource_counts import accounts_under

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    """Who asks: the user, its account and role, and the accounts it may act for."""

    account_id: UUID
    name: str
    role: AccountType = AccountType.USER
    domain_id: UUID | None = None
    domain_path: str = ROOT_DOMAIN_NAME
    user_id: UUID | None = None
    username: str = ""
    #: For a domain admin: the accounts of its domain's subtree, as strings.
    subtree_accounts: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        """The root admin: the whole cloud, infrastructure included."""
        return self.role is AccountType.ADMIN

    @property
    def is_domain_admin(self) -> bool:
        return self.role is AccountType.DOMAIN_ADMIN

    def may_see(self, account_id: Any) -> bool:
        if self.is_admin:
            return True
        if self.is_domain_admin:
            return str(account_id) in self.subtree_accounts
        return str(account_id) == str(self.account_id)

    def may_administer_domain(self, ancestry: list[str]) -> bool:
        """A domain (by its ancestry) is the caller's to administer."""
        if self.is_admin:
            return True
        return self.is_domain_admin and str(self.domain_id) in ancestry

    def visible_accounts(self) -> list[UUID] | None:
        """The accounts whose resources the caller sees; None for all of them."""
        if self.is_admin:
            return None
        if self.is_domain_admin:
            return [UUID(a) for a in sorted(self.subtree_accounts)]
        return [self.account_id]


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


def unauthorized(message: str, code: ErrorCode = ErrorCode.UNAUTHORIZED) -> ApiError:
    return ApiError(401, message, code=code, kind="unauthorized")


def identify(services: CloudServices, key: str | None) -> Caller:
    """The enabled user (of an enabled account) an API key belongs to; 401 otherwise."""
    if not key:
        raise unauthorized("an API key is required (X-API-Key header or Bearer token)")
    return identify_by_digest(services, api_key_digest(key))


def identify_by_digest(services: CloudServices, digest: str) -> Caller:
    row = services.reads.find_one("inventory", {"lookup_key": digest})
    if row is None or row["kind"] not in ("user", "account"):
        raise unauthorized("unknown API key")
    user: dict[str, Any] | None = None
    if row["kind"] == "user":
        user = row
        if user["data"].get("state") != UserState.ENABLED.value:
            raise unauthorized("user is disabled", ErrorCode.ACCOUNT_ERROR)
        account = services.reads.get("inventory", UUID(str(user["data"]["account_id"])))
        if account is None:
            raise unauthorized("unknown API key")
    else:
        account = row
    data = account["data"]
    if data.get("state") != AccountState.ENABLED.value:
        raise unauthorized("account is disabled", ErrorCode.ACCOUNT_ERROR)
    role = AccountType(data.get("account_type", AccountType.USER.value))
    domain_id = UUID(str(data["domain_id"])) if data.get("domain_id") else ROOT_DOMAIN_ID
    subtree: frozenset[str] = frozenset()
    if role is AccountType.DOMAIN_ADMIN:
        with services.reads.pool.connection() as conn:
            subtree = frozenset(str(a) for a in accounts_under(conn, domain_id))
    return Caller(
        account_id=account["id"],
        name=account["name"],
        role=role,
        domain_id=domain_id,
        domain_path=data.get("domain") or ROOT_DOMAIN_NAME,
        user_id=user["id"] if user else None,
        username=user["name"] if user else account["name"],
        subtree_accounts=subtree,
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
    """The root admin only: infrastructure, simulator control, projections."""
    if not caller.is_admin:
        raise forbidden("this operation is for administrators")
    return caller


def require_any_admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """A root admin or a domain admin: tenancy, within the caller's subtree."""
    if not (caller.is_admin or caller.is_domain_admin):
        raise forbidden("this operation is for administrators")
    return caller


CurrentCaller = Annotated[Caller, Depends(authenticate)]
AdminCaller = Annotated[Caller, Depends(require_admin)]
TenancyAdminCaller = Annotated[Caller, Depends(require_any_admin)]
