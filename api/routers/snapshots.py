"""Volume snapshots (createSnapshot, listSnapshots, deleteSnapshot, revertSnapshot, and
createVolume/createTemplate from a snapshot), each operation a job.

Snapshot jobs run in the queue of the snapshot's volume: its VM's (`vm/<vm_id>`) while the
volume is attached, the volume's own (`volume/<volume_id>`) otherwise, also once the volume is
deleted (a snapshot outlives it). What the read models already show to be impossible is refused
here with a 4xx naming the reason; what only shows at run time fails the job (431/533).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Response, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CurrentCaller
from api.dependencies import Consistent, Cursor, Limit, PageNumber, Services
from api.errors import not_found
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
from api.routers.volumes import VM_TABLE, _accepted, _submit, _volume_row
from domain.errors import IllegalStateTransition
from domain.ids import derived_id
from domain.job_requests import VolumeOperation, VolumeOperationRequest
from domain.snapshot import snapshot_id_for
from domain.snapshot_operations import refusal_for_snapshot_use, refusal_to_snapshot
from domain.volume_operations import volume_id_for

router = APIRouter(tags=["snapshots"])
TABLE = "snapshots"
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.get("/v1/snapshots", response_model=Listing[SnapshotPublic], summary="List snapshots")
def list_snapshots(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    volume_id: UUID | None = None,
    policy_id: UUID | None = None,
    state: str | None = None,
    interval_type: str | None = None,
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
    job_id = job_id_for(caller, idempotency_key)
    snapshot_id = snapshot_id_for(job_id)
    name = body.name if body is not None and body.name else None
    request = VolumeOperationRequest(
        job_id=job_id,
        volume_id=volume_id,
        operation=VolumeOperation.SNAPSHOT,
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
    accepted = await _submit(
        services, row["vm_id"], volume_id, row["zone_id"], request, body, details
    )
    _accepted(services, response, accepted.job_id, volume_id)
    return SnapshotJobAccepted(
        job_id=accepted.job_id,
        snapshot_id=snapshot_id_for(accepted.job_id),
        job_url=f"/v1/jobs/{accepted.job_id}",
        temporal_url=services.job_url(accepted.job_id),
    )


@router.delete(
    "/v1/snapshots/{snapshot_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SnapshotJobAccepted,
    summary="Delete a snapshot and its backup (a job)",
)
async def delete_snapshot(
    snapshot_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SnapshotJobAccepted:
    snapshot = await _usable_snapshot(services, caller, snapshot_id, "delete", deleting=True)
    job_id = await _snapshot_job(
        services,
        caller,
        snapshot,
        VolumeOperation.DELETE_SNAPSHOT,
        None,
        idempotency_key,
        volume_id=snapshot["volume_id"],
    )
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return SnapshotJobAccepted(
        job_id=job_id,
        snapshot_id=snapshot_id,
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )


@router.post(
    "/v1/snapshots/{snapshot_id}/revert",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VolumeJobAccepted,
    summary="Revert the snapshot's volume to it; its VM must be stopped (a job)",
)
async def revert_snapshot(
    snapshot_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> VolumeJobAccepted:
    snapshot = await _usable_snapshot(services, caller, snapshot_id, "revert")
    volume = await _volume_row(services, caller, snapshot["volume_id"])
    if volume["state"] in ("Destroy", "Expunging", "Expunged"):
        raise IllegalStateTransition(
            f"volume {volume['name']} is deleted or being deleted: make a new volume from the "
            "snapshot instead"
        )
    job_id = await _snapshot_job(
        services,
        caller,
        snapshot,
        VolumeOperation.REVERT_TO_SNAPSHOT,
        None,
        idempotency_key,
        volume_id=snapshot["volume_id"],
    )
    return _accepted(services, response, job_id, snapshot["volume_id"])


@router.post(
    "/v1/snapshots/{snapshot_id}/volumes",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=VolumeJobAccepted,
    summary="Make a new data volume from the snapshot (a job)",
)
async def create_volume_from_snapshot(
    snapshot_id: UUID,
    body: VolumeFromSnapshotCreate,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> VolumeJobAccepted:
    snapshot = await _usable_snapshot(services, caller, snapshot_id, "create a volume")
    job_id = job_id_for(caller, idempotency_key)
    new_volume_id = volume_id_for(job_id)
    job_id = await _snapshot_job(
        services,
        caller,
        snapshot,
        VolumeOperation.CREATE_FROM_SNAPSHOT,
        body,
        idempotency_key,
        volume_id=new_volume_id,
        job_id=job_id,
        name=body.name,
    )
    return _accepted(services, response, job_id, volume_id_for(job_id))


@router.post(
    "/v1/snapshots/{snapshot_id}/templates",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TemplateJobAccepted,
    summary="Make a private template from the snapshot (a job)",
)
async def create_template_from_snapshot(
    snapshot_id: UUID,
    body: TemplateFromSnapshotCreate,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> TemplateJobAccepted:
    snapshot = await _usable_snapshot(services, caller, snapshot_id, "make a template")
    job_id = job_id_for(caller, idempotency_key)
    job_id = await _snapshot_job(
        services,
        caller,
        snapshot,
        VolumeOperation.CREATE_TEMPLATE_FROM_SNAPSHOT,
        body,
        idempotency_key,
        volume_id=snapshot["volume_id"],
        job_id=job_id,
        name=body.name,
        template_id=template_id_for(job_id),
        os_type=body.os_type,
    )
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return TemplateJobAccepted(
        job_id=job_id,
        template_id=template_id_for(job_id),
        snapshot_id=snapshot_id,
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )


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


async def _snapshot_job(
    services: Services,
    caller: Caller,
    snapshot: dict[str, Any],
    operation: VolumeOperation,
    body: BaseModel | None,
    idempotency_key: str | None,
    *,
    volume_id: UUID,
    job_id: UUID | None = None,
    **fields: Any,
) -> UUID:
    """Submit a job about a snapshot to the queue of the snapshot's volume (its VM's while
    attached); the job id that will do it (this one, or the identical one it joined)."""
    source = await run_in_threadpool(services.reads.get, "volumes", snapshot["volume_id"])
    queue_vm = source["vm_id"] if source is not None else None
    job_id = job_id or job_id_for(caller, idempotency_key)
    request = VolumeOperationRequest(
        job_id=job_id,
        volume_id=volume_id,
        operation=operation,
        account_id=snapshot["account_id"],
        summary=f"{operation.value.capitalize()} {snapshot['name']}",
        snapshot_id=snapshot["id"],
        **fields,
    )
    details = [
        f"**Snapshot:** {snapshot['name']} (`{snapshot['id']}`)",
        f"**Volume:** `{snapshot['volume_id']}`",
        f"**Operation:** {operation.value}",
        f"**Asked by:** {caller.name} (`{caller.account_id}`)",
    ]
    accepted = await _submit(
        services,
        queue_vm,
        snapshot["volume_id"],
        snapshot["zone_id"],
        request,
        body,
        details,
    )
    return accepted.job_id
