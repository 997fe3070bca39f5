"""Operations on an existing VM, as the domain sees them: start, stop, reboot, destroy, recover,
expunge, migrate, change the service offering, restore.

Each step is a decision over the event store, idempotent by a command id built from the
job id (`f"{job_id}/<step>[/<attempt>]"`), and moves the job's current step in the same write.

CloudStack's semantics: a Stopped VM holds no host capacity and is defined on no hypervisor
(its NIC's IP and its volumes stay); start re-plans (last host first) and reserves capacity;
destroy stops the VM if it runs and leaves it Destroyed, recoverable until it is expunged;
expunge deletes it from the hypervisor, deletes its volumes, gives back its IP and removes it
(and its VM snapshots); a Stopped VM may take another service offering; restore replaces the
root volume with a new one made from a template, and deletes the old one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from domain import job_records, storage_migration, vm_snapshot_operations
from domain.account import Account
from domain.catalog import ServiceOffering, Template
from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.deployment import plan_placement, zone_snapshot
from domain.errors import (
    IllegalStateTransition,
    InsufficientCapacity,
    InvalidParameter,
    NotFound,
)
from domain.guest_network import GuestNetwork
from domain.host import Host
from domain.ids import derived_id
from domain.job import Job
from domain.job_records import JobTicket
from domain.job_results import (
    DestroyedVm,
    ExpungedVm,
    MigratedVm,
    ServiceOfferingChanged,
    VmJobResult,
    VmRestored,
    succeed_with,
)
from domain.placement import AvoidSet, DeploymentPlan
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine, VmEvent, VmState
from domain.vm_lifecycle import record_stopped, succeed_with_vm, vm_facts
from domain.vm_requests import (
    ChangeServiceOfferingRequest,
    RestoreVmRequest,
    VmOperation,
    VmRequest,
    VmSnapshotJobRequest,
)
from domain.volume import VOLUME_STATE_MACHINE, Volume, VolumeEvent, VolumeState, VolumeType

_S = VmState
#: The stable states each operation starts from (CloudStack's checks before it transitions).
ALLOWED_FROM: dict[VmOperation, frozenset[VmState]] = {
    VmOperation.START: frozenset({_S.STOPPED}),
    VmOperation.STOP: frozenset({_S.RUNNING}),
    VmOperation.REBOOT: frozenset({_S.RUNNING}),
    VmOperation.DESTROY: frozenset({_S.STOPPED, _S.RUNNING, _S.ERROR}),
    VmOperation.RECOVER: frozenset({_S.DESTROYED}),
    VmOperation.EXPUNGE: frozenset({_S.DESTROYED, _S.ERROR, _S.EXPUNGING}),
    VmOperation.MIGRATE: frozenset({_S.RUNNING}),
    VmOperation.SNAPSHOT: frozenset({_S.RUNNING}),
    VmOperation.REVERT_TO_SNAPSHOT: frozenset({_S.RUNNING}),
    VmOperation.DELETE_SNAPSHOT: frozenset({_S.RUNNING, _S.STOPPED}),
    VmOperation.CHANGE_SERVICE_OFFERING: frozenset({_S.STOPPED}),
    VmOperation.RESTORE: frozenset({_S.RUNNING, _S.STOPPED}),
}
RESOURCE_TYPE = "VirtualMachine"


def check_allowed(vm: VirtualMachine, operation: VmOperation) -> None:
    """At run time: refuse an operation the VM's state does not allow (431)."""
    if vm.is_removed:
        raise IllegalStateTransition(f"virtual machine {vm.name} has been expunged")
    if vm.state not in ALLOWED_FROM[operation]:
        raise IllegalStateTransition(
            f"cannot {operation.value} virtual machine {vm.name} in state {vm.state} "
            f"(it must be {' or '.join(sorted(ALLOWED_FROM[operation]))})"
        )


def refusal_at_submission(
    state: str, removed: bool, operation: VmOperation, name: str
) -> IllegalStateTransition | None:
    """At submission, from the read model: a refusal when the VM's state already forbids the
    operation. A transitional state is not judged: the job queues behind the one that runs and
    checks again when its turn comes."""
    if removed:
        return IllegalStateTransition(f"virtual machine {name} has been expunged")
    vm_state = VmState(state)
    if vm_state.value in {s.value for s in (_S.STARTING, _S.STOPPING, _S.MIGRATING)}:
        return None
    if vm_state is _S.EXPUNGING and operation is not VmOperation.EXPUNGE:
        return IllegalStateTransition(f"virtual machine {name} is being expunged")
    if vm_state not in ALLOWED_FROM[operation]:
        return IllegalStateTransition(
            f"cannot {operation.value} virtual machine {name} in state {vm_state} "
            f"(it must be {' or '.join(sorted(ALLOWED_FROM[operation]))})"
        )
    return None


# -- the job ---------------------------------------------------------------------------------
def job_ticket(d: Decision, request: VmRequest, submitted_at: datetime) -> JobTicket:
    vm = d.cloud.find(VirtualMachine, request.vm_id)
    return JobTicket(
        job_id=request.job_id,
        job_type=request.operation.job_type,
        account_id=request.account_id,
        resource_type=RESOURCE_TYPE,
        resource_id=request.vm_id,
        zone_id=vm.zone_id if vm is not None else None,
        summary=request.summary,
        submitted_at=submitted_at,
    )


def _open_job(d: Decision, request: VmRequest, submitted_at: datetime) -> Job:
    return job_records.open_job(d, job_ticket(d, request, submitted_at))


@dataclass(frozen=True)
class VmFound:
    """The VM as a job found it, once the job's first transition is recorded."""

    state: VmState
    host_id: UUID | None


def begin(cloud: Cloud, request: VmRequest, submitted_at: datetime) -> VmFound:
    """The job's turn came: record it, check the VM's state allows the operation, and take the
    first transition (StartRequested, StopRequested, ...). Returns what the VM is now."""
    job_id, operation = request.job_id, request.operation
    cloud.decide(lambda d: _open_job(d, request, submitted_at))

    def decide(d: Decision) -> VmFound:
        vm = d.get(VirtualMachine, request.vm_id)
        job = d.get(Job, job_id)
        if not job.has_applied(f"{job_id}/began"):  # a repeat must not refuse its own effect
            check_allowed(vm, operation)
            if isinstance(request, ChangeServiceOfferingRequest):
                check_service_offering_change(cloud, vm, request.service_offering_id)
            elif isinstance(request, RestoreVmRequest):
                check_restore_template(cloud, vm, request.template_id)
        if operation is VmOperation.START:
            vm.transition(VmEvent.START_REQUESTED, f"{job_id}/start-requested")
        elif operation is VmOperation.STOP or (
            operation in (VmOperation.DESTROY, VmOperation.RESTORE) and vm.state is VmState.RUNNING
        ):
            vm.transition(VmEvent.STOP_REQUESTED, f"{job_id}/stop-requested")
        elif operation is VmOperation.MIGRATE:
            vm.transition(VmEvent.MIGRATION_REQUESTED, f"{job_id}/migration-requested")
        job.enter_step(f"began {operation.value}", f"{job_id}/began")
        return VmFound(state=vm.state, host_id=vm.host_id)

    return cloud.decide(decide)


def record_queued_job_cancelled(
    cloud: Cloud, request: VmRequest, submitted_at: datetime, reason: str
) -> None:
    """A job cancelled while it waited in the queue: recorded, so the job listing shows it."""
    cloud.decide(
        lambda d: job_records.end_unsuccessfully(
            d, job_ticket(d, request, submitted_at), 0, reason, cancelled=True
        )
    )


def fail(
    cloud: Cloud,
    request: VmRequest,
    submitted_at: datetime,
    error_code: int,
    error_text: str,
    *,
    cancelled: bool,
) -> str | None:
    """The final word on a job that did not succeed, after its undos ran: the VM back in the
    stable state it was in (Starting -> Stopped, Stopping and Migrating -> Running, on the
    host it ran on before: a failed migration never moved its record; an Expunging VM stays
    Expunging until an expunge succeeds), the job failed with its code or cancelled."""
    job_id = request.job_id

    def decide(d: Decision) -> str | None:
        vm = d.find(VirtualMachine, request.vm_id)
        if vm is not None and vm.state in (
            VmState.STARTING,
            VmState.STOPPING,
            VmState.MIGRATING,
            VmState.EXPUNGING,
        ):
            vm.transition(VmEvent.OPERATION_FAILED, f"{job_id}/failed", reason=error_text)
        if isinstance(request, VmSnapshotJobRequest):
            vm_snapshot_operations.record_failed(d, request, error_text)
        job_records.end_unsuccessfully(
            d, job_ticket(d, request, submitted_at), error_code, error_text, cancelled=cancelled
        )
        return vm.state.value if vm is not None else None

    return cloud.decide(decide)


def enter_step(cloud: Cloud, job_id: UUID, step: str, command_id: str) -> None:
    cloud.decide(lambda d: job_records.enter_step(d, job_id, step, command_id))


# -- start -----------------------------------------------------------------------------------
def plan_start(
    cloud: Cloud,
    job_id: UUID,
    vm_id: UUID,
    avoid: AvoidSet,
    attempt: int,
    *,
    ha_restart: bool = False,
) -> DeploymentPlan:
    plan = plan_placement(cloud, vm_id, avoid, ha_restart=ha_restart)
    enter_step(cloud, job_id, f"planned host (attempt {attempt})", f"plan/{attempt}")
    return plan


def reserve_capacity(cloud: Cloud, job_id: UUID, vm_id: UUID, host_id: UUID, attempt: int) -> None:
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


def release_capacity(cloud: Cloud, job_id: UUID, vm_id: UUID, host_id: UUID, attempt: int) -> None:
    cloud.decide(
        lambda d: d.get(Host, host_id).release_capacity(vm_id, f"{job_id}/release/{attempt}")
    )


def record_starting_on(
    cloud: Cloud, job_id: UUID, vm_id: UUID, host_id: UUID, attempt: int
) -> None:
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


def complete_start(cloud: Cloud, job_id: UUID, vm_id: UUID, host_id: UUID) -> VmJobResult:
    def decide(d: Decision) -> VmJobResult:
        vm = d.get(VirtualMachine, vm_id)
        vm.transition(VmEvent.OPERATION_SUCCEEDED, f"{job_id}/running", host_id=host_id)
        return succeed_with_vm(d, job_id, vm)

    return cloud.decide(decide)


# -- stop, reboot, destroy, recover ----------------------------------------------------------
def complete_stop(cloud: Cloud, job_id: UUID, vm_id: UUID) -> VmJobResult:
    def decide(d: Decision) -> VmJobResult:
        vm = d.get(VirtualMachine, vm_id)
        if vm.state is VmState.STOPPING:
            record_stopped(d, job_id, vm)
        return succeed_with_vm(d, job_id, vm)

    return cloud.decide(decide)


def complete_reboot(cloud: Cloud, job_id: UUID, vm_id: UUID) -> VmJobResult:
    def decide(d: Decision) -> VmJobResult:
        vm = d.get(VirtualMachine, vm_id)
        if vm.host_id is not None:
            vm.record_reboot(vm.host_id, f"{job_id}/rebooted")
        return succeed_with_vm(d, job_id, vm)

    return cloud.decide(decide)


def complete_destroy(
    cloud: Cloud, job_id: UUID, vm_id: UUID, *, expunge: bool, expunge_delay_seconds: int
) -> DestroyedVm | None:
    """Stopped (after the stop, if it ran) -> Destroyed, keeping IP and volumes; an Error VM goes
    straight to Expunging. Returns the job's result, or None when an expunge follows."""

    def decide(d: Decision) -> DestroyedVm | None:
        vm = d.get(VirtualMachine, vm_id)
        if vm.state is VmState.STOPPING:
            record_stopped(d, job_id, vm)
        if vm.state in (VmState.STOPPED, VmState.ERROR):
            vm.transition(VmEvent.DESTROY_REQUESTED, f"{job_id}/destroy-requested")
        if expunge or vm.state is VmState.EXPUNGING:
            d.get(Job, job_id).enter_step("destroyed; expunging", f"{job_id}/destroyed-step")
            return None
        return succeed_with(
            d, job_id, DestroyedVm(**vm_facts(vm), expunge_delay_seconds=expunge_delay_seconds)
        )

    return cloud.decide(decide)


def recover(cloud: Cloud, job_id: UUID, vm_id: UUID) -> VmJobResult:
    def decide(d: Decision) -> VmJobResult:
        vm = d.get(VirtualMachine, vm_id)
        if vm.state is VmState.DESTROYED:
            vm.transition(VmEvent.RECOVERY_REQUESTED, f"{job_id}/recovered")
        return succeed_with_vm(d, job_id, vm)

    return cloud.decide(decide)


# -- migrate ---------------------------------------------------------------------------------
def plan_migration(
    cloud: Cloud, job_id: UUID, vm_id: UUID, target_host_id: UUID | None
) -> DeploymentPlan:
    """Where a live migration goes: another host of the VM's cluster that reaches its root
    volume's pool (live migration keeps the disks where they are), or a host asked for in
    another cluster of its zone (the disks then move too: domain.storage_migration). The host
    asked for is checked; without one, the planner chooses with the current host and every
    other cluster avoided. Capacity is checked again, under concurrency, when the target is
    reserved."""
    vm = cloud.load(VirtualMachine, vm_id)
    if vm.host_id is None:
        raise IllegalStateTransition(f"virtual machine {vm.name} is on no host")
    source = cloud.load(Host, vm.host_id)
    if target_host_id is None:
        clusters, _ = zone_snapshot(cloud, vm.zone_id)
        avoid = AvoidSet(
            host_ids=frozenset({source.id}),
            cluster_ids=frozenset(
                c.cluster_id for c in clusters if c.cluster_id != source.cluster_id
            ),
        )
        plan = plan_placement(cloud, vm_id, avoid)
    else:
        plan = _check_target(cloud, vm, source, target_host_id)
    target = cloud.load(Host, plan.host_id)
    enter_step(cloud, job_id, f"chose {target.name} to migrate to", "plan-migration")
    return plan


def _check_target(
    cloud: Cloud, vm: VirtualMachine, source: Host, target_host_id: UUID
) -> DeploymentPlan:
    target = cloud.find(Host, target_host_id)
    if target is None:
        raise NotFound(f"no host with id {target_host_id}", field="host_id")
    if target.id == source.id:
        raise InvalidParameter(
            f"virtual machine {vm.name} already runs on host {target.name}", field="host_id"
        )
    if target.cluster_id != source.cluster_id:
        storage_migration.check_target_cluster(cloud, vm, source, target)
    if not target.can_take_deployments():
        raise InsufficientCapacity(
            f"host {target.name} is {target.status}/{target.resource_state} and takes no VMs"
        )
    volume = cloud.load(Volume, vm.root_volume_id)
    if volume.pool_id is None:
        raise IllegalStateTransition(f"the root volume of {vm.name} is on no storage pool")
    return DeploymentPlan(
        host_id=target.id,
        cluster_id=target.cluster_id,
        pod_id=target.pod_id,
        pool_id=volume.pool_id,
    )


def complete_migration(
    cloud: Cloud,
    job_id: UUID,
    vm_id: UUID,
    source_host_id: UUID,
    target_host_id: UUID,
    disk_moves: Sequence[storage_migration.DiskMovePlan] = (),
    paths: Mapping[str, str] | None = None,
) -> MigratedVm:
    """The VM runs on the target: Migrating -> Running there, the source's capacity given
    back, each moved disk on its new pool, the job done. One write, so the books never show
    the VM on both hosts or a disk in two pools."""

    def decide(d: Decision) -> MigratedVm:
        vm = d.get(VirtualMachine, vm_id)
        vm.transition(VmEvent.OPERATION_SUCCEEDED, f"{job_id}/migrated", host_id=target_host_id)
        d.get(Host, source_host_id).release_capacity(vm_id, f"{job_id}/release-source")
        storage_migration.record_disks_moved(d, job_id, disk_moves, paths or {})
        return succeed_with(d, job_id, MigratedVm(**vm_facts(vm), source_host_id=source_host_id))

    return cloud.decide(decide)


# -- expunge ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpungePlan:
    """Where the VM and its root disk may still be on the hypervisors."""

    vm_host_id: UUID | None
    volume_id: UUID
    pool_id: UUID | None
    volume_host_id: UUID | None


def begin_expunge(cloud: Cloud, job_id: UUID, vm_id: UUID) -> ExpungePlan:
    """Destroyed/Error -> Expunging: the point of no return of an expunge."""

    def decide(d: Decision) -> ExpungePlan:
        vm = d.get(VirtualMachine, vm_id)
        destroyed_into_expunging = vm.state is VmState.EXPUNGING and vm.has_applied(
            f"{job_id}/destroy-requested"
        )
        if not (destroyed_into_expunging or vm.has_applied(f"{job_id}/expunging")):
            check_allowed(vm, VmOperation.EXPUNGE)
            vm_event = (
                VmEvent.DESTROY_REQUESTED
                if vm.state is VmState.ERROR
                else VmEvent.EXPUNGE_OPERATION
            )
            vm.transition(vm_event, f"{job_id}/expunging")
        d.get(Job, job_id).enter_step("expunging", f"{job_id}/expunging-step")
        volume = d.get(Volume, vm.root_volume_id)
        return ExpungePlan(
            vm_host_id=vm.host_id or vm.last_host_id,
            volume_id=volume.id,
            pool_id=volume.pool_id,
            volume_host_id=_host_reaching(cloud, volume.pool_id, vm.last_host_id),
        )

    return cloud.decide(decide)


def _host_reaching(cloud: Cloud, pool_id: UUID | None, preferred: UUID | None) -> UUID | None:
    """A host that can reach the pool, for the driver to delete a disk through."""
    if pool_id is None:
        return None
    if preferred is not None:
        return preferred
    pool = cloud.load(PrimaryStorage, pool_id)
    if pool.cluster_id is not None:
        hosts = cloud.load(Cluster, pool.cluster_id).host_ids
        return hosts[0] if hosts else None
    return None


def finish_expunge(cloud: Cloud, job_id: UUID, vm_id: UUID) -> ExpungedVm:
    """The disks are deleted and the VM is gone from the hypervisor: record the root volume
    Expunged (the pool's bytes back), the IP released, the VM removed, the job done."""

    def decide(d: Decision) -> ExpungedVm:
        vm = d.get(VirtualMachine, vm_id)
        volume = d.get(Volume, vm.root_volume_id)
        for volume_event, step in (
            (VolumeEvent.OPERATION_FAILED, "creating-failed"),
            (VolumeEvent.DESTROY_REQUESTED, "destroy"),
            (VolumeEvent.EXPUNGING_REQUESTED, "expunging"),
            (VolumeEvent.OPERATION_SUCCEEDED, "expunged"),
        ):
            if VOLUME_STATE_MACHINE.allows(volume.state, volume_event):
                volume.transition(volume_event, f"{job_id}/volume-{step}")
        if volume.pool_id is not None:
            d.get(PrimaryStorage, volume.pool_id).release(volume.id, f"{job_id}/pool-release")
        d.get(GuestNetwork, vm.network_id).release_ip(vm.id, f"{job_id}/release-ip")
        vm.detach_nic(f"{job_id}/detach-nic")
        snapshots = vm_snapshot_operations.remove_snapshots_of(d, vm.id, job_id)
        vm.remove(f"{job_id}/removed")
        return succeed_with(
            d, job_id, ExpungedVm(**vm_facts(vm), removed_vm_snapshot_ids=snapshots)
        )

    return cloud.decide(decide)


# -- change the service offering (scaleVirtualMachine of a Stopped VM) ------------------------
def check_service_offering_change(
    cloud: Cloud, vm: VirtualMachine, service_offering_id: UUID | None
) -> ServiceOffering:
    """The offering a Stopped VM may take: it exists and is active, it is not the one the VM
    has, and some host of the VM's hypervisor in its zone could ever run it (cpu and memory
    within the host's size times its cluster's overprovisioning, its host tags carried).
    Refusals name the field `service_offering_id`."""
    field = "service_offering_id"
    if service_offering_id is None:
        raise InvalidParameter("a service offering is required", field=field)
    offering = cloud.find(ServiceOffering, service_offering_id)
    if offering is None:
        raise NotFound(f"no service offering with id {service_offering_id}", field=field)
    if not offering.active:
        raise InvalidParameter(f"service offering {offering.name} is inactive", field=field)
    if offering.id == vm.service_offering_id:
        raise InvalidParameter(
            f"virtual machine {vm.name} already has service offering {offering.name}",
            field=field,
        )
    clusters, _ = zone_snapshot(cloud, vm.zone_id)
    tags = frozenset(offering.host_tags)
    fits = any(
        host.cpu_total_mhz * cluster.cpu_overprovisioning >= offering.cpu_mhz
        and host.memory_total_mib * cluster.memory_overprovisioning >= offering.memory_mib
        and tags <= host.tags
        for cluster in clusters
        if cluster.hypervisor == vm.hypervisor
        for host in cluster.hosts
    )
    if not fits:
        raise InvalidParameter(
            f"no {vm.hypervisor} host in the zone of virtual machine {vm.name} can run "
            f"service offering {offering.name} ({offering.cpu_count} vCPU × "
            f"{offering.cpu_speed_mhz} MHz, {offering.memory_mib} MiB"
            + (f", host tags {sorted(tags)}" if tags else "")
            + ")",
            field=field,
        )
    return offering


def change_service_offering(
    cloud: Cloud, job_id: UUID, vm_id: UUID, service_offering_id: UUID
) -> ServiceOfferingChanged:
    """The Stopped VM takes the offering (checked again: the catalog may have changed since the
    job began), and the job succeeds, in one write. A stopped VM holds no host capacity, so
    nothing else changes: its next start reserves the new size."""

    def decide(d: Decision) -> ServiceOfferingChanged:
        vm = d.get(VirtualMachine, vm_id)
        command_id = f"{job_id}/service-offering-changed"
        old_offering_id = vm.service_offering_id
        if not vm.has_applied(command_id):
            check_allowed(vm, VmOperation.CHANGE_SERVICE_OFFERING)
            offering = check_service_offering_change(cloud, vm, service_offering_id)
            vm.change_service_offering(
                offering.id,
                offering.cpu_count,
                offering.cpu_speed_mhz,
                offering.memory_mib,
                offering.ha_enabled,
                command_id,
            )
        return succeed_with(
            d,
            job_id,
            ServiceOfferingChanged(
                **vm_facts(vm),
                service_offering_id=vm.service_offering_id,
                old_service_offering_id=old_offering_id,
                cpu_count=vm.cpu_count,
                cpu_speed_mhz=vm.cpu_speed_mhz,
                memory_mib=vm.memory_mib,
            ),
        )

    return cloud.decide(decide)


# -- restore (restoreVirtualMachine): a new root volume from a template ------------------------
def restored_root_volume_id_for(job_id: UUID) -> UUID:
    """The id of the root volume a restore job makes, known before the job runs."""
    return derived_id(job_id, "restored-root-volume")


def check_restore_template(cloud: Cloud, vm: VirtualMachine, template_id: UUID | None) -> Template:
    """The template a VM may be restored from: its own by default; another must exist, be
    ready in the VM's zone, usable by its account and made for its hypervisor. Refusals name
    the field `template_id`."""
    field = "template_id"
    template = cloud.find(Template, template_id or vm.template_id)
    account = cloud.find(Account, vm.account_id)
    usable = template is not None and template.is_usable_by(
        vm.account_id, account is not None and account.is_admin
    )
    if template is None or not usable:
        # Another account's private template answers as one that does not exist.
        raise NotFound(f"no template with id {template_id or vm.template_id}", field=field)
    if not template.is_available_in(vm.zone_id):
        raise InvalidParameter(
            f"template {template.name} is not ready in the zone of {vm.name}", field=field
        )
    if template.hypervisor != vm.hypervisor:
        raise InvalidParameter(
            f"template {template.name} is for {template.hypervisor}; virtual machine "
            f"{vm.name} runs on {vm.hypervisor}",
            field=field,
        )
    volume = cloud.load(Volume, vm.root_volume_id)
    if volume.pool_id is None or volume.state is not VolumeState.READY:
        raise IllegalStateTransition(
            f"the root volume of {vm.name} is {volume.state} and on no storage pool: nothing "
            "to restore"
        )
    return template


@dataclass(frozen=True)
class RestorePlan:
    """Where the new root volume is made, and what it replaces."""

    new_volume_id: UUID
    old_volume_id: UUID
    old_template_id: UUID
    template_id: UUID
    pool_id: UUID
    #: The host the driver reaches the pool through (the VM's host while it is on one).
    host_id: UUID


def begin_restore_volume(
    cloud: Cloud, job_id: UUID, vm_id: UUID, template_id: UUID | None
) -> RestorePlan:
    """The new root volume booked on the old one's pool: Allocated -> Creating, the pool's
    bytes reserved. It is never smaller than the old root disk (CloudStack does not shrink a
    root disk) nor than the template."""
    new_volume_id = restored_root_volume_id_for(job_id)

    def decide(d: Decision) -> RestorePlan:
        vm = d.get(VirtualMachine, vm_id)
        job = d.get(Job, job_id)
        if vm.root_volume_id == new_volume_id:
            raise IllegalStateTransition(f"virtual machine {vm.name} already has its new root")
        if not job.has_applied(f"{job_id}/restore-volume-step"):
            template = check_restore_template(cloud, vm, template_id)
        else:
            template = cloud.load(Template, template_id or vm.template_id)
        old = d.get(Volume, vm.root_volume_id)
        if old.pool_id is None:
            raise IllegalStateTransition(f"the root volume of {vm.name} is on no storage pool")
        host_id = vm.host_id or _host_reaching(cloud, old.pool_id, vm.last_host_id)
        if host_id is None:
            raise IllegalStateTransition(
                f"no host reaches the storage pool of the root volume of {vm.name}"
            )
        new = d.find(Volume, new_volume_id)
        if new is None:
            new = d.add(
                Volume.create_with_id(
                    new_volume_id,
                    name=old.name,
                    account_id=vm.account_id,
                    zone_id=vm.zone_id,
                    volume_type=VolumeType.ROOT.value,
                    size_bytes=max(old.size_bytes, template.size_bytes),
                    vm_id=vm.id,
                    template_id=template.id,
                    device_id=0,
                )
            )
        pool = d.get(PrimaryStorage, old.pool_id)
        pool.allocate(new_volume_id, new.size_bytes, f"{job_id}/restore-pool-allocate")
        if new.state is VolumeState.ALLOCATED:
            new.transition(VolumeEvent.CREATE_REQUESTED, f"{job_id}/restore-volume-create")
        job.enter_step(
            f"creating the new root volume on {pool.name}", f"{job_id}/restore-volume-step"
        )
        return RestorePlan(
            new_volume_id=new_volume_id,
            old_volume_id=old.id,
            old_template_id=vm.template_id,
            template_id=template.id,
            pool_id=old.pool_id,
            host_id=host_id,
        )

    return cloud.decide(decide)


def complete_restore_volume(
    cloud: Cloud, job_id: UUID, pool_id: UUID, path: str, size_bytes: int
) -> None:
    new_volume_id = restored_root_volume_id_for(job_id)

    def decide(d: Decision) -> None:
        volume = d.get(Volume, new_volume_id)
        if volume.state is VolumeState.CREATING:
            volume.record_created(pool_id, path, size_bytes, f"{job_id}/restore-volume-ready")

    cloud.decide(decide)


def abandon_restore_volume(cloud: Cloud, job_id: UUID, vm_id: UUID) -> None:
    """Undo of the new root volume (its disk deleted before this runs): recorded Expunged and
    the pool's bytes given back. Refuses while the VM still boots from it."""
    new_volume_id = restored_root_volume_id_for(job_id)

    def decide(d: Decision) -> None:
        volume = d.find(Volume, new_volume_id)
        if volume is None:
            return
        vm = d.get(VirtualMachine, vm_id)
        if vm.root_volume_id == new_volume_id:
            raise IllegalStateTransition("the VM still boots from the new root volume")
        _expunge_volume(volume, f"{job_id}/restore-undo-volume")
        # Booked on the old root volume's pool (recorded on the new one only once made).
        pool_id = volume.pool_id or d.get(Volume, vm.root_volume_id).pool_id
        if pool_id is not None:
            d.get(PrimaryStorage, pool_id).release(
                new_volume_id, f"{job_id}/restore-undo-pool-release"
            )

    cloud.decide(decide)


def _expunge_volume(volume: Volume, prefix: str) -> None:
    """Whatever state it is in, on to Expunged (the disk is already deleted)."""
    for volume_event, step in (
        (VolumeEvent.OPERATION_FAILED, "creating-failed"),
        (VolumeEvent.DESTROY_REQUESTED, "destroy"),
        (VolumeEvent.EXPUNGING_REQUESTED, "expunging"),
        (VolumeEvent.OPERATION_SUCCEEDED, "expunged"),
    ):
        if VOLUME_STATE_MACHINE.allows(volume.state, volume_event):
            volume.transition(volume_event, f"{prefix}-{step}")


def swap_root_volume(
    cloud: Cloud, job_id: UUID, vm_id: UUID, volume_id: UUID, template_id: UUID, *, undo: bool
) -> None:
    """The VM boots from `volume_id` (made from `template_id`); with `undo`, back to the old
    one. Both directions are idempotent: the VM already on that volume changes nothing."""

    def decide(d: Decision) -> None:
        vm = d.get(VirtualMachine, vm_id)
        if not undo:
            volume = d.get(Volume, volume_id)
            if volume.state is not VolumeState.READY:
                raise IllegalStateTransition(f"the new root volume is {volume.state}, not Ready")
        command = "root-volume-swap-undone" if undo else "root-volume-swapped"
        vm.replace_root_volume(volume_id, template_id, f"{job_id}/{command}")
        if not undo:
            d.get(Job, job_id).enter_step("swapped the root volume", f"{job_id}/swap-step")

    cloud.decide(decide)


def complete_restore(cloud: Cloud, job_id: UUID, vm_id: UUID, old_volume_id: UUID) -> None:
    """The point of no return: the VM as it will stay (a VM that was running and was launched
    again with its new root disk: Stopping -> Stopped -> Starting -> Running on the same host,
    its capacity kept all along), and the old root volume Destroy -> Expunging and detached
    from the VM, its disk to be deleted next. Detached, it is an ordinary volume being deleted:
    if its disk cannot be deleted now, deleting the volume again finishes it."""

    def decide(d: Decision) -> None:
        vm = d.get(VirtualMachine, vm_id)
        if vm.state is VmState.STOPPING and vm.host_id is not None:
            host_id = vm.host_id
            vm.transition(VmEvent.OPERATION_SUCCEEDED, f"{job_id}/restore-stopped")
            vm.transition(
                VmEvent.START_REQUESTED, f"{job_id}/restore-start-requested", host_id=host_id
            )
            vm.transition(VmEvent.OPERATION_SUCCEEDED, f"{job_id}/restore-running", host_id=host_id)
        old = d.get(Volume, old_volume_id)
        for volume_event, step in (
            (VolumeEvent.DESTROY_REQUESTED, "destroy"),
            (VolumeEvent.EXPUNGING_REQUESTED, "expunging"),
        ):
            if VOLUME_STATE_MACHINE.allows(old.state, volume_event):
                old.transition(volume_event, f"{job_id}/old-root-volume-{step}")
        old.record_detached(
            f"{job_id}/old-root-volume-detached", reason="replaced by a new root volume"
        )
        d.get(Job, job_id).enter_step(
            "deleting the old root volume", f"{job_id}/old-root-volume-step"
        )

    cloud.decide(decide)


def finish_restore(cloud: Cloud, job_id: UUID, vm_id: UUID, old_volume_id: UUID) -> VmRestored:
    """The old root disk is deleted: the volume Expunged, its pool's bytes back, the job done."""

    def decide(d: Decision) -> VmRestored:
        vm = d.get(VirtualMachine, vm_id)
        old = d.get(Volume, old_volume_id)
        if old.state is VolumeState.EXPUNGING:
            old.record_expunged(f"{job_id}/old-root-volume-expunged")
        if old.pool_id is not None:
            d.get(PrimaryStorage, old.pool_id).release(
                old_volume_id, f"{job_id}/old-root-volume-pool-release"
            )
        return succeed_with(
            d,
            job_id,
            VmRestored(
                **vm_facts(vm),
                root_volume_id=vm.root_volume_id,
                old_root_volume_id=old_volume_id,
                template_id=vm.template_id,
            ),
        )

    return cloud.decide(decide)
