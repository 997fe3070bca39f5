"""Read-side helpers shared by the routers: read-your-writes and account scoping."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from fastapi import Response

from api.auth import Caller
from api.errors import forbidden
from api.services import CloudServices
from domain.domain_tree import ROOT_DOMAIN_ID, ROOT_DOMAIN_NAME
from projections.resource_counts import accounts_under

CONSISTENCY_HEADER = "Stratus-Read-Consistent"


def consistent_read(services: CloudServices, table: str, wanted: bool, response: Response) -> None:
    """With `consistent=true`, wait for the read model to include every write made before the
    request; the header says whether it did within the timeout. A projection known to be stuck
    (blocked on an event, or no projector running it) is not waited for: the answer comes at
    once, with the header false, so a stuck read model slows no request."""
    if wanted:
        caught_up = services.reads.wait_until_current(table, services.consistency_timeout)
        response.headers[CONSISTENCY_HEADER] = "true" if caught_up else "false"


def scoped_account(caller: Caller, requested: UUID | None) -> UUID | list[UUID] | None:
    """The account filter of a listing: users see their own account only, a domain admin
    the accounts of its subtree, the root admin all; each may narrow to one it may see."""
    if requested is not None:
        if not caller.may_see(requested):
            raise forbidden("you can only list the resources of accounts you administer")
        return requested
    return caller.visible_accounts()


def account_scope(
    services: CloudServices, caller: Caller, requested: UUID | None, domain_id: UUID | None
) -> UUID | list[UUID] | None:
    """`scoped_account`, narrowed to a domain's subtree when one is asked: what admins filter
    usage and events by. A domain outside what the caller sees narrows to nothing."""
    scope = scoped_account(caller, requested)
    if domain_id is None:
        return scope
    with services.reads.pool.connection() as conn:
        subtree = accounts_under(conn, domain_id)
    if scope is None:
        return subtree
    allowed = {scope} if isinstance(scope, UUID) else set(scope)
    return [account for account in subtree if account in allowed]


def domains_of(
    services: CloudServices, account_ids: Iterable[UUID | str | None]
) -> dict[str, tuple[UUID | None, str]]:
    """Each account's domain (id and path), for rows that carry only the account."""
    wanted = sorted({str(a) for a in account_ids if a})
    if not wanted:
        return {}
    with services.reads.pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, data FROM inventory WHERE kind = 'account' AND id = ANY(%s::uuid[])",
            (wanted,),
        ).fetchall()
    return {
        str(row["id"]): (
            UUID(str(row["data"]["domain_id"])) if row["data"].get("domain_id") else ROOT_DOMAIN_ID,
            row["data"].get("domain") or ROOT_DOMAIN_NAME,
        )
        for row in rows
    }
