"""Deploying a VM, as the domain sees it: each step a decision over aggregates.

The workflow orders these steps and the activities call them; everything here is a pure
decision over the event store, idempotent by command id, so a step that runs twice changes
nothing the second time. Each step also moves the job's current step in the same transaction,
so the job read model never disagrees with the resources it reports on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from domain import job_records
from domain.account import Account
from domain.aggregate import CloudAggregate
from domain.catalog import GIB, ServiceOffering, Template
from domain.cloud import Cloud, Decision, label_of
from domain.cluster import Cluster
from domain.errors import InvalidParameter, NotFound
from domain.guest_network import GuestNetwork
from domain.host import Host
from domain.ids import derived_id, mac_address_for
from domain.job import Job
from domain.job_records import JobTicket
from domain.job_requests import DeploymentOrder
from domain.job_results import DeployedVm, succeed_with
from domain.placement import (
    AvoidSet,
    ClusterSnapshot,
    DeploymentPlan,
    DeploymentRequest,
    FirstFitPlanner,
    HostSnapshot,
    PoolSnapshot,
)
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine, VmEvent, VmState
from domain.volume import VOLUME_STATE_MACHINE, Volume, VolumeEvent, VolumeState, VolumeType
from domain.zone import AllocationState, Zone

A = TypeVar("A", bound=CloudAggregate)

JOB_TYPE = "DeployVirtualMachine"
#: RFC 1123 host name label, which CloudStack requires of a VM name.
HOSTNAME = re.compile(r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")


@dataclass(frozen=True)
class ValidatedDeployment:
    order: DeploymentOrder
    hypervisor: str
    cpu_count: int
    cpu_speed_mhz: int
    memory_mib: int
    root_disk_bytes: int
    ha_enabled: bool
    zone_name: str
    offering_name: str


def virtual_machine_id_for(job_id: UUID) -> UUID:
    return derived_id(job_id, "virtual-machine")


def root_volume_id_for(job_id: UUID) -> UUID:
    return derived_id(job_id, "root-volume")


def validate_deployment(cloud: Cloud, order: DeploymentOrder) -> ValidatedDeployment:
    """Refuse, before any job starts, a deployment that can never succeed.

    Raises InvalidParameter/NotFound naming the field, which the API turns into a 4xx.
    """
    if not HOSTNAME.match(order.name):
        raise InvalidParameter(
            field="name",
            message="must be a host name of 1-63 letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen",
        )
    account = _field(cloud, Account, order.account_id, "account_id")
    zone = _field(cloud, Zone, order.zone_id, "zone_id")
    if zone.allocation_state is not AllocationState.ENABLED:
        raise InvalidParameter(
            field="zone_id", message=f"zone {zone.name} is disabled for allocation"
        )
    offering = _field(cloud, ServiceOffering, order.service_offering_id, "service_offering_id")
    if not offering.active:
        raise InvalidParameter(
            field="service_offering_id", message=f"offering {offering.name} is inactive"
        )
    template = _field(cloud, Template, order.template_id, "template_id")
    if not template.is_usable_by(account.id, account.is_admin):
        # Another account's private template answers as one that does not exist.
        raise NotFound(f"no template with id {template.id}", field="template_id")
    if not template.is_available_in(zone.id):
        raise InvalidParameter(
            field="template_id", message=f"template {template.name} is not ready in {zone.name}"
        )
    hypervisors = {cloud.load(Cluster, cid).hypervisor for cid in zone.cluster_ids}
    if template.hypervisor not in hypervisors:
        raise InvalidParameter(
            field="template_id",
            message=f"template {template.name} is for {template.hypervisor}, and zone "
            f"{zone.name} has no {template.hypervisor} cluster (it has: "
            f"{', '.join(sorted(hypervisors)) or 'none'})",
        )
    network = _field(cloud, GuestNetwork, order.network_id, "network_id")
    if network.zone_id != zone.id:
        raise InvalidParameter(
            field="network_id", message=f"network {network.name} is not in zone {zone.name}"
        )
    root_disk_bytes = template.size_bytes
    if order.root_disk_size_gib is not None:
        root_disk_bytes = order.root_disk_size_gib * GIB
        if root_disk_bytes < template.size_bytes:
            raise InvalidParameter(
                field="root_disk_size_gib",
                message=f"{order.root_disk_size_gib} GiB is smaller than template "
                f"{template.name} ({template.size_bytes / GIB:.1f} GiB)",
            )
    return ValidatedDeployment(
        order=order,
        hypervisor=template.hypervisor,
        cpu_count=offering.cpu_count,
        cpu_speed_mhz=offering.cpu_speed_mhz,
        memory_mib=offering.memory_mib,
        root_disk_bytes=root_disk_bytes,
        ha_enabled=offering.ha_enabled,
        zone_name=zone.name,
        offering_name=offering.name,
    )


def job_ticket(
    job_id: UUID, order: DeploymentOrder, submitted_at: datetime, summary: str
) -> JobTicket:
    return JobTicket(
        job_id=job_id,
        job_type=JOB_TYPE,
        account_id=order.account_id,
        resource_type="VirtualMachine",
        resource_id=virtual_machine_id_for(job_id),
        zone_id=order.zone_id,
        summary=summary,
        submitted_at=submitted_at,
    )


def open_job(
    d: Decision, job_id: UUID, order: DeploymentOrder, submitted_at: datetime, summary: str
) -> Job:
    """The deployment's job, recorded if it is not yet."""
    return job_records.open_job(d, job_ticket(job_id, order, submitted_at, summary))


def register_deployment(
    cloud: Cloud, job_id: UUID, order: DeploymentOrder, submitted_at: datetime, summary: str
) -> ValidatedDeployment:
    """Record the job, the VM (Stopped) and its root volume (Allocated): the first step.

    The job is recorded before validation, so that a deployment refused at run time (the
    template was removed since the API checked) still shows as a failed job.
    """
    vm_id = virtual_machine_id_for(job_id)
    volume_id = root_volume_id_for(job_id)

    cloud.decide(lambda d: open_job(d, job_id, order, submitted_at, summary))
    validated = validate_deployment(cloud, order)

    def register(d: Decision) -> None:
        if d.find(VirtualMachine, vm_id) is None:
            d.add(
                VirtualMachine.create_with_id(
                    vm_id,
                    name=order.name,
                    display_name=order.display_name,
                    account_id=order.account_id,
                    zone_id=order.zone_id,
                    service_offering_id=order.service_offering_id,
                    template_id=order.template_id,
                    network_id=order.network_id,
                    hypervisor=validated.hypervisor,
                    cpu_count=validated.cpu_count,
                    cpu_speed_mhz=validated.cpu_speed_mhz,
                    memory_mib=validated.memory_mib,
                    root_volume_id=volume_id,
                    ha_enabled=validated.ha_enabled,
                    job_id=job_id,
                )
            )
        if d.find(Volume, volume_id) is None:
            d.add(
                Volume.create_with_id(
                    volume_id,
                    name=f"ROOT-{order.name}",
                    account_id=order.account_id,
                    zone_id=order.zone_id,
                    volume_type=VolumeType.ROOT.value,
                    size_bytes=validated.root_disk_bytes,
                    vm_id=vm_id,
                    template_id=order.template_id,
                    device_id=0,
                )
            )
        d.get(Job, job_id).enter_step("registered", f"{job_id}/register")
        d.get(VirtualMachine, vm_id).transition(
            VmEvent.START_REQUESTED, f"{job_id}/start-requested"
        )

    cloud.decide(register)
    return validated


def zone_snapshot(cloud: Cloud, zone_id: UUID) -> tuple[list[ClusterSnapshot], list[PoolSnapshot]]:
    """The planner's view of a zone, read from the aggregates (the source of truth)."""
    zone = cloud.load(Zone, zone_id)
    clusters = []
    for cluster_id in zone.cluster_ids:
        cluster = cloud.load(Cluster, cluster_id)
        clusters.append(
            ClusterSnapshot(
                cluster_id=cluster.id,
                name=cluster.name,
                pod_id=cluster.pod_id,
                hypervisor=cluster.hypervisor,
                hosts=tuple(_host_snapshot(cloud.load(Host, hid)) for hid in cluster.host_ids),
                pools=tuple(
                    _pool_snapshot(cloud.load(PrimaryStorage, pid))
                    for pid in cluster.storage_pool_ids
                ),
                cpu_overprovisioning=cluster.cpu_overprovisioning,
                memory_overprovisioning=cluster.memory_overprovisioning,
                disable_threshold=cluster.disable_threshold,
                enabled=cluster.allocation_state is AllocationState.ENABLED,
            )
        )
    zone_pools = [
        _pool_snapshot(cloud.load(PrimaryStorage, pid)) for pid in zone.zone_storage_pool_ids
    ]
    return clusters, zone_pools


def _host_snapshot(host: Host) -> HostSnapshot:
    return HostSnapshot(
        host_id=host.id,
        name=host.name,
        cluster_id=host.cluster_id,
        cpu_total_mhz=host.cpu_total_mhz,
        cpu_used_mhz=host.cpu_used_mhz,
        memory_total_mib=host.memory_mib,
        memory_used_mib=host.memory_used_mib,
        available=host.can_take_deployments(),
        tags=frozenset(host.tags),
    )


def _pool_snapshot(pool: PrimaryStorage) -> PoolSnapshot:
    return PoolSnapshot(
        pool_id=pool.id,
        name=pool.name,
        capacity_bytes=pool.capacity_bytes,
        allocated_bytes=pool.allocated_bytes,
        overprovisioning=pool.overprovisioning,
        enabled=pool.enabled,
    )


def plan_deployment(cloud: Cloud, job_id: UUID, avoid: AvoidSet, attempt: int) -> DeploymentPlan:
    plan = plan_placement(cloud, virtual_machine_id_for(job_id), avoid)
    cloud.decide(
        lambda d: d.get(Job, job_id).enter_step(
            f"planned host (attempt {attempt})", f"{job_id}/plan/{attempt}"
        )
    )
    return plan


def plan_placement(
    cloud: Cloud, vm_id: UUID, avoid: AvoidSet, *, ha_restart: bool = False
) -> DeploymentPlan:
    """Where a VM goes: its last host first, where its root volume (once made) is reachable;
    hosts tagged `ha` only for an HA restart."""
    vm = cloud.load(VirtualMachine, vm_id)
    volume = cloud.load(Volume, vm.root_volume_id)
    offering = cloud.load(ServiceOffering, vm.service_offering_id)
    clusters, zone_pools = zone_snapshot(cloud, vm.zone_id)
    request = DeploymentRequest(
        cpu_mhz=vm.cpu_mhz,
        memory_mib=vm.memory_mib,
        root_disk_bytes=volume.size_bytes,
        hypervisor=vm.hypervisor,
        last_host_id=vm.last_host_id,
        host_tags=frozenset(offering.host_tags),
        avoid=avoid,
        required_pool_id=volume.pool_id if volume.state is VolumeState.READY else None,
        is_ha_restart=ha_restart,
    )
    return FirstFitPlanner().plan(request, clusters, zone_pools)


def reserve_capacity(cloud: Cloud, job_id: UUID, host_id: UUID, attempt: int) -> None:
    vm_id = virtual_machine_id_for(job_id)

    def decide(d: Decision) -> None:
        vm = d.get(VirtualMachine, vm_id)
        host = d.get(Host, host_id)
        cluster = cloud.load(Cluster, host.cluster_id)
        host.reserve_capacity(
            vm_id,
            vm.cpu_mhz,
            vm.memory_mib,
            cluster.cpu_overprovisioning,
            cluster.memory_overprovisioning,
            f"{job_id}/reserve/{attempt}",
        )
        d.get(Job, job_id).enter_step(
            f"reserved capacity on {host.name}", f"{job_id}/reserve-step/{attempt}"
        )

    cloud.decide(decide)


def release_capacity(cloud: Cloud, job_id: UUID, host_id: UUID, attempt: int) -> None:
    vm_id = virtual_machine_id_for(job_id)
    cloud.decide(
        lambda d: d.get(Host, host_id).release_capacity(vm_id, f"{job_id}/release/{attempt}")
    )


def begin_root_volume(cloud: Cloud, job_id: UUID, pool_id: UUID, attempt: int) -> None:
    """Allocate the pool's bytes and move the volume to Creating, before the disk is made."""
    volume_id = root_volume_id_for(job_id)

    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        pool = d.get(PrimaryStorage, pool_id)
        pool.allocate(volume_id, volume.size_bytes, f"{job_id}/pool-allocate/{attempt}")
        if volume.state is VolumeState.ALLOCATED:
            volume.transition(VolumeEvent.CREATE_REQUESTED, f"{job_id}/volume-create/{attempt}")
        d.get(Job, job_id).enter_step(
            f"creating root volume on {pool.name}", f"{job_id}/volume-step/{attempt}"
        )

    cloud.decide(decide)


def complete_root_volume(
    cloud: Cloud, job_id: UUID, pool_id: UUID, path: str, size_bytes: int, attempt: int
) -> None:
    volume_id = root_volume_id_for(job_id)

    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        if volume.state is VolumeState.CREATING:
            volume.record_created(pool_id, path, size_bytes, f"{job_id}/volume-ready/{attempt}")

    cloud.decide(decide)


def abandon_root_volume(cloud: Cloud, job_id: UUID, pool_id: UUID, attempt: int) -> None:
    """The disk could not be made on this pool: Creating -> Allocated, the pool's bytes back."""
    volume_id = root_volume_id_for(job_id)

    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        if volume.state is VolumeState.CREATING:
            volume.transition(VolumeEvent.OPERATION_FAILED, f"{job_id}/volume-failed/{attempt}")
        d.get(PrimaryStorage, pool_id).release(volume_id, f"{job_id}/pool-release/{attempt}")

    cloud.decide(decide)


def expunge_root_volume(cloud: Cloud, job_id: UUID, pool_id: UUID) -> None:
    """Final unwind of the root volume: Destroy -> Expunging -> Expunged, the pool's bytes back.

    The driver deletes the disk before this runs.
    """
    volume_id = root_volume_id_for(job_id)

    def decide(d: Decision) -> None:
        volume = d.get(Volume, volume_id)
        for volume_event, step in (
            (VolumeEvent.OPERATION_FAILED, "creating-failed"),
            (VolumeEvent.DESTROY_REQUESTED, "destroy"),
            (VolumeEvent.EXPUNGING_REQUESTED, "expunging"),
            (VolumeEvent.OPERATION_SUCCEEDED, "expunged"),
        ):
            if VOLUME_STATE_MACHINE.allows(volume.state, volume_event):
                volume.transition(volume_event, f"{job_id}/volume-{step}")
        d.get(PrimaryStorage, pool_id).release(volume_id, f"{job_id}/pool-release-final")

    cloud.decide(decide)


def allocate_nic(cloud: Cloud, job_id: UUID) -> tuple[str, str]:
    vm_id = virtual_machine_id_for(job_id)

    def decide(d: Decision) -> tuple[str, str]:
        vm = d.get(VirtualMachine, vm_id)
        network = d.get(GuestNetwork, vm.network_id)
        ip = network.allocate_ip(vm_id, f"{job_id}/allocate-ip")
        mac = mac_address_for(vm_id, network.id)
        vm.attach_nic(network.id, ip, mac, f"{job_id}/attach-nic")
        d.get(Job, job_id).enter_step(f"allocated IP {ip} on {network.name}", f"{job_id}/nic-step")
        return ip, mac

    return cloud.decide(decide)


def release_nic(cloud: Cloud, job_id: UUID) -> None:
    vm_id = virtual_machine_id_for(job_id)

    def decide(d: Decision) -> None:
        vm = d.get(VirtualMachine, vm_id)
        d.get(GuestNetwork, vm.network_id).release_ip(vm_id, f"{job_id}/release-ip")
        vm.detach_nic(f"{job_id}/detach-nic")

    cloud.decide(decide)


def record_starting_on(cloud: Cloud, job_id: UUID, host_id: UUID, attempt: int) -> None:
    """The VM is about to be defined on the host: remember where, before the side effect."""
    vm_id = virtual_machine_id_for(job_id)

    def decide(d: Decision) -> None:
        host = d.get(Host, host_id)
        vm = d.get(VirtualMachine, vm_id)
        if attempt > 1:
            vm.transition(
                VmEvent.OPERATION_RETRY,
                f"{job_id}/retry/{attempt}",
                host_id=host_id,
                reason=f"retrying on host {host.name}",
            )
        d.get(Job, job_id).enter_step(
            f"starting VM on {host.name}", f"{job_id}/start-step/{attempt}"
        )

    cloud.decide(decide)


def complete_deployment(cloud: Cloud, job_id: UUID, host_id: UUID) -> DeployedVm:
    """The VM runs: Starting -> Running on the host, and the job succeeds, in one write."""
    vm_id = virtual_machine_id_for(job_id)

    def decide(d: Decision) -> DeployedVm:
        vm = d.get(VirtualMachine, vm_id)
        if vm.state is not VmState.RUNNING:
            vm.transition(VmEvent.OPERATION_SUCCEEDED, f"{job_id}/running", host_id=host_id)
        result = DeployedVm(
            virtual_machine_id=vm.id,
            state=vm.state.value,
            host_id=host_id,
            ip_address=vm.ip_address or "",
            root_volume_id=vm.root_volume_id,
        )
        return succeed_with(d, job_id, result)

    return cloud.decide(decide)


def fail_deployment(
    cloud: Cloud,
    job_id: UUID,
    error_code: int,
    error_text: str,
    *,
    order: DeploymentOrder,
    submitted_at: datetime,
    summary: str,
    cancelled: bool = False,
) -> None:
    """Final failure: the VM ends in Error (creation failed), as CloudStack leaves it, and the
    job fails with its CloudStack code (or is cancelled), in one write.

    Capacity, IP and disk were given back by the unwind before this runs.
    """
    vm_id = virtual_machine_id_for(job_id)

    def decide(d: Decision) -> None:
        vm = d.find(VirtualMachine, vm_id)
        if vm is not None:
            if vm.state is VmState.STARTING:
                vm.transition(VmEvent.OPERATION_FAILED, f"{job_id}/failed", reason=error_text)
            if vm.state is VmState.STOPPED:
                vm.transition(
                    VmEvent.OPERATION_FAILED_TO_ERROR, f"{job_id}/error", reason=error_text
                )
        volume = d.find(Volume, root_volume_id_for(job_id))
        if volume is not None and volume.state is VolumeState.ALLOCATED:
            # Never made on storage: nothing to delete, and nothing to keep for the Error VM.
            volume.transition(VolumeEvent.DESTROY_REQUESTED, f"{job_id}/volume-destroy")
            volume.transition(VolumeEvent.EXPUNGING_REQUESTED, f"{job_id}/volume-expunging")
            volume.transition(VolumeEvent.OPERATION_SUCCEEDED, f"{job_id}/volume-expunged")
        job_records.end_unsuccessfully(
            d,
            job_ticket(job_id, order, submitted_at, summary),
            error_code,
            error_text,
            cancelled=cancelled,
        )

    cloud.decide(decide)


def _field(cloud: Cloud, cls: type[A], aggregate_id: UUID, field_name: str) -> A:
    found = cloud.find(cls, aggregate_id)
    if found is None:
        raise NotFound(f"no {label_of(cls)} with id {aggregate_id}", field=field_name)
    return found
