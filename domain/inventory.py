"""Building the cloud's inventory: the admin operations that add zones, pods, clusters, hosts,
storage, offerings, templates, guest networks and accounts.

Each adds the new aggregate and links it into its parent (a host into its cluster, a cluster
into its zone) in one transaction, so the planner never sees a host that its cluster does not
list. Each is idempotent by id: adding the same thing again returns what exists.
"""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from domain.account import Account, api_key_digest
from domain.aggregate import CloudAggregate
from domain.catalog import DiskOffering, HypervisorType, ServiceOffering, Template
from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.domain_tree import ROOT_DOMAIN_ID
from domain.errors import InvalidParameter
from domain.guest_network import GuestNetwork
from domain.host import Host
from domain.storage import PrimaryStorage, SecondaryStorage, StorageScope
from domain.tenancy import open_account
from domain.zone import Pod, Zone

A = TypeVar("A", bound=CloudAggregate)


def _add(cloud: Cloud, cls: type[A], aggregate_id: UUID, link: Any = None, **fields: Any) -> A:
    def decide(d: Decision) -> A:
        existing = d.find(cls, aggregate_id)
        if existing is not None:
            return existing
        created = d.add(cls.create_with_id(aggregate_id, **fields))
        if link is not None:
            link(d, created)
        return created

    return cloud.decide(decide)


def add_zone(cloud: Cloud, zone_id: UUID, name: str, **fields: Any) -> Zone:
    return _add(cloud, Zone, zone_id, name=name, **fields)


def add_pod(cloud: Cloud, pod_id: UUID, zone_id: UUID, name: str, **fields: Any) -> Pod:
    return _add(
        cloud,
        Pod,
        pod_id,
        lambda d, pod: d.get(Zone, zone_id).add_pod(pod.id),
        name=name,
        zone_id=zone_id,
        **fields,
    )


def add_cluster(
    cloud: Cloud, cluster_id: UUID, pod_id: UUID, name: str, hypervisor: str, **fields: Any
) -> Cluster:
    try:
        HypervisorType(hypervisor)
    except ValueError:
        raise InvalidParameter(
            f"hypervisor: {hypervisor!r} is not one of {', '.join(HypervisorType)}"
        ) from None
    pod = cloud.load(Pod, pod_id)
    return _add(
        cloud,
        Cluster,
        cluster_id,
        lambda d, c: d.get(Zone, pod.zone_id).add_cluster(c.id),
        name=name,
        zone_id=pod.zone_id,
        pod_id=pod_id,
        hypervisor=hypervisor,
        **fields,
    )


def add_host(cloud: Cloud, host_id: UUID, cluster_id: UUID, name: str, **fields: Any) -> Host:
    cluster = cloud.load(Cluster, cluster_id)
    return _add(
        cloud,
        Host,
        host_id,
        lambda d, h: d.get(Cluster, cluster_id).add_host(h.id),
        name=name,
        zone_id=cluster.zone_id,
        pod_id=cluster.pod_id,
        cluster_id=cluster_id,
        hypervisor=cluster.hypervisor,
        **fields,
    )


def add_cluster_storage(
    cloud: Cloud, pool_id: UUID, cluster_id: UUID, name: str, **fields: Any
) -> PrimaryStorage:
    cluster = cloud.load(Cluster, cluster_id)
    return _add(
        cloud,
        PrimaryStorage,
        pool_id,
        lambda d, p: d.get(Cluster, cluster_id).add_storage_pool(p.id),
        name=name,
        zone_id=cluster.zone_id,
        scope=StorageScope.CLUSTER.value,
        pod_id=cluster.pod_id,
        cluster_id=cluster_id,
        **fields,
    )


def add_zone_storage(
    cloud: Cloud, pool_id: UUID, zone_id: UUID, name: str, **fields: Any
) -> PrimaryStorage:
    return _add(
        cloud,
        PrimaryStorage,
        pool_id,
        lambda d, p: d.get(Zone, zone_id).add_zone_storage_pool(p.id),
        name=name,
        zone_id=zone_id,
        scope=StorageScope.ZONE.value,
        **fields,
    )


def add_secondary_storage(
    cloud: Cloud, storage_id: UUID, zone_id: UUID, name: str, **fields: Any
) -> SecondaryStorage:
    return _add(
        cloud,
        SecondaryStorage,
        storage_id,
        lambda d, s: d.get(Zone, zone_id).add_secondary_storage(s.id),
        name=name,
        zone_id=zone_id,
        **fields,
    )


def add_guest_network(
    cloud: Cloud, network_id: UUID, zone_id: UUID, name: str, **fields: Any
) -> GuestNetwork:
    return _add(
        cloud,
        GuestNetwork,
        network_id,
        lambda d, n: d.get(Zone, zone_id).add_network(n.id),
        name=name,
        zone_id=zone_id,
        **fields,
    )


def add_service_offering(
    cloud: Cloud, offering_id: UUID, name: str, **fields: Any
) -> ServiceOffering:
    return _add(cloud, ServiceOffering, offering_id, name=name, **fields)


def add_disk_offering(cloud: Cloud, offering_id: UUID, name: str, **fields: Any) -> DiskOffering:
    return _add(cloud, DiskOffering, offering_id, name=name, **fields)


def register_template(
    cloud: Cloud,
    template_id: UUID,
    name: str,
    secondary_storage_id: UUID | None = None,
    **fields: Any,
) -> Template:
    """Register a template; with a secondary storage, its bytes are accounted for there."""

    def link(d: Decision, template: Template) -> None:
        if secondary_storage_id is not None:
            d.get(SecondaryStorage, secondary_storage_id).store(
                template.id, template.size_bytes, f"template/{template.id}/store"
            )

    return _add(cloud, Template, template_id, link, name=name, **fields)


def add_account(
    cloud: Cloud,
    account_id: UUID,
    name: str,
    account_type: str,
    api_key: str,
    *,
    domain_id: UUID = ROOT_DOMAIN_ID,
) -> Account:
    """An account with one user holding `api_key` (the seeded admin, test tenants)."""
    return open_account(
        cloud, account_id, name, account_type, api_key_digest(api_key), domain_id=domain_id
    )
