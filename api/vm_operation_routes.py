"""The operations on an existing VM, as the API offers them: one row of VM_OPERATIONS each (its
path, body, OpenAPI summary, and how its job's input is built), all submitted by one path
(`submit_vm_operation`): refuse what the read models already show cannot be done (4xx), build
the operation's own job input (domain/vm_requests.py), and hand it to the VM's queue.

/v1/virtual-machines registers them (api/routers/virtual_machines.py) through api/job_routes.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict, TypeVar
from uuid import UUID

from fastapi import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import Caller
from api.errors import forbidden, not_found
from api.job_routes import JobCall, JobRoute
from api.job_submission import fingerprint, job_id_for, submit_to_queue
from api.models import (
    JobAccepted,
    VirtualMachineChangeServiceOffering,
    VirtualMachineDestroy,
    VirtualMachineMigrate,
    VirtualMachineRestore,
    VirtualMachineStop,
    VmSnapshotCreate,
)
from api.resource_usage import check_account_limits
from api.services import CloudServices
from domain.catalog import ServiceOffering
from domain.cloud import Cloud
from domain.errors import IllegalStateTransition
from domain.job_requests import JobQueue, VmJobSubmission
from domain.resource_limits import ResourceType
from domain.virtual_machine import VirtualMachine
from domain.vm_operations import (
    check_restore_template,
    check_service_offering_change,
    refusal_at_submission,
)
from domain.vm_requests import (
    ChangeServiceOfferingRequest,
    DeleteVmSnapshotRequest,
    DestroyVmRequest,
    ExpungeVmRequest,
    MigrateVmRequest,
    RebootVmRequest,
    RecoverVmRequest,
    RestoreVmRequest,
    RevertToVmSnapshotRequest,
    SnapshotVmRequest,
    StartVmRequest,
    StopVmRequest,
    VmOperation,
    VmOperationRequest,
)
from domain.vm_snapshot import VmSnapshotState, vm_snapshot_id_for

B = TypeVar("B", bound=BaseModel | None)
VM_TABLE = "virtual_machines"
VM_SNAPSHOTS_TABLE = "vm_snapshots"


def vm_job_accepted(
    services: CloudServices, response: Response, job_id: UUID, vm_id: UUID
) -> JobAccepted:
    """The 202 of a VM job (a deployment too): where to follow it, and its VM."""
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobAccepted(
        job_id=job_id,
        virtual_machine_id=vm_id,
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )


class VmJobFields(TypedDict):
    """The fields every VM job's input has (`domain.vm_requests.VmRequest`'s own)."""

    job_id: UUID
    vm_id: UUID
    account_id: UUID
    summary: str


@dataclass(frozen=True)
class VmJobDraft:
    """What a VM operation's route knows before it builds the job's input."""

    job_id: UUID
    vm_id: UUID
    account_id: UUID
    vm_name: str
    expunge_delay_seconds: int
    #: The VM snapshot the path names (revert to it, delete it).
    snapshot_id: UUID | None = None

    def fields(self, what: str, *, summary: str | None = None) -> VmJobFields:
        """The job's own fields; its summary says `what` is done to the VM, unless given."""
        return VmJobFields(
            job_id=self.job_id,
            vm_id=self.vm_id,
            account_id=self.account_id,
            summary=summary or f"{what.capitalize()} VM {self.vm_name}",
        )

    @property
    def named_snapshot(self) -> UUID:
        if self.snapshot_id is None:
            raise ValueError("this operation's path names no snapshot")
        return self.snapshot_id


class Asked(NamedTuple):
    """A VM operation as its route understood it: the job's input, and the operation in words
    (as the job's details in the Temporal UI say it)."""

    request: VmOperationRequest
    what: str


@dataclass(frozen=True, kw_only=True)
class VmOperationRoute(JobRoute[B]):
    """One row of VM_OPERATIONS: a VM operation offered as a job in the VM's queue."""

    operation: VmOperation
    #: How the job's input is built from what the route knows and the body.
    asks: Callable[[VmJobDraft, B], Asked]
    #: A check of the body against the VM at submission (the job checks again at its turn),
    #: refusing with a 4xx naming the field.
    check: Callable[[Cloud, VirtualMachine, B], object] | None = None
    #: Why a user may not: the operation is for administrators only.
    for_administrators: str | None = None
    #: The states the snapshot the path names must be in.
    snapshot_states: frozenset[VmSnapshotState] = frozenset()


NothingButTheVm = type[StartVmRequest | RebootVmRequest | RecoverVmRequest | ExpungeVmRequest]


def _nothing_but_the_vm(model: NothingButTheVm, what: str) -> Callable[[VmJobDraft, None], Asked]:
    def asks(job: VmJobDraft, _: None) -> Asked:
        return Asked(model(**job.fields(what)), what)

    return asks


def _stop(job: VmJobDraft, body: VirtualMachineStop) -> Asked:
    what = "stop" + (" (forced)" if body.forced else "")
    return Asked(StopVmRequest(**job.fields(what), forced=body.forced), what)


def _destroy(job: VmJobDraft, body: VirtualMachineDestroy) -> Asked:
    what = (
        "destroy" + (" (forced)" if body.forced else "") + (" and expunge" if body.expunge else "")
    )
    request = DestroyVmRequest(
        **job.fields(what),
        forced=body.forced,
        expunge=body.expunge,
        expunge_delay_seconds=job.expunge_delay_seconds,
    )
    return Asked(request, what)


def _migrate(job: VmJobDraft, body: VirtualMachineMigrate) -> Asked:
    what = "migrate" + (f" to host {body.host_id}" if body.host_id is not None else "")
    return Asked(MigrateVmRequest(**job.fields(what), host_id=body.host_id), what)


def _change_service_offering(job: VmJobDraft, body: VirtualMachineChangeServiceOffering) -> Asked:
    what = VmOperation.CHANGE_SERVICE_OFFERING.value
    request = ChangeServiceOfferingRequest(
        **job.fields(what), service_offering_id=body.service_offering_id
    )
    return Asked(request, what)


def _restore(job: VmJobDraft, body: VirtualMachineRestore) -> Asked:
    what = VmOperation.RESTORE.value
    return Asked(RestoreVmRequest(**job.fields(what), template_id=body.template_id), what)


def _snapshot(job: VmJobDraft, body: VmSnapshotCreate) -> Asked:
    """createVMSnapshot: the snapshot's id derives from the job's, so the 202 can name it."""
    name = body.name or f"{job.vm_name}-snapshot-{job.job_id.hex[:8]}"
    what = f"snapshot{' with memory' if body.memory else ' (disks only)'} {name}"
    request = SnapshotVmRequest(
        **job.fields(what, summary=f"Snapshot VM {job.vm_name} as {name}"),
        snapshot_id=vm_snapshot_id_for(job.job_id),
        snapshot_name=name,
        memory=body.memory,
    )
    return Asked(request, what)


def _on_the_snapshot(
    model: type[RevertToVmSnapshotRequest | DeleteVmSnapshotRequest], operation: VmOperation
) -> Callable[[VmJobDraft, None], Asked]:
    def asks(job: VmJobDraft, _: None) -> Asked:
        what = f"{operation.value} VM {job.vm_name}: snapshot {job.named_snapshot}"
        fields = job.fields(what, summary=what[0].upper() + what[1:])
        return Asked(model(**fields, snapshot_id=job.named_snapshot), what)

    return asks


VM_OPERATIONS: tuple[VmOperationRoute[Any], ...] = (
    VmOperationRoute(
        path="/{vm_id}/start",
        summary="Start a stopped VM (a job)",
        name="start_virtual_machine",
        operation=VmOperation.START,
        asks=_nothing_but_the_vm(StartVmRequest, "start"),
    ),
    VmOperationRoute(
        path="/{vm_id}/stop",
        summary="Stop a running VM (a job)",
        name="stop_virtual_machine",
        operation=VmOperation.STOP,
        body=VirtualMachineStop,
        asks=_stop,
    ),
    VmOperationRoute(
        path="/{vm_id}/reboot",
        summary="Reboot a running VM (a job)",
        name="reboot_virtual_machine",
        operation=VmOperation.REBOOT,
        asks=_nothing_but_the_vm(RebootVmRequest, "reboot"),
    ),
    VmOperationRoute(
        path="/{vm_id}/destroy",
        summary="Destroy a VM (a job): recoverable until expunged after the delay",
        name="destroy_virtual_machine",
        operation=VmOperation.DESTROY,
        body=VirtualMachineDestroy,
        asks=_destroy,
    ),
    VmOperationRoute(
        path="/{vm_id}/recover",
        summary="Recover a destroyed VM (a job)",
        name="recover_virtual_machine",
        operation=VmOperation.RECOVER,
        asks=_nothing_but_the_vm(RecoverVmRequest, "recover"),
    ),
    VmOperationRoute(
        path="/{vm_id}/expunge",
        summary="Expunge a destroyed VM now (a job)",
        name="expunge_virtual_machine",
        operation=VmOperation.EXPUNGE,
        asks=_nothing_but_the_vm(ExpungeVmRequest, "expunge"),
    ),
    VmOperationRoute(
        path="/{vm_id}/migrate",
        summary="Live-migrate a running VM to another host, with its disks when the host is in "
        "another cluster (a job; administrators)",
        name="migrate_virtual_machine",
        operation=VmOperation.MIGRATE,
        body=VirtualMachineMigrate,
        asks=_migrate,
        # CloudStack's migrateVirtualMachine is an admin command: users never see hosts.
        for_administrators="only administrators migrate virtual machines",
    ),
    VmOperationRoute(
        path="/{vm_id}/change-service-offering",
        summary="Give a stopped VM another service offering (a job)",
        name="change_service_offering",
        operation=VmOperation.CHANGE_SERVICE_OFFERING,
        body=VirtualMachineChangeServiceOffering,
        body_required=True,
        asks=_change_service_offering,
        check=lambda cloud, vm, body: check_service_offering_change(
            cloud, vm, body.service_offering_id
        ),
    ),
    VmOperationRoute(
        path="/{vm_id}/restore",
        summary="Reset a VM's root volume to a template (a job); a running VM runs again after",
        name="restore_virtual_machine",
        operation=VmOperation.RESTORE,
        body=VirtualMachineRestore,
        asks=_restore,
        check=lambda cloud, vm, body: check_restore_template(cloud, vm, body.template_id),
    ),
    VmOperationRoute(
        path="/{vm_id}/snapshots",
        summary="Snapshot a running VM, with its memory if asked (a job)",
        name="create_vm_snapshot",
        operation=VmOperation.SNAPSHOT,
        body=VmSnapshotCreate,
        asks=_snapshot,
    ),
    VmOperationRoute(
        path="/{vm_id}/snapshots/{sid}/revert",
        summary="Revert a running VM to a snapshot (a job): Running with memory, else Stopped",
        name="revert_to_vm_snapshot",
        operation=VmOperation.REVERT_TO_SNAPSHOT,
        asks=_on_the_snapshot(RevertToVmSnapshotRequest, VmOperation.REVERT_TO_SNAPSHOT),
        snapshot_states=frozenset({VmSnapshotState.READY}),
    ),
    VmOperationRoute(
        path="/{vm_id}/snapshots/{sid}",
        method="DELETE",
        summary="Delete a VM snapshot (a job)",
        name="delete_vm_snapshot",
        operation=VmOperation.DELETE_SNAPSHOT,
        asks=_on_the_snapshot(DeleteVmSnapshotRequest, VmOperation.DELETE_SNAPSHOT),
        snapshot_states=frozenset({VmSnapshotState.READY, VmSnapshotState.ERROR}),
    ),
)


def _resources_wanted(
    services: CloudServices, operation: VmOperation, row: dict[str, Any], body: Any
) -> dict[ResourceType, int]:
    """What an operation takes on top of what the VM holds: a recovered VM counts again; a
    new offering counts its difference."""
    if operation is VmOperation.RECOVER:
        return {
            ResourceType.USER_VM: 1,
            ResourceType.CPU: row["cpu_count"],
            ResourceType.MEMORY: row["memory_mib"],
        }
    if operation is VmOperation.CHANGE_SERVICE_OFFERING and body is not None:
        offering = services.cloud.find(ServiceOffering, body.service_offering_id)
        if offering is not None:
            return {
                ResourceType.CPU: offering.cpu_count - row["cpu_count"],
                ResourceType.MEMORY: offering.memory_mib - row["memory_mib"],
            }
    return {}


async def submit_vm_operation(route: VmOperationRoute[B], call: JobCall[B]) -> JobAccepted:
    """Every VM operation's submission: refuse what the read models already show cannot be
    done (4xx), build the job's input, and hand it to the VM's queue."""
    services, caller, vm_id = call.services, call.caller, call.ids["vm_id"]
    if route.for_administrators is not None and not caller.is_admin:
        raise forbidden(route.for_administrators)
    snapshot_id = call.ids.get("sid")
    if snapshot_id is not None:
        await _check_snapshot(services, caller, vm_id, snapshot_id, route)
    row = await _vm_row(services, caller, vm_id)
    refusal = refusal_at_submission(
        row["state"], bool(row.get("is_removed")), route.operation, row["name"]
    )
    if refusal is not None:
        raise refusal
    if route.check is not None:
        await run_in_threadpool(_check_inputs, services, vm_id, route.check, call.body)
    wanted = await run_in_threadpool(_resources_wanted, services, route.operation, row, call.body)
    if wanted:
        await run_in_threadpool(check_account_limits, services, row["account_id"], wanted)
    draft = VmJobDraft(
        job_id=job_id_for(caller, call.idempotency_key),
        vm_id=vm_id,
        account_id=row["account_id"],
        vm_name=row["name"],
        expunge_delay_seconds=services.expunge_delay_seconds,
        snapshot_id=snapshot_id,
    )
    asked = route.asks(draft, call.body)
    job_id = await submit_to_queue(
        services,
        JobQueue.of_vm(vm_id, row["account_id"], row["zone_id"]),
        VmJobSubmission(
            job_id=draft.job_id,
            job_type=route.operation.job_type,
            account_id=row["account_id"],
            zone_id=row["zone_id"],
            summary=asked.request.summary,
            details="\n".join(
                [
                    f"**VM:** {row['name']} (`{vm_id}`)",
                    f"**Operation:** {asked.what}",
                    f"**Asked by:** {caller.name} (`{caller.account_id}`)",
                    f"**State when asked:** {row['state']}",
                ]
            ),
            fingerprint=(
                fingerprint(call.body) if call.body is not None else route.operation.value
            ),
            operation=asked.request,
        ),
    )
    accepted = vm_job_accepted(services, call.response, job_id, vm_id)
    if isinstance(asked.request, SnapshotVmRequest):
        accepted.vm_snapshot_id = vm_snapshot_id_for(job_id)
    return accepted


async def _vm_row(services: CloudServices, caller: Caller, vm_id: UUID) -> dict[str, Any]:
    row = await run_in_threadpool(services.reads.get, VM_TABLE, vm_id)
    if row is None:  # just registered by its deployment? read our writes once
        await run_in_threadpool(
            services.reads.wait_until_current, VM_TABLE, services.consistency_timeout
        )
        row = await run_in_threadpool(services.reads.get, VM_TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    return row


async def _check_snapshot(
    services: CloudServices,
    caller: Caller,
    vm_id: UUID,
    snapshot_id: UUID,
    route: VmOperationRoute[Any],
) -> None:
    """Revert to or delete a snapshot: refused at once when the listing shows it cannot be."""
    snapshot = await run_in_threadpool(services.reads.get, VM_SNAPSHOTS_TABLE, snapshot_id)
    if snapshot is None:  # just made? read our writes once
        await run_in_threadpool(
            services.reads.wait_until_current, VM_SNAPSHOTS_TABLE, services.consistency_timeout
        )
        snapshot = await run_in_threadpool(services.reads.get, VM_SNAPSHOTS_TABLE, snapshot_id)
    if (
        snapshot is None
        or snapshot["vm_id"] != vm_id
        or snapshot["is_removed"]
        or not caller.may_see(snapshot["account_id"])
    ):
        raise not_found(f"snapshot {snapshot_id} of virtual machine {vm_id}", ("path", "sid"))
    allowed = route.snapshot_states
    if snapshot["state"] not in {s.value for s in allowed}:
        raise IllegalStateTransition(
            f"cannot {route.operation.value} VM snapshot {snapshot['name']} in state "
            f"{snapshot['state']} (it must be {' or '.join(sorted(allowed))})"
        )


def _check_inputs(
    services: CloudServices,
    vm_id: UUID,
    check: Callable[[Cloud, VirtualMachine, B], object],
    body: B,
) -> None:
    """Refuse at submission an offering or template the job would refuse (4xx naming the
    field); the job checks again when its turn comes."""
    vm = services.cloud.find(VirtualMachine, vm_id)
    if vm is None:
        return  # still being registered by its deployment: the job checks at run time
    check(services.cloud, vm, body)


def submission_of(
    route: VmOperationRoute[B],
) -> Callable[[JobCall[B]], Awaitable[JobAccepted]]:
    async def submit(call: JobCall[B]) -> JobAccepted:
        return await submit_vm_operation(route, call)

    return submit
