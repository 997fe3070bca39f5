"""What the hypervisor worker is told about a host or a pool: names and addresses, read from
the aggregates, never a credential (those stay in the worker's configuration)."""

from __future__ import annotations

from urllib.parse import urlparse
from uuid import UUID

from activities.drivers.hypervisor import HostRef, SecondaryStorageRef, StoragePoolRef
from domain.cloud import Cloud
from domain.host import Host
from domain.storage import PrimaryStorage, SecondaryStorage


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


#: Where a host mounts a secondary storage that is not a local directory (CloudStack mounts
#: its NFS exports under /mnt/SecStorage the same way).
SECONDARY_MOUNT_ROOT = "/var/lib/stratus/secondary"


def secondary_ref(cloud: Cloud, storage_id: UUID) -> SecondaryStorageRef:
    """A `file://` secondary storage is that directory; any other (nfs://...) is reached at
    its mount point under SECONDARY_MOUNT_ROOT, named by its id."""
    storage = cloud.load(SecondaryStorage, storage_id)
    parsed = urlparse(storage.url)
    path = parsed.path if parsed.scheme in ("", "file") else f"{SECONDARY_MOUNT_ROOT}/{storage.id}"
    return SecondaryStorageRef(
        store_id=str(storage.id), name=storage.name, url=storage.url, path=path
    )
