"""/v1/volumes: listing volumes (listVolumes) and operating on them, each operation a job
(createVolume, attachVolume, detachVolume, resizeVolume, migrateVolume, deleteVolume).

A volume's jobs are serialized with its VM while it is attached (they join the VM's queue,
`vm/<vm_id>`, like the VM's own operations) and through the volume's own queue
(`volume/<volume_id>`, the same queue workflow) while it is detached. An attach joins the VM's
queue: it is the VM whose state and devices it changes. What the read models already show to be
impossible is refused here with a 4xx; what only shows at run time fails the job (431/536).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar
from uuid import UUID

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CurrentCaller
from api.dependencies import Consistent, Cursor, IdempotencyKey, Limit, PageNumber, Services
from api.errors import not_found
from api.job_routes import JobCall, JobRoute, add_job_route
from api.job_submission import (
    fingerprint,
    job_id_for,
    queue_listing,
    queued_jobs,
    submit_to_queue,
)
from api.models import (
    Listing,
    VmJobPublic,
    VolumeAdminPublic,
    VolumeAttach,
    VolumeCreate,
    VolumeJobAccepted,
    VolumeMigrate,
    VolumePublic,
    VolumeResize,
)
from api.reads import consistent_read, scoped_account
from api.resource_usage import check_account_limits, volume_resources
from api.services import CloudServices
from domain.catalog import GIB
from domain.errors import IllegalStateTransition
from domain.job_requests import JobQueue, VmJobSubmission, vm_queue_id, volume_queue_id
from domain.resource_limits import ResourceType, gib_of
from domain.volume import VolumeState
from domain.volume_operations import validate_creation, volume_id_for
from domain.volume_requests import (
    AttachVolumeRequest,
    CreateVolumeRequest,
    DeleteVolumeRequest,
    DetachVolumeRequest,
    MigrateVolumeRequest,
    ResizeVolumeRequest,
    VolumeCreation,
    VolumeOperation,
    VolumeOperationRequest,
)
from domain.volume_rules import refusal_at_submission

B = TypeVar("B", bound=BaseModel | None)

router = APIRouter(prefix="/v1/volumes", tags=["volumes"])
TABLE = "volumes"


def volume_view(caller: Caller, row: dict[str, Any]) -> VolumePublic:
    """The volume as the caller may see it: with its pool and path for administrators only
    (CloudStack shows storage to admins)."""
    if caller.is_admin:
        return VolumeAdminPublic(**row)
    return VolumePublic(**row)


VolumeListing = Listing[VolumeAdminPublic] | Listing[VolumePublic]
VolumeView = VolumeAdminPublic | VolumePublic


@router.get(
    "",
    response_model=VolumeListing,
    summary="List volumes (administrators also see their pools and paths)",
)
def list_volumes(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    zone_id: UUID | None = None,
    vm_id: UUID | None = None,
    state: VolumeState | None = None,
    account_id: UUID | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> VolumeListing:
    consistent_read(services, TABLE, consistent, response)
    filters = {
        "zone_id": zone_id,
        "vm_id": vm_id,
        "state": state,
        "account_id": scoped_account(caller, account_id),
    }
    found = services.reads.page(TABLE, filters, limit=limit, cursor=cursor, page=page)
    if caller.is_admin:
        return Listing[VolumeAdminPublic](
            data=[VolumeAdminPublic(**row) for row in found.data],
            count=found.count,
            next_cursor=found.next_cursor,
        )
    return Listing[VolumePublic](
        data=[VolumePublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{volume_id}", response_model=VolumeView, summary="Show a volume")
def get_volume(
    volume_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> VolumeView:
    consistent_read(services, TABLE, consistent, response)
    row = services.reads.get(TABLE, volume_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"volume {volume_id}", ("path", "volume_id"))
    return volume_view(caller, row)


# -- operations: each a job in the volume's (or its VM's) queue -------------------------------
VM_TABLE = "virtual_machines"


class VolumeJobFields(TypedDict):
    """The fields every volume job's input has (`domain.volume_requests.VolumeRequest`'s own)."""

    job_id: UUID
    volume_id: UUID
    account_id: UUID
    summary: str


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VolumeJobAccepted,
    summary="Create a data volume from a disk offering (a job)",
)
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
    await run_in_threadpool(
        check_account_limits, services, caller.account_id, volume_resources(size_bytes)
    )
    job_id = job_id_for(caller, idempotency_key)
    volume_id = volume_id_for(job_id)
    request = CreateVolumeRequest(
        job_id=job_id,
        volume_id=volume_id,
        account_id=caller.account_id,
        summary=f"Create volume {body.name} ({size_bytes // GIB} GiB, {offering.name})",
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
    job_id = await _submit(services, None, volume_id, body.zone_id, request, body, details)
    return _accepted(services, response, job_id, volume_id)


@dataclass(frozen=True, kw_only=True)
class VolumeOperationRoute(JobRoute[B]):
    """One row of OPERATIONS: an operation on an existing volume, offered as a job."""

    operation: VolumeOperation
    #: How the job's input is built from its own fields and the body.
    asks: Callable[[VolumeJobFields, B], VolumeOperationRequest]
    #: The VM the body names (an attach's), whose row the refusals and the summary read.
    names_vm: Callable[[B], UUID] | None = None


OPERATIONS: tuple[VolumeOperationRoute[Any], ...] = (
    VolumeOperationRoute(
        path="/{volume_id}/attach",
        summary="Attach a volume to a VM (a job)",
        name="attach_volume",
        operation=VolumeOperation.ATTACH,
        body=VolumeAttach,
        body_required=True,
        asks=lambda job, body: AttachVolumeRequest(**job, vm_id=body.vm_id),
        names_vm=lambda body: body.vm_id,
    ),
    VolumeOperationRoute(
        path="/{volume_id}/detach",
        summary="Detach a volume from its VM (a job)",
        name="detach_volume",
        operation=VolumeOperation.DETACH,
        asks=lambda job, _: DetachVolumeRequest(**job),
    ),
    VolumeOperationRoute(
        path="/{volume_id}/resize",
        summary="Resize a volume (a job)",
        name="resize_volume",
        operation=VolumeOperation.RESIZE,
        body=VolumeResize,
        body_required=True,
        asks=lambda job, body: ResizeVolumeRequest(
            **job, size_bytes=body.size_gib * GIB, shrink_ok=body.shrink_ok
        ),
    ),
    VolumeOperationRoute(
        path="/{volume_id}/migrate",
        summary="Move a volume to another primary storage pool (a job)",
        name="migrate_volume",
        operation=VolumeOperation.MIGRATE,
        body=VolumeMigrate,
        body_required=True,
        asks=lambda job, body: MigrateVolumeRequest(**job, pool_id=body.pool_id),
    ),
    VolumeOperationRoute(
        path="/{volume_id}",
        method="DELETE",
        summary="Delete a detached volume (a job)",
        name="delete_volume",
        operation=VolumeOperation.DELETE,
        asks=lambda job, _: DeleteVolumeRequest(**job),
    ),
)


async def _operate(route: VolumeOperationRoute[B], call: JobCall[B]) -> VolumeJobAccepted:
    """Every operation on an existing volume: refuse what the read models already show cannot
    be done (4xx), and hand the job to its queue (the VM's while the volume is attached, or
    being attached; the volume's own otherwise)."""
    services, caller, volume_id = call.services, call.caller, call.ids["volume_id"]
    row = await _volume_row(services, caller, volume_id)
    attached_to: UUID | None = row["vm_id"]
    target_vm = route.names_vm(call.body) if route.names_vm is not None else None
    vm_row = None
    wanted_vm = target_vm or attached_to
    if wanted_vm is not None:
        vm_row = await run_in_threadpool(services.reads.get, VM_TABLE, wanted_vm)
        if target_vm is not None and (vm_row is None or not caller.may_see(vm_row["account_id"])):
            raise not_found(f"virtual machine {target_vm}", ("body", "vm_id"))
        if target_vm is not None and vm_row is not None and vm_row.get("is_removed"):
            raise IllegalStateTransition(f"virtual machine {vm_row['name']} has been expunged")
    summary = f"{route.operation.value.capitalize()} volume {row['name']}"
    if vm_row is not None and target_vm is not None:
        summary += f" to VM {vm_row['name']}"
    job = VolumeJobFields(
        job_id=job_id_for(caller, call.idempotency_key),
        volume_id=volume_id,
        account_id=row["account_id"],
        summary=summary,
    )
    request = route.asks(job, call.body)
    refusal = refusal_at_submission(
        request,
        name=row["name"],
        state=row["state"],
        volume_type=row["volume_type"],
        attached_to=attached_to,
        size_bytes=row["size_bytes"],
        vm_state=vm_row["state"] if vm_row is not None else None,
        vm_name=vm_row["name"] if vm_row is not None else None,
        pool_id=row["pool_id"],
    )
    if refusal is not None:
        raise refusal
    if isinstance(call.body, VolumeResize):
        grown = call.body.size_gib - gib_of(row["size_bytes"])
        await run_in_threadpool(
            check_account_limits,
            services,
            row["account_id"],
            {ResourceType.PRIMARY_STORAGE: grown},
        )
    details = [
        f"**Volume:** {row['name']} (`{volume_id}`)",
        f"**Operation:** {route.operation.value}",
        f"**Asked by:** {caller.name} (`{caller.account_id}`)",
        f"**State when asked:** {row['state']}",
    ]
    # Attached: serialized with its VM. An attach also runs in the VM's queue.
    queue_vm = attached_to if attached_to is not None else target_vm
    job_id = await _submit(
        services, queue_vm, volume_id, row["zone_id"], request, call.body, details
    )
    return _accepted(services, call.response, job_id, volume_id)


def submission_of(
    route: VolumeOperationRoute[B],
) -> Callable[[JobCall[B]], Awaitable[VolumeJobAccepted]]:
    async def submit(call: JobCall[B]) -> VolumeJobAccepted:
        return await _operate(route, call)

    return submit


for _route in OPERATIONS:
    add_job_route(router, _route, submission_of(_route), accepted=VolumeJobAccepted)


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


async def _submit(
    services: CloudServices,
    vm_id: UUID | None,
    volume_id: UUID,
    zone_id: UUID,
    request: VolumeOperationRequest,
    body: BaseModel | None,
    details: list[str],
) -> UUID:
    """The job goes to its VM's queue while the volume is attached (or being attached), to the
    volume's own queue otherwise."""
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
    queue = (
        JobQueue.of_vm(vm_id, request.account_id, zone_id)
        if vm_id is not None
        else JobQueue.of_volume(volume_id, request.account_id, zone_id)
    )
    return await submit_to_queue(services, queue, submission)


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
