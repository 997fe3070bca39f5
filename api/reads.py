"""Read-side helpers shared by the routers: read-your-writes and account scoping."""

from __future__ import annotations

from uuid import UUID

from fastapi import Response

from api.auth import Caller
from api.errors import forbidden
from api.services import CloudServices

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
