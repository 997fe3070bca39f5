"""What the hypervisor worker is told about a host or a pool: names and addresses, read from
the aggregates, never a credential (those stay in the worker's configuration)."""

from __future__ import annotations

from uuid import UUID

from activities.drivers.hypervisor import HostRef, StoragePoolRef
from domain.cloud import Cloud
from domain.host import Host
from domain.storage import PrimaryStorage


def host_ref(cloud: Cloud, host_id: UUID) -> HostRef:
    host = cloud.load(Host, host_id)
    return HostRef(
        host_id=str(host.id),
        name=host.name,
        address=host.address,
        cluster_id=str(host.cluster_id),
        hypervisor=host.hypervisor,
    )


def pool_ref(cloud: Cloud, pool_id: UUID) -> StoragePoolRef:
    pool = cloud.load(PrimaryStorage, pool_id)
    return StoragePoolRef(
        pool_id=str(pool.id), name=pool.name, path=pool.path, scope=pool.scope.value
    )
