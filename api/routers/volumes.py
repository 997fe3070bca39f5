"""/v1/volumes: listing volumes (listVolumes) and operating on them, each operation a job
(createVolume, attachVolume, detachVolume, resizeVolume, migrateVolume, deleteVolume).

A volume's jobs are serialized with its VM while it is attached (they join the VM's queue,
`vm/<vm_id>`, like the VM's own operations) and through the volume's own queue
(`volume/<volume_id>`, the same queue workflow) while it is detached. An attach joins the VM's
queue: it is the VM whose state and devices it changes. What the read models already show to be
impossible is refused here with a 4xx; what only shows at run time fails the job (431/536).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Response, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)

from api.auth import Caller, CurrentCaller
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import ApiError, not_found
from api.job_submission import (
    fingerprint,
    idempotency_conflict,
    job_id_for,
    queue_listing,
    queued_jobs,
    submit_to_vm_queue,
)
from api.models import (
    Listing,
    VmJobPublic,
    VolumeAttach,
    VolumeCreate,
    VolumeJobAccepted,
    VolumeMigrate,
    VolumePublic,
    VolumeResize,
)
from api.reads import consistent_read, scoped_account
from api.services import CloudServices
from domain.catalog import GIB
from domain.errors import ErrorCode, IllegalStateTransition
from domain.job_requests import (
    VM_QUEUE_WORKFLOW,
    VOLUME_RESOURCE,
    JobAttribute,
    VmJobAccepted,
    VmJobSubmission,
    VmQueueState,
    VolumeCreation,
    VolumeOperation,
    VolumeOperationRequest,
    vm_queue_id,
    volume_queue_id,
)
from domain.volume_operations import refusal_at_submission, validate_creation, volume_id_for

router = APIRouter(prefix="/v1/volumes", tags=["volumes"])
TABLE = "volumes"


@router.get("", response_model=Listing[VolumePublic], summary="List volumes")
def list_volumes(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    zone_id: UUID | None = None,
    vm_id: UUID | None = None,
    state: str | None = None,
    account_id: UUID | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[VolumePublic]:
    consistent_read(services, TABLE, consistent, response)
    filters = {
        "zone_id": zone_id,
        "vm_id": vm_id,
        "state": state,
        "account_id": scoped_account(caller, account_id),
    }
    found = services.reads.page(TABLE, filters, limit=limit, cursor=cursor, page=page)
    return Listing[VolumePublic](
        data=[VolumePublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{volume_id}", response_model=VolumePublic, summary="Show a volume")
def get_volume(
    volume_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> VolumePublic:
    consistent_read(services, TABLE, consistent, response)
    row = services.reads.get(TABLE, volume_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"volume {volume_id}", ("path", "volume_id"))
    return VolumePublic(**row)


# -- operations: each a job in the volume's (or its VM's) queue -------------------------------
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
VM_TABLE = "virtual_machines"
_ACCEPTED: dict[str, Any] = {
    "status_code": status.HTTP_202_ACCEPTED,
    "response_model": VolumeJobAccepted,
}


@router.post("", summary="Create a data volume from a disk offering (a job)", **_ACCEPTED)
async def create_volume(
    body: VolumeCreate,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> VolumeJobAccepted:
    size = body.size_gib * GIB if body.size_gib is not None else None
    offering, size_bytes = await run_in_threadpool(
        validate_creation, services.cloud, body.zone_id, body.disk_offering_id, size
    )
    job_id = job_id_for(caller, idempotency_key)
    volume_id = volume_id_for(job_id)
    summary = f"Create volume {body.name} ({size_bytes // GIB} GiB, {offering.name})"
    request = VolumeOperationRequest(
        job_id=job_id,
        volume_id=volume_id,
        operation=VolumeOperation.CREATE,
        account_id=caller.account_id,
        summary=summary,
        creation=VolumeCreation(
            name=body.name,
            zone_id=body.zone_id,
            disk_offering_id=body.disk_offering_id,
            size_bytes=size_bytes,
        ),
    )
    details = [
        f"**Volume:** {body.name} (`{volume_id}`)",
        f"**Disk offering:** {offering.name}",
        f"**Size:** {size_bytes} bytes (made on primary storage when first attached)",
        f"**Asked by:** {caller.name} (`{caller.account_id}`)",
    ]
    accepted = await _submit(services, None, volume_id, body.zone_id, request, body, details)
    return _accepted(services, response, accepted.job_id, volume_id)


@router.post("/{volume_id}/attach", summary="Attach a volume to a VM (a job)", **_ACCEPTED)
async def attach_volume(
    volume_id: UUID,
    body: VolumeAttach,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> VolumeJobAccepted:
    return await _operate(
        services, caller, volume_id, VolumeOperation.ATTACH, body, response, idempotency_key
    )


@router.post("/{volume_id}/detach", summary="Detach a volume from its VM (a job)", **_ACCEPTED)
async def detach_volume(
    volume_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> VolumeJobAccepted:
    return await _operate(
        services, caller, volume_id, VolumeOperation.DETACH, None, response, idempotency_key
    )


@router.post("/{volume_id}/resize", summary="Resize a volume (a job)", **_ACCEPTED)
async def resize_volume(
    volume_id: UUID,
    body: VolumeResize,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> VolumeJobAccepted:
    return await _operate(
        services, caller, volume_id, VolumeOperation.RESIZE, body, response, idempotency_key
    )


@router.post(
    "/{volume_id}/migrate",
    summary="Move a volume to another primary storage pool (a job)",
    **_ACCEPTED,
)
async def migrate_volume(
    volume_id: UUID,
    body: VolumeMigrate,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> VolumeJobAccepted:
    return await _operate(
        services, caller, volume_id, VolumeOperation.MIGRATE, body, response, idempotency_key
    )


@router.delete("/{volume_id}", summary="Delete a detached volume (a job)", **_ACCEPTED)
async def delete_volume(
    volume_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> VolumeJobAccepted:
    return await _operate(
        services, caller, volume_id, VolumeOperation.DELETE, None, response, idempotency_key
    )


@router.get(
    "/{volume_id}/jobs",
    response_model=Listing[VmJobPublic],
    summary="The queue the volume's jobs run in (its VM's while attached): running job first",
)
async def list_volume_jobs(
    volume_id: UUID, caller: CurrentCaller, services: Services
) -> Listing[VmJobPublic]:
    row = await _volume_row(services, caller, volume_id)
    return queue_listing(await queued_jobs(services, _queue_id(row)))


async def _volume_row(services: Services, caller: Caller, volume_id: UUID) -> dict[str, Any]:
    row = await run_in_threadpool(services.reads.get, TABLE, volume_id)
    if row is None:  # just created by its job? read our writes once
        await run_in_threadpool(
            services.reads.wait_until_current, TABLE, services.consistency_timeout
        )
        row = await run_in_threadpool(services.reads.get, TABLE, volume_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"volume {volume_id}", ("path", "volume_id"))
    return row


def _queue_id(row: dict[str, Any]) -> str:
    return vm_queue_id(row["vm_id"]) if row.get("vm_id") else volume_queue_id(row["id"])


async def _operate(
    services: Services,
    caller: Caller,
    volume_id: UUID,
    operation: VolumeOperation,
    body: BaseModel | None,
    response: Response,
    idempotency_key: str | None,
) -> VolumeJobAccepted:
    row = await _volume_row(services, caller, volume_id)
    vm_id: UUID | None = row["vm_id"]
    target_vm = body.vm_id if isinstance(body, VolumeAttach) else None
    vm_row = None
    wanted_vm = target_vm or vm_id
    if wanted_vm is not None:
        vm_row = await run_in_threadpool(services.reads.get, VM_TABLE, wanted_vm)
        if target_vm is not None and (vm_row is None or not caller.may_see(vm_row["account_id"])):
            raise not_found(f"virtual machine {target_vm}", ("body", "vm_id"))
        if target_vm is not None and vm_row is not None and vm_row.get("is_removed"):
            raise IllegalStateTransition(f"virtual machine {vm_row['name']} has been expunged")
    new_size = body.size_gib * GIB if isinstance(body, VolumeResize) else None
    refusal = refusal_at_submission(
        operation,
        name=row["name"],
        state=row["state"],
        volume_type=row["volume_type"],
        attached_to=vm_id,
        size_bytes=row["size_bytes"],
        vm_state=vm_row["state"] if vm_row is not None else None,
        vm_name=vm_row["name"] if vm_row is not None else None,
        new_size_bytes=new_size,
        shrink_ok=isinstance(body, VolumeResize) and body.shrink_ok,
        pool_id=row["pool_id"],
        target_pool_id=body.pool_id if isinstance(body, VolumeMigrate) else None,
    )
    if refusal is not None:
        raise refusal
    job_id = job_id_for(caller, idempotency_key)
    summary = f"{operation.value.capitalize()} volume {row['name']}"
    if vm_row is not None and operation is VolumeOperation.ATTACH:
        summary += f" to VM {vm_row['name']}"
    request = VolumeOperationRequest(
        job_id=job_id,
        volume_id=volume_id,
        operation=operation,
        account_id=row["account_id"],
        summary=summary,
        vm_id=target_vm,
        size_bytes=new_size,
        shrink_ok=isinstance(body, VolumeResize) and body.shrink_ok,
        pool_id=body.pool_id if isinstance(body, VolumeMigrate) else None,
    )
    details = [
        f"**Volume:** {row['name']} (`{volume_id}`)",
        f"**Operation:** {operation.value}",
        f"**Asked by:** {caller.name} (`{caller.account_id}`)",
        f"**State when asked:** {row['state']}",
    ]
    # Attached: serialized with its VM. An attach also runs in the VM's queue.
    queue_vm = vm_id if vm_id is not None else target_vm
    accepted = await _submit(services, queue_vm, volume_id, row["zone_id"], request, body, details)
    return _accepted(services, response, accepted.job_id, volume_id)


async def _submit(
    services: CloudServices,
    vm_id: UUID | None,
    volume_id: UUID,
    zone_id: UUID,
    request: VolumeOperationRequest,
    body: BaseModel | None,
    details: list[str],
) -> VmJobAccepted:
    submission = VmJobSubmission(
        job_id=request.job_id,
        job_type=request.operation.job_type,
        account_id=request.account_id,
        zone_id=zone_id,
        summary=request.summary,
        details="\n".join(details),
        fingerprint=fingerprint(body) if body is not None else request.operation.value,
        volume=request,
    )
    if vm_id is not None:
        return await submit_to_vm_queue(services, vm_id, submission)
    return await _submit_to_volume_queue(services, volume_id, submission)


async def _submit_to_volume_queue(
    services: CloudServices, volume_id: UUID, submission: VmJobSubmission
) -> VmJobAccepted:
    """Hand a job to a detached volume's queue (`volume/<volume_id>`), starting it if needed:
    the VM queue's workflow, serializing a volume instead of a VM."""
    attributes = {
        JobAttribute.JOB_TYPE: VM_QUEUE_WORKFLOW,
        JobAttribute.ACCOUNT_ID: str(submission.account_id),
        JobAttribute.RESOURCE_TYPE: VOLUME_RESOURCE,
        JobAttribute.RESOURCE_ID: str(volume_id),
    }
    if submission.zone_id is not None:
        attributes[JobAttribute.ZONE_ID] = str(submission.zone_id)
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        VM_QUEUE_WORKFLOW,
        VmQueueState(
            vm_id=volume_id,
            account_id=submission.account_id,
            zone_id=submission.zone_id,
            resource_type=VOLUME_RESOURCE,
        ),
        id=volume_queue_id(volume_id),
        task_queue=services.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(SearchAttributeKey.for_keyword(a.value), v)
                for a, v in attributes.items()
            ]
        ),
        static_summary=f"Job queue of volume {volume_id}: its operations, one at a time",
    )
    try:
        accepted: VmJobAccepted = await services.temporal.execute_update_with_start_workflow(
            "submit", submission, start_workflow_operation=start, result_type=VmJobAccepted
        )
    except WorkflowUpdateFailedError as error:
        raise ApiError(
            409,
            f"the volume's queue refused the job: {error.cause}",
            code=ErrorCode.PARAM_ERROR,
            kind="refused",
        ) from None
    if accepted.conflict:
        raise idempotency_conflict()
    return accepted


def _accepted(
    services: CloudServices, response: Response, job_id: UUID, volume_id: UUID
) -> VolumeJobAccepted:
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return VolumeJobAccepted(
        job_id=job_id,
        volume_id=volume_id,
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )
