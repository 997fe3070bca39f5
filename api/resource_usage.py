"""Resource limits at submission (error 532), and the limits an account or domain shows.

Limits and usage are read from the read models, in one round trip for the limits (a limit set
over the API is answered only once the read model has it). Counting costs queries, so it is
done only for holders that limit one of the requested resource types: a cloud without limits
pays one indexed read per submission.

Two submissions of one account racing within the read models' lag can both pass a limit that
only one of them fits; each later one sees both. CloudStack checks at the same point, under a
lock held by one management server; Stratus has no such lock across API replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from api.services import CloudServices
from api.tenancy_models import LimitPublic
from domain.account import AccountType
from domain.deployment import ValidatedDeployment
from domain.resource_limits import (
    UNLIMITED,
    LimitHolder,
    ResourceType,
    check_within_limits,
    gib_of,
)
from projections.resource_counts import accounts_under, limit_holders, resource_counts


def check_account_limits(
    services: CloudServices, account_id: UUID, requested: Mapping[ResourceType, int]
) -> None:
    """Refuse with 532 a job that would take the account, or a domain above it, past a limit."""
    wanted = {kind: amount for kind, amount in requested.items() if amount > 0}
    if not wanted:
        return
    with services.reads.pool.connection() as conn:
        holders: list[LimitHolder] = []
        for row in limit_holders(conn, account_id):
            data = row["data"]
            if data.get("account_type") == AccountType.ADMIN.value:
                return
            limits: dict[str, int] = data.get("limits", {})
            if not _limits_any(limits, wanted):
                continue
            if row["kind"] == "account":
                label, scope = f"account {row['name']}", [account_id]
            else:
                label, scope = f"domain {data['path']}", accounts_under(conn, row["id"])
            holders.append(LimitHolder(label, limits, resource_counts(conn, scope)))
    check_within_limits(wanted, holders)


def deployment_resources(validated: ValidatedDeployment) -> dict[ResourceType, int]:
    """A deployment takes a VM, its vCPUs and memory, and a root volume on primary storage."""
    return {
        ResourceType.USER_VM: 1,
        ResourceType.CPU: validated.cpu_count,
        ResourceType.MEMORY: validated.memory_mib,
        ResourceType.VOLUME: 1,
        ResourceType.PRIMARY_STORAGE: gib_of(validated.root_disk_bytes),
    }


def volume_resources(size_bytes: int) -> dict[ResourceType, int]:
    return {ResourceType.VOLUME: 1, ResourceType.PRIMARY_STORAGE: gib_of(size_bytes)}


def _limits_any(limits: Mapping[str, int], wanted: Mapping[ResourceType, int]) -> bool:
    return any(limits.get(kind.value, UNLIMITED) != UNLIMITED for kind in wanted)


def limits_of(services: CloudServices, row: dict[str, Any]) -> list[LimitPublic]:
    """Every resource type's limit on an account or domain row, with what its scope uses."""
    limits: dict[str, int] = row["data"].get("limits", {})
    with services.reads.pool.connection() as conn:
        scope = [row["id"]] if row["kind"] == "account" else accounts_under(conn, row["id"])
        used = resource_counts(conn, scope)
    return [
        LimitPublic(
            resource_type=kind,
            resource_type_id=kind.cloudstack_id,
            max=limits.get(kind.value, UNLIMITED),
            used=used[kind],
        )
        for kind in ResourceType
    ]
