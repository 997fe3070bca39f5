"""What accounts hold now, counted in the read models: the usage side of resource limits.

A destroyed VM (recoverable until expunged) no longer counts, as in CloudStack, which gives
its VM, vCPU and memory count back on destroy; a volume counts until it is destroyed, a
snapshot until it is deleted. Public IPs and networks count nothing until those features exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import Connection

from domain.domain_tree import ROOT_DOMAIN_ID
from domain.resource_limits import ResourceType, gib_of
from domain.snapshot import SnapshotState
from domain.virtual_machine import VmState
from domain.volume import VolumeState

_GONE_VMS = [VmState.DESTROYED.value, VmState.EXPUNGING.value, VmState.ERROR.value]
_GONE_VOLUMES = [VolumeState.DESTROY.value, VolumeState.EXPUNGING.value, VolumeState.EXPUNGED.value]
_GONE_SNAPSHOTS = [SnapshotState.DESTROYING.value, SnapshotState.DESTROYED.value]


def resource_counts(conn: Connection[Any], account_ids: Sequence[UUID]) -> dict[ResourceType, int]:
    """The resources the given accounts hold together (one account, or a domain's subtree)."""
    ids = list(account_ids)
    vms = conn.execute(
        "SELECT count(*) AS n, coalesce(sum(cpu_count), 0) AS cpu, "
        "coalesce(sum(memory_mib), 0) AS memory FROM virtual_machines "
        "WHERE account_id = ANY(%s) AND state <> ALL(%s)",
        (ids, _GONE_VMS),
    ).fetchone()
    volumes = conn.execute(
        "SELECT count(*) AS n, coalesce(sum(size_bytes), 0) AS bytes FROM volumes "
        "WHERE account_id = ANY(%s) AND state <> ALL(%s)",
        (ids, _GONE_VOLUMES),
    ).fetchone()
    snapshots = conn.execute(
        "SELECT count(*) AS n FROM snapshots "
        "WHERE account_id = ANY(%s) AND state <> ALL(%s) AND NOT is_removed",
        (ids, _GONE_SNAPSHOTS),
    ).fetchone()
    assert vms is not None and volumes is not None and snapshots is not None
    return {
        ResourceType.USER_VM: int(vms["n"]),
        ResourceType.CPU: int(vms["cpu"]),
        ResourceType.MEMORY: int(vms["memory"]),
        ResourceType.VOLUME: int(volumes["n"]),
        ResourceType.PRIMARY_STORAGE: gib_of(int(volumes["bytes"])),
        ResourceType.SNAPSHOT: int(snapshots["n"]),
        ResourceType.PUBLIC_IP: 0,
        ResourceType.NETWORK: 0,
    }


def accounts_under(conn: Connection[Any], domain_id: UUID) -> list[UUID]:
    """Every account in a domain's subtree (the domain itself included). Accounts made before
    domains existed belong to ROOT."""
    if domain_id == ROOT_DOMAIN_ID:
        every = conn.execute("SELECT id FROM inventory WHERE kind = 'account'").fetchall()
        return [row["id"] for row in every]
    rows = conn.execute(
        "SELECT id FROM inventory WHERE kind = 'account' AND data->'domain_ancestry' ? %s",
        (str(domain_id),),
    ).fetchall()
    return [row["id"] for row in rows]


def limit_holders(conn: Connection[Any], account_id: UUID) -> list[dict[str, Any]]:
    """The account's inventory row and those of every domain above it: who may limit it."""
    return conn.execute(
        "SELECT h.id, h.kind, h.name, h.data FROM inventory a JOIN inventory h "
        "ON h.id = a.id OR (h.kind = 'domain' AND a.data->'domain_ancestry' ? h.id::text) "
        "WHERE a.id = %s AND a.kind = 'account' ORDER BY h.kind",
        (account_id,),
    ).fetchall()
