"""Finding a domain, account or user the caller may administer, or answering 404.

Another tenant's domain, account or user answers exactly as one that does not exist: the
answer leaves no trace of whether the id is taken (the same rule as every resource route).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from api.auth import Caller
from api.errors import ApiError, forbidden, not_found
from api.services import CloudServices
from domain.domain_tree import ROOT_DOMAIN_ID, Domain, DomainState
from domain.errors import ErrorCode

TABLE = "inventory"


def visible_row(
    services: CloudServices, caller: Caller, kind: str, row_id: UUID, loc: tuple[str, ...]
) -> dict[str, Any]:
    row = services.reads.get(TABLE, row_id)
    if row is None or row["kind"] != kind or not _visible(caller, row) or _gone(row):
        raise not_found(f"{kind} {row_id}", loc)
    return row


def _gone(row: dict[str, Any]) -> bool:
    """A deleted domain answers as one that never was."""
    return row["kind"] == "domain" and row["data"].get("state") != DomainState.ACTIVE.value


def _visible(caller: Caller, row: dict[str, Any]) -> bool:
    data = row["data"]
    if row["kind"] == "domain":
        if caller.is_admin or caller.is_domain_admin:
            return caller.may_administer_domain(data.get("ancestry", []))
        return row["id"] == caller.domain_id
    if row["kind"] == "account":
        return caller.may_see(row["id"])
    return caller.may_see(data.get("account_id"))


def administered_domain(
    services: CloudServices, caller: Caller, domain_id: UUID | None, field: str
) -> Domain:
    """The domain (from the event store, so one made a moment ago is found) where the caller
    may create things; its own when none is named."""
    wanted = domain_id or caller.domain_id or ROOT_DOMAIN_ID
    domain = services.cloud.find(Domain, wanted)
    if (
        domain is None
        or domain.state is not DomainState.ACTIVE
        or not caller.may_administer_domain(domain.ancestry)
    ):
        raise ApiError(
            404,
            f"domain {wanted} not found",
            code=ErrorCode.PARAM_ERROR,
            loc=("body", field),
            kind="not_found",
        )
    return domain


def refuse_own_account(caller: Caller, account_id: UUID, action: str) -> None:
    """Nobody disables (or raises the limits of) the account they act from: an admin would
    lock itself out, a domain admin would lift its own caps."""
    if account_id == caller.account_id and not (caller.is_admin and action == "limit"):
        raise forbidden(f"you cannot {action} your own account")


def wait_for_inventory(services: CloudServices) -> None:
    """Read-your-writes for the tenancy routes: a key answered in a 201 works at once."""
    services.reads.wait_until_current(TABLE, services.consistency_timeout)
