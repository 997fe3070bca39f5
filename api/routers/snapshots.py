"""Volume snapshots (createSnapshot, listSnapshots, deleteSnapshot, revertSnapshot, and
createVolume/createTemplate from a snapshot), each operation a job.

Snapshot jobs run in the queue of the snapshot's volume: its VM's (`vm/<vm_id>`) while the
volume is attached, the volume's own (`volume/<volume_id>`) otherwise, also once the volume is
deleted (a snapshot outlives it). What the read models already show to be impossible is refused
here with a 4xx naming the reason; what only shows at run time fails the job (431/533).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar
from uuid import UUID

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CurrentCaller
from api.dependencies import (
    Consistent,
    Cursor,
    Filter,
    IdempotencyKey,
    Limit,
    PageNumber,
    Services,
)
from api.errors import not_found
from api.job_routes import JobCall, JobRoute, add_job_route
from api.job_submission import job_id_for
from api.models import (
    Listing,
    SnapshotCreate,
    SnapshotJobAccepted,
    SnapshotPublic,
    TemplateFromSnapshotCreate,
    TemplateJobAccepted,
    VolumeFromSnapshotCreate,
    VolumeJobAccepted,
)
from api.reads import consistent_read, scoped_account
from api.resource_usage import check_account_limits, volume_resources
from api.routers.volumes import VM_TABLE, _accepted, _submit, _volume_row
from domain.errors import IllegalStateTransition
from domain.ids import derived_id
from domain.resource_limits import ResourceType
from domain.snapshot import SnapshotState, snapshot_id_for
from domain.snapshot_operations import refusal_for_snapshot_use, refusal_to_snapshot
from domain.volume_operations import volume_id_for
from domain.volume_requests import (
    DeleteSnapshotRequest,
    RevertSnapshotRequest,
    SnapshotVolumeRequest,
    TemplateFromSnapshotRequest,
    VolumeFromSnapshotRequest,
    VolumeOperation,
)

B = TypeVar("B", bound=BaseModel | None)
#: The input model of a job on an existing snapshot.
Q = TypeVar(
    "Q",
    bound=DeleteSnapshotRequest
    | RevertSnapshotRequest
    | VolumeFromSnapshotRequest
    | TemplateFromSnapshotRequest,
)

router = APIRouter(tags=["snapshots"])
TABLE = "snapshots"


@router.get("/v1/snapshots", response_model=Listing[SnapshotPublic], summary="List snapshots")
def list_snapshots(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    volume_id: UUID | None = None,
    policy_id: UUID | None = None,
    state: SnapshotState | None = None,
    interval_type: Filter = None,
    account_id: UUID | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[SnapshotPublic]:
    consistent_read(services, TABLE, consistent, response)
    filters = {
        "volume_id": volume_id,
        "policy_id": policy_id,
        "state": state,
        "interval_type": interval_type.upper() if interval_type else None,
        "account_id": scoped_account(caller, account_id),
    }
    found = services.reads.page(TABLE, filters, limit=limit, cursor=cursor, page=page)
    return Listing[SnapshotPublic](
        data=[SnapshotPublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/v1/snapshots/{snapshot_id}", response_model=SnapshotPublic, summary="Show one")
def get_snapshot(
    snapshot_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> SnapshotPublic:
    consistent_read(services, TABLE, consistent, response)
    row = services.reads.get(TABLE, snapshot_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"snapshot {snapshot_id}", ("path", "snapshot_id"))
    return SnapshotPublic(**row)


@router.post(
    "/v1/volumes/{volume_id}/snapshots",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SnapshotJobAccepted,
    summary="Take a snapshot of a volume, backed up to secondary storage (a job)",
)
async def create_snapshot(
    volume_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    body: SnapshotCreate | None = None,
    idempotency_key: IdempotencyKey = None,
) -> SnapshotJobAccepted:
    row = await _volume_row(services, caller, volume_id)
    vm_row = (
        await run_in_threadpool(services.reads.get, VM_TABLE, row["vm_id"])
        if row["vm_id"]
        else None
    )
    refusal = refusal_to_snapshot(
        name=row["name"],
        state=row["state"],
        vm_state=vm_row["state"] if vm_row is not None else None,
        vm_name=vm_row["name"] if vm_row is not None else None,
    )
    if refusal is not None:
        raise refusal
    await run_in_threadpool(
        check_account_limits, services, row["account_id"], {ResourceType.SNAPSHOT: 1}
    )
    job_id = job_id_for(caller, idempotency_key)
    snapshot_id = snapshot_id_for(job_id)
    name = body.name if body is not None and body.name else None
    request = SnapshotVolumeRequest(
        job_id=job_id,
        volume_id=volume_id,
        account_id=row["account_id"],
        summary=f"Snapshot volume {row['name']}",
        snapshot_id=snapshot_id,
        name=name,
    )
    details = [
        f"**Volume:** {row['name']} (`{volume_id}`)",
        f"**Snapshot:** {name or '(named after the volume)'} (`{snapshot_id}`)",
        f"**Asked by:** {caller.name} (`{caller.account_id}`)",
    ]
    job_id = await _submit(
        services, row["vm_id"], volume_id, row["zone_id"], request, body, details
    )
    _accepted(services, response, job_id, volume_id)
    return SnapshotJobAccepted(
        job_id=job_id,
        snapshot_id=snapshot_id_for(job_id),
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )


# -- jobs on a snapshot: one row of OPERATIONS each, in the queue of the snapshot's volume --
class SnapshotJobFields(TypedDict):
    """The fields every job on a snapshot has (`domain.volume_requests.SnapshotJobRequest`'s)."""

    job_id: UUID
    volume_id: UUID
    account_id: UUID
    summary: str
    snapshot_id: UUID


class JobLinks(TypedDict):
    """Where a client follows the job: the fields every 202 of a snapshot job has."""

    job_id: UUID
    job_url: str
    temporal_url: str


@dataclass(frozen=True, kw_only=True)
class SnapshotOperationRoute(JobRoute[B], Generic[B, Q]):
    """One row of OPERATIONS: a job on an existing snapshot."""

    operation: VolumeOperation
    #: What the snapshot is used for, as a refusal says it.
    purpose: str
    #: How the job's input is built from its own fields and the body.
    asks: Callable[[SnapshotJobFields, B], Q]
    #: The job makes a new volume (its id derived from the job's): the job is about that one.
    makes_a_volume: bool = False
    #: The 202's model, and the answer made from the job's input.
    accepted: type[BaseModel]
    answer: Callable[[Q, JobLinks], BaseModel]


OPERATIONS: tuple[SnapshotOperationRoute[Any, Any], ...] = (
    SnapshotOperationRoute(
        path="/v1/snapshots/{snapshot_id}",
        method="DELETE",
        summary="Delete a snapshot and its backup (a job)",
        name="delete_snapshot",
        operation=VolumeOperation.DELETE_SNAPSHOT,
        purpose="delete",
        asks=lambda job, _: DeleteSnapshotRequest(**job),
        accepted=SnapshotJobAccepted,
        answer=lambda request, links: SnapshotJobAccepted(**links, snapshot_id=request.snapshot_id),
    ),
    SnapshotOperationRoute(
        path="/v1/snapshots/{snapshot_id}/revert",
        summary="Revert the snapshot's volume to it; its VM must be stopped (a job)",
        name="revert_snapshot",
        operation=VolumeOperation.REVERT_TO_SNAPSHOT,
        purpose="revert",
        asks=lambda job, _: RevertSnapshotRequest(**job),
        accepted=VolumeJobAccepted,
        answer=lambda request, links: VolumeJobAccepted(**links, volume_id=request.volume_id),
    ),
    SnapshotOperationRoute(
        path="/v1/snapshots/{snapshot_id}/volumes",
        summary="Make a new data volume from the snapshot (a job)",
        name="create_volume_from_snapshot",
        operation=VolumeOperation.CREATE_FROM_SNAPSHOT,
        purpose="create a volume",
        body=VolumeFromSnapshotCreate,
        body_required=True,
        asks=lambda job, body: VolumeFromSnapshotRequest(**job, name=body.name),
        makes_a_volume=True,
        accepted=VolumeJobAccepted,
        answer=lambda request, links: VolumeJobAccepted(**links, volume_id=request.volume_id),
    ),
    SnapshotOperationRoute(
        path="/v1/snapshots/{snapshot_id}/templates",
        summary="Make a private template from the snapshot (a job)",
        name="create_template_from_snapshot",
        operation=VolumeOperation.CREATE_TEMPLATE_FROM_SNAPSHOT,
        purpose="make a template",
        body=TemplateFromSnapshotCreate,
        body_required=True,
        asks=lambda job, body: TemplateFromSnapshotRequest(
            **job, name=body.name, template_id=template_id_for(job["job_id"]), os_type=body.os_type
        ),
        accepted=TemplateJobAccepted,
        answer=lambda request, links: TemplateJobAccepted(
            **links, template_id=request.template_id, snapshot_id=request.snapshot_id
        ),
    ),
)


async def _operate(route: SnapshotOperationRoute[B, Q], call: JobCall[B]) -> BaseModel:
    """Every job on an existing snapshot: refuse what the read models already show cannot be
    done (4xx), and hand the job to the queue of the snapshot's volume (its VM's while the
    volume is attached; the volume's own otherwise, also once the volume is deleted)."""
    services, caller = call.services, call.caller
    snapshot = await _usable_snapshot(
        services,
        caller,
        call.ids["snapshot_id"],
        route.purpose,
        deleting=route.operation is VolumeOperation.DELETE_SNAPSHOT,
    )
    if route.operation is VolumeOperation.REVERT_TO_SNAPSHOT:
        volume = await _volume_row(services, caller, snapshot["volume_id"])
        if volume["state"] in ("Destroy", "Expunging", "Expunged"):
            raise IllegalStateTransition(
                f"volume {volume['name']} is deleted or being deleted: make a new volume from "
                "the snapshot instead"
            )
    job_id = job_id_for(caller, call.idempotency_key)
    request = route.asks(
        SnapshotJobFields(
            job_id=job_id,
            volume_id=volume_id_for(job_id) if route.makes_a_volume else snapshot["volume_id"],
            account_id=snapshot["account_id"],
            summary=f"{route.operation.value.capitalize()} {snapshot['name']}",
            snapshot_id=snapshot["id"],
        ),
        call.body,
    )
    source = await run_in_threadpool(services.reads.get, "volumes", snapshot["volume_id"])
    if route.makes_a_volume:
        await run_in_threadpool(
            check_account_limits,
            services,
            snapshot["account_id"],
            volume_resources(snapshot["size_bytes"]),
        )
    details = [
        f"**Snapshot:** {snapshot['name']} (`{snapshot['id']}`)",
        f"**Volume:** `{snapshot['volume_id']}`",
        f"**Operation:** {route.operation.value}",
        f"**Asked by:** {caller.name} (`{caller.account_id}`)",
    ]
    job_id = await _submit(
        services,
        source["vm_id"] if source is not None else None,
        snapshot["volume_id"],
        snapshot["zone_id"],
        request,
        call.body,
        details,
    )
    call.response.headers["Location"] = f"/v1/jobs/{job_id}"
    links = JobLinks(
        job_id=job_id, job_url=f"/v1/jobs/{job_id}", temporal_url=services.job_url(job_id)
    )
    return route.answer(request, links)


def submission_of(
    route: SnapshotOperationRoute[B, Q],
) -> Callable[[JobCall[B]], Awaitable[BaseModel]]:
    async def submit(call: JobCall[B]) -> BaseModel:
        return await _operate(route, call)

    return submit


for _route in OPERATIONS:
    add_job_route(router, _route, submission_of(_route), accepted=_route.accepted)


def template_id_for(job_id: UUID) -> UUID:
    return derived_id(job_id, "template")


async def _usable_snapshot(
    services: Services, caller: Caller, snapshot_id: UUID, purpose: str, *, deleting: bool = False
) -> dict[str, Any]:
    """The snapshot's row, or the 4xx the read model already shows (deleted, failed, ...)."""
    snapshot = await _snapshot_row(services, caller, snapshot_id)
    refusal = refusal_for_snapshot_use(
        name=snapshot["name"], state=snapshot["state"], purpose=purpose, deleting=deleting
    )
    if refusal is not None:
        raise refusal
    return snapshot


async def _snapshot_row(services: Services, caller: Caller, snapshot_id: UUID) -> dict[str, Any]:
    row = await run_in_threadpool(services.reads.get, TABLE, snapshot_id)
    if row is None:  # just taken by its job? read our writes once
        await run_in_threadpool(
            services.reads.wait_until_current, TABLE, services.consistency_timeout
        )
        row = await run_in_threadpool(services.reads.get, TABLE, snapshot_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"snapshot {snapshot_id}", ("path", "snapshot_id"))
    return row
