"""Resource limits per account and per domain, checked when a job is submitted (error 532).

CloudStack's resource types, with their numeric ids (its API's `resourcetype`). A limit of -1
is unlimited, CloudStack's default. An account's usage counts against its own limits and
against those of every domain above it, so a domain's limit caps its whole subtree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from domain.catalog import GIB
from domain.errors import DomainError, ErrorCode, InvalidParameter

UNLIMITED = -1
#: The largest limit that can be set: more than any cloud's count of anything (MiB of memory
#: included), and a bigint in every read model.
MAX_LIMIT = 2**53


class ResourceType(StrEnum):
    USER_VM = "user_vm"
    PUBLIC_IP = "public_ip"
    VOLUME = "volume"
    SNAPSHOT = "snapshot"
    NETWORK = "network"
    CPU = "cpu"
    MEMORY = "memory"
    PRIMARY_STORAGE = "primary_storage"

    @property
    def cloudstack_id(self) -> int:
        return CLOUDSTACK_IDS[self]

    @property
    def unit(self) -> str:
        return UNITS.get(self, "")


CLOUDSTACK_IDS: dict[ResourceType, int] = {
    ResourceType.USER_VM: 0,
    ResourceType.PUBLIC_IP: 1,
    ResourceType.VOLUME: 2,
    ResourceType.SNAPSHOT: 3,
    ResourceType.NETWORK: 6,
    ResourceType.CPU: 8,
    ResourceType.MEMORY: 9,
    ResourceType.PRIMARY_STORAGE: 10,
}
UNITS = {ResourceType.MEMORY: " MiB", ResourceType.PRIMARY_STORAGE: " GiB"}


def gib_of(size_bytes: int) -> int:
    """Primary storage limits count whole GiB, rounded up as CloudStack does."""
    return -(-size_bytes // GIB)


class ResourceLimitExceeded(DomainError):
    code = ErrorCode.RESOURCE_LIMIT


@dataclass(frozen=True)
class LimitHolder:
    """An account or a domain: its limits, and what its whole scope uses now."""

    label: str
    limits: Mapping[str, int]
    usage: Mapping[ResourceType, int] = field(default_factory=dict)


def check_within_limits(
    requested: Mapping[ResourceType, int], holders: Sequence[LimitHolder]
) -> None:
    """Refuse (532, the limit and holder named) a request that would take any holder past
    one of its limits. A request that gives back (a negative amount) is never refused."""
    for holder in holders:
        for resource, amount in requested.items():
            maximum = holder.limits.get(resource.value, UNLIMITED)
            if amount <= 0 or maximum == UNLIMITED:
                continue
            used = holder.usage.get(resource, 0)
            if used + amount > maximum:
                raise ResourceLimitExceeded(
                    f"the {resource.value} limit of {holder.label} is {maximum}{resource.unit}: "
                    f"{used}{resource.unit} in use, {amount}{resource.unit} more requested",
                    field=resource.value,
                )


def check_limit_value(resource: str, maximum: int) -> ResourceType:
    try:
        kind = ResourceType(resource)
    except ValueError:
        names = ", ".join(r.value for r in ResourceType)
        raise InvalidParameter(
            f"unknown resource type {resource!r}; one of {names}", field="resource"
        ) from None
    if maximum < UNLIMITED or maximum > MAX_LIMIT:
        raise InvalidParameter(f"a limit is -1 (unlimited) or 0..{MAX_LIMIT}", field="max")
    return kind
