"""Host maintenance and allocation state: the decisions behind prepareHostForMaintenance,
cancelHostMaintenance and updateHost/updateCluster allocationstate.

Taking a host into maintenance is a job (`PrepareHostForMaintenance`): the host stops taking
new VMs (PrepareForMaintenance), every VM that holds room on it is live-migrated away by a
migrate job in that VM's own queue (so it waits behind whatever else the VM is doing, and shows
as a job of its own), HA-enabled VMs first, and stopped VMs that last ran there forget it. The
host ends in Maintenance once it holds no VM, or in ErrorInMaintenance with one reason per VM
that could not move. Whether the host is empty is read from the host's own books, not from how
the migrate jobs ended: a VM that stopped meanwhile no longer needs moving, and a migration
that failed but whose VM left anyway is no reason to fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid5

from pydantic import BaseModel, Field

from domain import job_records
from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.errors import InvalidParameter, NotFound
from domain.host import Host, ResourceState
from domain.job import Job
from domain.job_records import JobTicket
from domain.job_requests import JobQueue, VmJobSubmission, handed_over
from domain.virtual_machine import VirtualMachine
from domain.vm_requests import MigrateVmRequest, VmOperation
from domain.zone import AllocationState

PREPARE_MAINTENANCE_JOB = "PrepareHostForMaintenance"
CANCEL_MAINTENANCE_JOB = "CancelHostMaintenance"
CHANGE_ALLOCATION_JOB = "ChangeAllocationState"
#: At most this many stopped VMs are unassigned by one maintenance job (the API reads them
#: from the listing; more than this is a host that needs a second look, not a bigger input).
MAX_STOPPED_VMS = 10_000


class HostMaintenanceRequest(BaseModel):
    job_id: UUID
    host_id: UUID
    account_id: UUID
    summary: str
    #: Stopped VMs whose last host this is (from the listing when the job was asked for): they
    #: forget it, so they start elsewhere. Each is checked again when the job runs.
    stopped_vm_ids: list[UUID] = Field(default_factory=list, max_length=MAX_STOPPED_VMS)


class CancelHostMaintenanceRequest(BaseModel):
    job_id: UUID
    host_id: UUID
    account_id: UUID
    summary: str


class AllocationStateRequest(BaseModel):
    """Enable or disable a host or a cluster for new VMs."""

    job_id: UUID
    account_id: UUID
    resource_type: str  # Host | Cluster
    resource_id: UUID
    allocation_state: str  # Enabled | Disabled
    summary: str


@dataclass(frozen=True)
class VmToMove:
    vm_id: UUID
    name: str
    account_id: UUID
    zone_id: UUID
    ha_enabled: bool


def _ticket(
    request: HostMaintenanceRequest | CancelHostMaintenanceRequest,
    job_type: str,
    zone_id: UUID | None,
    submitted_at: datetime,
) -> JobTicket:
    return JobTicket(
        job_id=request.job_id,
        job_type=job_type,
        account_id=request.account_id,
        resource_type="Host",
        resource_id=request.host_id,
        zone_id=zone_id,
        summary=request.summary,
        submitted_at=submitted_at,
    )


def find_host(cloud: Cloud, host_id: UUID) -> Host:
    host = cloud.find(Host, host_id)
    if host is None:
        raise NotFound(f"no host with id {host_id}", field="host_id")
    return host


# -- prepareHostForMaintenance ------------------------------------------------------------------
def begin_maintenance(cloud: Cloud, request: HostMaintenanceRequest, submitted_at: datetime) -> str:
    """Record the job and put the host in PrepareForMaintenance; answers the host's name."""

    def decide(d: Decision) -> str:
        host = d.find(Host, request.host_id)
        if host is None:
            raise NotFound(f"no host with id {request.host_id}", field="host_id")
        job = job_records.open_job(
            d, _ticket(request, PREPARE_MAINTENANCE_JOB, host.zone_id, submitted_at)
        )
        job.enter_step("preparing the host for maintenance", f"{request.job_id}/prepare")
        host.prepare_for_maintenance(request.job_id, f"{request.job_id}/prepare")
        return host.name

    return cloud.decide(decide)


def abandon_maintenance(cloud: Cloud, job_id: UUID, host_id: UUID) -> None:
    cloud.decide(lambda d: d.get(Host, host_id).abandon_maintenance(job_id, f"{job_id}/abandon"))


def unassign_stopped_vms(
    cloud: Cloud, job_id: UUID, host_id: UUID, vm_ids: list[UUID]
) -> list[UUID]:
    """Stopped VMs that still name this host as their last one forget it (each its own
    decision: one VM's concurrent change must not refuse the others). Answers which forgot."""
    forgotten: list[UUID] = []
    for vm_id in vm_ids:
        command = f"{job_id}/unassign/{vm_id}"

        def decide(d: Decision, vm_id: UUID = vm_id, command: str = command) -> bool:
            vm = d.find(VirtualMachine, vm_id)
            return vm is not None and vm.forget_last_host(host_id, command)

        if cloud.decide(decide):
            forgotten.append(vm_id)
    return forgotten


def vms_to_move(cloud: Cloud, host_id: UUID) -> list[VmToMove]:
    """The VMs that hold room on the host, HA-enabled ones first (then by name)."""
    host = cloud.load(Host, host_id)
    found: list[VmToMove] = []
    for vm_id in host.reservations:
        vm = cloud.find(VirtualMachine, UUID(vm_id))
        if vm is None:
            continue
        found.append(VmToMove(vm.id, vm.name, vm.account_id, vm.zone_id, vm.ha_enabled))
    return sorted(found, key=lambda v: (not v.ha_enabled, v.name, str(v.vm_id)))


def evacuation_job_id(job_id: UUID, vm_id: UUID, round_number: int) -> UUID:
    """The migrate job that moves one VM off the host in one round: the same on every retry
    of the step that submits it, so its queue recognises a repeat."""
    return uuid5(job_id, f"evacuate/{vm_id}/{round_number}")


def evacuation_of(
    job_id: UUID, host_name: str, vm: VmToMove, round_number: int
) -> tuple[JobQueue, VmJobSubmission]:
    """The migrate job (target chosen by the planner) for one VM, and the queue it joins."""
    migrate_id = evacuation_job_id(job_id, vm.vm_id, round_number)
    summary = f"Migrate VM {vm.name} off host {host_name} (maintenance)"
    request = MigrateVmRequest(
        job_id=migrate_id, vm_id=vm.vm_id, account_id=vm.account_id, summary=summary
    )
    return handed_over(
        request,
        VmOperation.MIGRATE.job_type,
        vm.zone_id,
        [
            f"**VM:** {vm.name} (`{vm.vm_id}`){' (HA)' if vm.ha_enabled else ''}",
            f"**Operation:** migrate off host {host_name}",
            f"**Asked by:** maintenance job `{job_id}`",
        ],
        f"maintenance/{job_id}/{round_number}",
    )


def ended_jobs(cloud: Cloud, job_ids: list[UUID]) -> dict[UUID, Job]:
    """The jobs among these whose end is recorded."""
    jobs = {job_id: cloud.find(Job, job_id) for job_id in job_ids}
    return {i: job for i, job in jobs.items() if job is not None and job.status.is_final}


def enter_step(cloud: Cloud, job_id: UUID, step: str, name: str) -> None:
    cloud.decide(lambda d: job_records.enter_step(d, job_id, step, name))


def complete_maintenance(cloud: Cloud, job_id: UUID, host_id: UUID) -> dict[str, str]:
    """Maintenance, and the job succeeds."""

    def decide(d: Decision) -> dict[str, str]:
        host = d.get(Host, host_id)
        host.enter_maintenance(job_id, f"{job_id}/maintenance")
        result = {
            "host_id": str(host.id),
            "name": host.name,
            "resource_state": host.resource_state.value,
        }
        return job_records.succeed(d, job_id, result)

    return cloud.decide(decide)


#: How many of the VMs' reasons a failed maintenance's error text names (all stay on the host).
REASONS_IN_ERROR_TEXT = 10


def maintenance_error_text(host_name: str, errors: list[str]) -> str:
    """The failed job's text: the first reasons, and how many more the host lists."""
    shown = "; ".join(errors[:REASONS_IN_ERROR_TEXT])
    more = len(errors) - REASONS_IN_ERROR_TEXT
    if more > 0:
        shown += f"; and {more} more (the host's maintenance_errors lists them all)"
    return f"host {host_name} is in ErrorInMaintenance: {shown}"


def fail_maintenance(cloud: Cloud, job_id: UUID, host_id: UUID, errors: list[str]) -> None:
    """ErrorInMaintenance, with the reasons (the job then fails with them)."""
    cloud.decide(lambda d: d.get(Host, host_id).fail_maintenance(job_id, errors, f"{job_id}/error"))


def fail_job(
    cloud: Cloud,
    request: HostMaintenanceRequest | CancelHostMaintenanceRequest,
    job_type: str,
    submitted_at: datetime,
    code: int,
    text: str,
    cancelled: bool,
) -> None:
    host = cloud.find(Host, request.host_id)
    zone_id = host.zone_id if host is not None else None
    ticket = _ticket(request, job_type, zone_id, submitted_at)
    cloud.decide(
        lambda d: job_records.end_unsuccessfully(d, ticket, code, text, cancelled=cancelled)
    )


# -- cancelHostMaintenance ----------------------------------------------------------------------
def begin_cancel(
    cloud: Cloud, request: CancelHostMaintenanceRequest, submitted_at: datetime
) -> UUID | None:
    """Record the job; answers the maintenance job still preparing the host (to be cancelled
    first), if there is one."""

    def decide(d: Decision) -> UUID | None:
        host = d.find(Host, request.host_id)
        if host is None:
            raise NotFound(f"no host with id {request.host_id}", field="host_id")
        job = job_records.open_job(
            d, _ticket(request, CANCEL_MAINTENANCE_JOB, host.zone_id, submitted_at)
        )
        job.enter_step("cancelling the maintenance", f"{request.job_id}/begin")
        check_may_cancel_maintenance(host, request.job_id)
        if host.resource_state is ResourceState.PREPARE_FOR_MAINTENANCE:
            return host.maintenance_job_id
        return None

    return cloud.decide(decide)


def check_may_cancel_maintenance(host: Host, job_id: UUID | None = None) -> None:
    if host.resource_state.in_maintenance:
        return
    if job_id is not None and host.has_applied(f"{job_id}/cancel"):
        return
    raise InvalidParameter(
        f"host {host.name} is {host.resource_state}, not in maintenance", field="host_id"
    )


def finish_cancel(cloud: Cloud, job_id: UUID, host_id: UUID) -> dict[str, str]:
    """Back in service (Enabled), and the job succeeds."""

    def decide(d: Decision) -> dict[str, str]:
        host = d.get(Host, host_id)
        host.cancel_maintenance(f"{job_id}/cancel")
        result = {
            "host_id": str(host.id),
            "name": host.name,
            "resource_state": host.resource_state.value,
        }
        return job_records.succeed(d, job_id, result)

    return cloud.decide(decide)


# -- allocation state ---------------------------------------------------------------------------
def check_allocation_state(value: str) -> str:
    if value not in (AllocationState.ENABLED.value, AllocationState.DISABLED.value):
        raise InvalidParameter(
            f"must be Enabled or Disabled, not {value!r}", field="allocation_state"
        )
    return value


def change_allocation_state(cloud: Cloud, request: AllocationStateRequest) -> dict[str, str]:
    """A host or a cluster takes new VMs (Enabled) or not (Disabled). Running VMs stay."""
    state = check_allocation_state(request.allocation_state)

    def decide(d: Decision) -> dict[str, str]:
        if request.resource_type == "Cluster":
            cluster = d.find(Cluster, request.resource_id)
            if cluster is None:
                raise NotFound(f"no cluster with id {request.resource_id}", field="cluster_id")
            cluster.change_allocation_state(state, f"{request.job_id}/allocation")
            return {
                "id": str(cluster.id),
                "name": cluster.name,
                "allocation_state": cluster.allocation_state.value,
            }
        host = d.find(Host, request.resource_id)
        if host is None:
            raise NotFound(f"no host with id {request.resource_id}", field="host_id")
        host.change_allocation_state(state, f"{request.job_id}/allocation")
        return {
            "id": str(host.id),
            "name": host.name,
            "allocation_state": host.resource_state.value,
        }

    return cloud.decide(decide)
