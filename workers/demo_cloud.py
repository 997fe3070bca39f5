"""The demo cloud `stratus up` seeds once: enough inventory to deploy VMs on the simulator.

One zone, one pod, two clusters of two simulator hosts each, primary storage per cluster, zone
secondary storage, a shared guest network with an IP range, two service offerings, a disk
offering, a template and an admin account. Ids derive from names, so seeding twice changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from domain import inventory
from domain.account import AccountType
from domain.catalog import GIB, HypervisorType
from domain.cloud import Cloud
from domain.ids import named_id

TIB = 1024 * GIB
SIMULATOR = HypervisorType.SIMULATOR.value


@dataclass(frozen=True)
class DemoCloud:
    zone_id: UUID
    pod_id: UUID
    cluster_ids: tuple[UUID, UUID]
    host_ids: tuple[UUID, ...]
    pool_ids: tuple[UUID, UUID]
    secondary_storage_id: UUID
    network_id: UUID
    small_offering_id: UUID
    medium_offering_id: UUID
    disk_offering_id: UUID
    template_id: UUID
    admin_account_id: UUID


def seed_demo_cloud(
    cloud: Cloud,
    admin_api_key: str,
    *,
    prefix: str = "Demo",
    admin_name: str = "admin",
    hosts_per_cluster: int = 2,
    host_cpu_count: int = 16,
    host_memory_mib: int = 65536,
    cpu_overprovisioning: float = 4.0,
    disable_threshold: float = 0.85,
) -> DemoCloud:
    """Seed (or find) a zone named after `prefix`; tests seed one zone each."""
    zone = inventory.add_zone(
        cloud,
        named_id("zone", f"{prefix}-Zone-1"),
        f"{prefix}-Zone-1",
        dns1="10.0.0.53",
        internal_dns1="10.0.0.53",
        description="Stratus demo zone",
    )
    pod = inventory.add_pod(
        cloud,
        named_id("pod", f"{prefix}-Pod-1"),
        zone.id,
        f"{prefix}-Pod-1",
        gateway="10.0.0.1",
        netmask="255.255.255.0",
        start_ip="10.0.0.10",
        end_ip="10.0.0.200",
    )
    cluster_ids: list[UUID] = []
    host_ids: list[UUID] = []
    pool_ids: list[UUID] = []
    for letter in ("A", "B"):
        cluster = inventory.add_cluster(
            cloud,
            named_id("cluster", f"{prefix}-Cluster-{letter}"),
            pod.id,
            f"{prefix}-Cluster-{letter}",
            SIMULATOR,
            cpu_overprovisioning=cpu_overprovisioning,
            memory_overprovisioning=1.0,
            disable_threshold=disable_threshold,
        )
        cluster_ids.append(cluster.id)
        for n in range(1, hosts_per_cluster + 1):
            name = f"{prefix.lower()}-host-{letter.lower()}{n}"
            host = inventory.add_host(
                cloud,
                named_id("host", name),
                cluster.id,
                name,
                address=f"10.0.0.{len(host_ids) + 11}",
                cpu_count=host_cpu_count,
                cpu_speed_mhz=2400,
                memory_mib=host_memory_mib,
            )
            host_ids.append(host.id)
        pool = inventory.add_cluster_storage(
            cloud,
            named_id("primary_storage", f"{prefix}-Primary-{letter}"),
            cluster.id,
            f"{prefix}-Primary-{letter}",
            path=f"/mnt/primary/{letter.lower()}",
            capacity_bytes=4 * TIB,
            overprovisioning=2.0,
        )
        pool_ids.append(pool.id)
    secondary = inventory.add_secondary_storage(
        cloud,
        named_id("secondary_storage", f"{prefix}-Secondary"),
        zone.id,
        f"{prefix}-Secondary",
        url="nfs://10.0.0.2/export/secondary",
        capacity_bytes=10 * TIB,
    )
    network = inventory.add_guest_network(
        cloud,
        named_id("network", f"{prefix}-Shared-Network"),
        zone.id,
        f"{prefix}-Shared-Network",
        network_type="Shared",
        cidr="10.1.0.0/16",
        gateway="10.1.0.1",
        start_ip="10.1.0.10",
        end_ip="10.1.255.250",
        vlan=100,
        dns1="10.0.0.53",
    )
    small = inventory.add_service_offering(
        cloud,
        named_id("service_offering", "Small Instance"),
        "Small Instance",
        display_text="1 vCPU, 1 GHz, 512 MiB",
        cpu_count=1,
        cpu_speed_mhz=1000,
        memory_mib=512,
    )
    medium = inventory.add_service_offering(
        cloud,
        named_id("service_offering", "Medium Instance"),
        "Medium Instance",
        display_text="2 vCPU, 2 GHz, 2 GiB",
        cpu_count=2,
        cpu_speed_mhz=2000,
        memory_mib=2048,
    )
    disk = inventory.add_disk_offering(
        cloud,
        named_id("disk_offering", "Small Disk"),
        "Small Disk",
        display_text="5 GiB data disk",
        size_bytes=5 * GIB,
    )
    template = inventory.register_template(
        cloud,
        named_id("template", "Tiny Linux (Simulator)"),
        "Tiny Linux (Simulator)",
        secondary_storage_id=secondary.id,
        display_text="A tiny Linux for the simulator",
        hypervisor=SIMULATOR,
        format="QCOW2",
        os_type="Other Linux (64-bit)",
        url="http://images.invalid/tiny-linux.qcow2",
        size_bytes=2 * GIB,
    )
    admin = inventory.add_account(
        cloud, named_id("account", admin_name), admin_name, AccountType.ADMIN.value, admin_api_key
    )
    return DemoCloud(
        zone_id=zone.id,
        pod_id=pod.id,
        cluster_ids=(cluster_ids[0], cluster_ids[1]),
        host_ids=tuple(host_ids),
        pool_ids=(pool_ids[0], pool_ids[1]),
        secondary_storage_id=secondary.id,
        network_id=network.id,
        small_offering_id=small.id,
        medium_offering_id=medium.id,
        disk_offering_id=disk.id,
        template_id=template.id,
        admin_account_id=admin.id,
    )
