"""/v1/virtual-machines: deploy (a job) and list (the read model)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Response, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CurrentCaller
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import ApiError, forbidden, not_found
from api.job_submission import (
    describe,
    fingerprint,
    idempotency_conflict,
    job_id_for,
    queue_listing,
    queued_jobs,
    submit_to_vm_queue,
)
from api.models import (
    JobAccepted,
    Listing,
    VirtualMachineCreate,
    VirtualMachineDestroy,
    VirtualMachineMigrate,
    VirtualMachinePublic,
    VirtualMachineStop,
    VmJobPublic,
    VmSnapshotCreate,
    VmSnapshotPublic,
)
from api.reads import consistent_read, scoped_account
from domain.deployment import (
    JOB_TYPE,
    ValidatedDeployment,
    validate_deployment,
    virtual_machine_id_for,
)
from domain.errors import ErrorCode, IllegalStateTransition
from domain.job_requests import (
    DeploymentOrder,
    DeployVirtualMachineRequest,
    VirtualMachineOperationRequest,
    VmJobSubmission,
    VmOperation,
    vm_queue_id,
)
from domain.virtual_machine import VirtualMachine
from domain.vm_operations import (
    check_restore_template,
    check_service_offering_change,
    refusal_at_submission,
)
from domain.vm_snapshot import VmSnapshotState, vm_snapshot_id_for
from domain.zone import Zone

router = APIRouter(prefix="/v1/virtual-machines", tags=["virtual machines"])
TABLE = "virtual_machines"


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    summary="Deploy a virtual machine (a job)",
)
async def deploy_virtual_machine(
    body: VirtualMachineCreate,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobAccepted:
    account_id = body.account_id or caller.account_id
    if account_id != caller.account_id and not caller.is_admin:
        raise forbidden("only administrators deploy on behalf of another account")
    job_id = job_id_for(caller, idempotency_key)
    network_id = body.network_id
    if network_id is None:
        network_id = await run_in_threadpool(_default_network, services, body.zone_id)
    name = body.name or f"vm-{job_id.hex[:8]}"
    order = DeploymentOrder(
        account_id=account_id,
        zone_id=body.zone_id,
        service_offering_id=body.service_offering_id,
        template_id=body.template_id,
        network_id=network_id,
        name=name,
        display_name=body.display_name or name,
        root_disk_size_gib=body.root_disk_size_gib,
    )
    validated: ValidatedDeployment = await run_in_threadpool(
        validate_deployment, services.cloud, order
    )
    vm_id = virtual_machine_id_for(job_id)
    summary = (
        f"Deploy VM {name} ({validated.offering_name}, {validated.cpu_count} vCPU, "
        f"{validated.memory_mib} MiB) in zone {validated.zone_name}"
    )
    request_fingerprint = fingerprint(body)
    if idempotency_key is not None:
        description = await describe(services, job_id)
        if description is not None:
            memo = await description.memo()
            if memo.get("request_fingerprint") != request_fingerprint:
                raise idempotency_conflict()
            return _accepted(services, response, job_id, vm_id)
    # The deployment runs in the VM's queue, so an operation submitted meanwhile waits for it.
    await submit_to_vm_queue(
        services,
        vm_id,
        VmJobSubmission(
            job_id=job_id,
            job_type=JOB_TYPE,
            account_id=account_id,
            zone_id=body.zone_id,
            summary=summary,
            details=_details(order, vm_id, validated),
            fingerprint=request_fingerprint,
            deployment=DeployVirtualMachineRequest(job_id=job_id, order=order, summary=summary),
        ),
    )
    return _accepted(services, response, job_id, vm_id)


def _accepted(services: Services, response: Response, job_id: UUID, vm_id: UUID) -> JobAccepted:
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobAccepted(
        job_id=job_id,
        virtual_machine_id=vm_id,
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )


@router.get("", response_model=Listing[VirtualMachinePublic], summary="List virtual machines")
def list_virtual_machines(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    zone_id: UUID | None = None,
    state: str | None = None,
    account_id: UUID | None = None,
    host_id: UUID | None = Query(default=None, description="admins only"),
    include_removed: bool = Query(default=False, description="also list expunged VMs"),
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[VirtualMachinePublic]:
    consistent_read(services, TABLE, consistent, response)
    if host_id is not None and not caller.is_admin:
        raise forbidden("filtering by host is for administrators")
    filters = {
        "zone_id": zone_id,
        "state": state,
        "account_id": scoped_account(caller, account_id),
        "host_id": host_id,
        "is_removed": None if include_removed else False,
    }
    found = services.reads.page(TABLE, filters, limit=limit, cursor=cursor, page=page)
    return Listing[VirtualMachinePublic](
        data=[VirtualMachinePublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{vm_id}", response_model=VirtualMachinePublic, summary="Show a virtual machine")
def get_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> VirtualMachinePublic:
    consistent_read(services, TABLE, consistent, response)
    row = services.reads.get(TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    return VirtualMachinePublic(**row)


def _default_network(services: Services, zone_id: UUID) -> UUID:
    zone = services.cloud.find(Zone, zone_id)
    if zone is None:
        raise ApiError(
            422,
            f"no zone with id {zone_id}",
            code=ErrorCode.PARAM_ERROR,
            loc=("body", "zone_id"),
            kind="not_found",
        )
    if not zone.network_ids:
        raise ApiError(
            422,
            f"zone {zone.name} has no guest network; pass network_id",
            code=ErrorCode.PARAM_ERROR,
            loc=("body", "network_id"),
            kind="missing",
        )
    return zone.network_ids[0]


def _details(order: DeploymentOrder, vm_id: UUID, validated: ValidatedDeployment) -> str:
    return "\n".join(
        [
            f"**VM:** {order.name} (`{vm_id}`)",
            f"**Account:** `{order.account_id}`",
            f"**Zone:** {validated.zone_name} (`{order.zone_id}`)",
            f"**Offering:** {validated.offering_name} (`{order.service_offering_id}`)",
            f"**Template:** `{order.template_id}` ({validated.hypervisor})",
            f"**Network:** `{order.network_id}`",
            f"**Root disk:** {validated.root_disk_bytes / 1024**3:.1f} GiB",
        ]
    )


# -- operations on a VM: each a job in the VM's queue ------------------------------------------
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


async def _operate(
    services: Services,
    caller: Caller,
    vm_id: UUID,
    operation: VmOperation,
    body: BaseModel | None,
    response: Response,
    idempotency_key: str | None,
    *,
    forced: bool = False,
    expunge: bool = False,
    host_id: UUID | None = None,
    snapshot_id: UUID | None = None,
    snapshot_name: str | None = None,
    memory: bool = False,
    service_offering_id: UUID | None = None,
    template_id: UUID | None = None,
) -> JobAccepted:
    row = await run_in_threadpool(services.reads.get, TABLE, vm_id)
    if row is None:  # just registered by its deployment? read our writes once
        await run_in_threadpool(
            services.reads.wait_until_current, TABLE, services.consistency_timeout
        )
        row = await run_in_threadpool(services.reads.get, TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    refusal = refusal_at_submission(
        row["state"], bool(row.get("is_removed")), operation, row["name"]
    )
    if refusal is not None:
        raise refusal
    if operation in (VmOperation.CHANGE_SERVICE_OFFERING, VmOperation.RESTORE):
        await run_in_threadpool(
            _check_inputs, services, vm_id, operation, service_offering_id, template_id
        )
    job_id = job_id_for(caller, idempotency_key)
    what = operation.value + (" (forced)" if forced else "") + (" and expunge" if expunge else "")
    what += f" to host {host_id}" if host_id is not None else ""
    summary = f"{what.capitalize()} VM {row['name']}"
    if operation is VmOperation.SNAPSHOT:
        snapshot_id = vm_snapshot_id_for(job_id)
        snapshot_name = snapshot_name or f"{row['name']}-snapshot-{job_id.hex[:8]}"
        what = f"snapshot{' with memory' if memory else ' (disks only)'} {snapshot_name}"
        summary = f"Snapshot VM {row['name']} as {snapshot_name}"
    elif snapshot_id is not None:
        what = f"{operation.value} VM {row['name']}: snapshot {snapshot_id}"
        summary = what[0].upper() + what[1:]
    request = VirtualMachineOperationRequest(
        job_id=job_id,
        vm_id=vm_id,
        operation=operation,
        account_id=row["account_id"],
        summary=summary,
        forced=forced,
        expunge=expunge,
        expunge_delay_seconds=services.expunge_delay_seconds,
        host_id=host_id,
        snapshot_id=snapshot_id,
        snapshot_name=snapshot_name,
        memory=memory,
        service_offering_id=service_offering_id,
        template_id=template_id,
    )
    accepted = await submit_to_vm_queue(
        services,
        vm_id,
        VmJobSubmission(
            job_id=job_id,
            job_type=operation.job_type,
            account_id=row["account_id"],
            zone_id=row["zone_id"],
            summary=summary,
            details="\n".join(
                [
                    f"**VM:** {row['name']} (`{vm_id}`)",
                    f"**Operation:** {what}",
                    f"**Asked by:** {caller.name} (`{caller.account_id}`)",
                    f"**State when asked:** {row['state']}",
                ]
            ),
            fingerprint=fingerprint(body) if body is not None else operation.value,
            operation=request,
        ),
    )
    accepted_response = _accepted(services, response, accepted.job_id, vm_id)
    if operation is VmOperation.SNAPSHOT:
        accepted_response.vm_snapshot_id = vm_snapshot_id_for(accepted.job_id)
    return accepted_response


def _check_inputs(
    services: Services,
    vm_id: UUID,
    operation: VmOperation,
    service_offering_id: UUID | None,
    template_id: UUID | None,
) -> None:
    """Refuse at submission an offering or template the job would refuse (4xx naming the
    field); the job checks again when its turn comes."""
    vm = services.cloud.find(VirtualMachine, vm_id)
    if vm is None:
        return  # still being registered by its deployment: the job checks at run time
    if operation is VmOperation.CHANGE_SERVICE_OFFERING:
        check_service_offering_change(services.cloud, vm, service_offering_id)
    else:
        check_restore_template(services.cloud, vm, template_id)


_ACCEPTED: dict[str, Any] = {"status_code": status.HTTP_202_ACCEPTED, "response_model": JobAccepted}


@router.post("/{vm_id}/start", summary="Start a stopped VM (a job)", **_ACCEPTED)
async def start_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    return await _operate(
        services, caller, vm_id, VmOperation.START, None, response, idempotency_key
    )


@router.post("/{vm_id}/stop", summary="Stop a running VM (a job)", **_ACCEPTED)
async def stop_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    body: VirtualMachineStop | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    body = body or VirtualMachineStop()
    return await _operate(
        services,
        caller,
        vm_id,
        VmOperation.STOP,
        body,
        response,
        idempotency_key,
        forced=body.forced,
    )


@router.post("/{vm_id}/reboot", summary="Reboot a running VM (a job)", **_ACCEPTED)
async def reboot_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    return await _operate(
        services, caller, vm_id, VmOperation.REBOOT, None, response, idempotency_key
    )


@router.post(
    "/{vm_id}/destroy",
    summary="Destroy a VM (a job): recoverable until expunged after the delay",
    **_ACCEPTED,
)
async def destroy_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    body: VirtualMachineDestroy | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    body = body or VirtualMachineDestroy()
    return await _operate(
        services,
        caller,
        vm_id,
        VmOperation.DESTROY,
        body,
        response,
        idempotency_key,
        forced=body.forced,
        expunge=body.expunge,
    )


@router.post("/{vm_id}/recover", summary="Recover a destroyed VM (a job)", **_ACCEPTED)
async def recover_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    return await _operate(
        services, caller, vm_id, VmOperation.RECOVER, None, response, idempotency_key
    )


@router.post("/{vm_id}/expunge", summary="Expunge a destroyed VM now (a job)", **_ACCEPTED)
async def expunge_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    return await _operate(
        services, caller, vm_id, VmOperation.EXPUNGE, None, response, idempotency_key
    )


@router.post(
    "/{vm_id}/migrate",
    summary="Live-migrate a running VM to another host of its cluster (a job; administrators)",
    **_ACCEPTED,
)
async def migrate_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    body: VirtualMachineMigrate | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    # CloudStack's migrateVirtualMachine is an admin command: users never see hosts.
    if not caller.is_admin:
        raise forbidden("only administrators migrate virtual machines")
    body = body or VirtualMachineMigrate()
    return await _operate(
        services,
        caller,
        vm_id,
        VmOperation.MIGRATE,
        body,
        response,
        idempotency_key,
        host_id=body.host_id,
    )


class VirtualMachineChangeServiceOffering(BaseModel):
    """changeServiceForVirtualMachine / scaleVirtualMachine of a stopped VM."""

    service_offering_id: UUID


class VirtualMachineRestore(BaseModel):
    """restoreVirtualMachine: the template of the new root volume (default: the VM's own)."""

    template_id: UUID | None = None


@router.post(
    "/{vm_id}/change-service-offering",
    summary="Give a stopped VM another service offering (a job)",
    **_ACCEPTED,
)
async def change_service_offering(
    vm_id: UUID,
    body: VirtualMachineChangeServiceOffering,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    return await _operate(
        services,
        caller,
        vm_id,
        VmOperation.CHANGE_SERVICE_OFFERING,
        body,
        response,
        idempotency_key,
        service_offering_id=body.service_offering_id,
    )


@router.post(
    "/{vm_id}/restore",
    summary="Reset a VM's root volume to a template (a job); a running VM runs again after",
    **_ACCEPTED,
)
async def restore_virtual_machine(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    body: VirtualMachineRestore | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    body = body or VirtualMachineRestore()
    return await _operate(
        services,
        caller,
        vm_id,
        VmOperation.RESTORE,
        body,
        response,
        idempotency_key,
        template_id=body.template_id,
    )


# -- VM snapshots: created, reverted to and deleted as jobs in the VM's queue ------------------
SNAPSHOTS_TABLE = "vm_snapshots"


@router.post(
    "/{vm_id}/snapshots",
    summary="Snapshot a running VM, with its memory if asked (a job)",
    **_ACCEPTED,
)
async def create_vm_snapshot(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    body: VmSnapshotCreate | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    body = body or VmSnapshotCreate()
    return await _operate(
        services,
        caller,
        vm_id,
        VmOperation.SNAPSHOT,
        body,
        response,
        idempotency_key,
        snapshot_name=body.name,
        memory=body.memory,
    )


@router.get(
    "/{vm_id}/snapshots",
    response_model=Listing[VmSnapshotPublic],
    summary="The VM's snapshots (listVMSnapshot)",
)
def list_vm_snapshots(
    vm_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    state: str | None = None,
    include_removed: bool = Query(default=False, description="also list deleted snapshots"),
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[VmSnapshotPublic]:
    consistent_read(services, SNAPSHOTS_TABLE, consistent, response)
    row = services.reads.get(TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    filters = {
        "vm_id": vm_id,
        "state": state,
        "is_removed": None if include_removed else False,
    }
    found = services.reads.page(SNAPSHOTS_TABLE, filters, limit=limit, cursor=cursor, page=page)
    return Listing[VmSnapshotPublic](
        data=[VmSnapshotPublic(**r) for r in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


async def _snapshot_job(
    services: Services,
    caller: Caller,
    vm_id: UUID,
    snapshot_id: UUID,
    operation: VmOperation,
    allowed: frozenset[VmSnapshotState],
    response: Response,
    idempotency_key: str | None,
) -> JobAccepted:
    """Revert to or delete a snapshot: refused at once when the listing shows it cannot be."""
    snapshot = await run_in_threadpool(services.reads.get, SNAPSHOTS_TABLE, snapshot_id)
    if snapshot is None:  # just made? read our writes once
        await run_in_threadpool(
            services.reads.wait_until_current, SNAPSHOTS_TABLE, services.consistency_timeout
        )
        snapshot = await run_in_threadpool(services.reads.get, SNAPSHOTS_TABLE, snapshot_id)
    if (
        snapshot is None
        or snapshot["vm_id"] != vm_id
        or snapshot["is_removed"]
        or not caller.may_see(snapshot["account_id"])
    ):
        raise not_found(f"snapshot {snapshot_id} of virtual machine {vm_id}", ("path", "sid"))
    if snapshot["state"] not in {s.value for s in allowed}:
        raise IllegalStateTransition(
            f"cannot {operation.value} VM snapshot {snapshot['name']} in state "
            f"{snapshot['state']} (it must be {' or '.join(sorted(allowed))})"
        )
    return await _operate(
        services,
        caller,
        vm_id,
        operation,
        None,
        response,
        idempotency_key,
        snapshot_id=snapshot_id,
    )


@router.post(
    "/{vm_id}/snapshots/{sid}/revert",
    summary="Revert a running VM to a snapshot (a job): Running with memory, else Stopped",
    **_ACCEPTED,
)
async def revert_to_vm_snapshot(
    vm_id: UUID,
    sid: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    return await _snapshot_job(
        services,
        caller,
        vm_id,
        sid,
        VmOperation.REVERT_TO_SNAPSHOT,
        frozenset({VmSnapshotState.READY}),
        response,
        idempotency_key,
    )


@router.delete("/{vm_id}/snapshots/{sid}", summary="Delete a VM snapshot (a job)", **_ACCEPTED)
async def delete_vm_snapshot(
    vm_id: UUID,
    sid: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    return await _snapshot_job(
        services,
        caller,
        vm_id,
        sid,
        VmOperation.DELETE_SNAPSHOT,
        frozenset({VmSnapshotState.READY, VmSnapshotState.ERROR}),
        response,
        idempotency_key,
    )


@router.get(
    "/{vm_id}/jobs",
    response_model=Listing[VmJobPublic],
    summary="The VM's running job and its queued jobs, in the order they run",
)
async def list_virtual_machine_jobs(
    vm_id: UUID, caller: CurrentCaller, services: Services
) -> Listing[VmJobPublic]:
    row = await run_in_threadpool(services.reads.get, TABLE, vm_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"virtual machine {vm_id}", ("path", "vm_id"))
    return queue_listing(await queued_jobs(services, vm_queue_id(vm_id)))
