"""/v1/snapshot-policies: recurring volume snapshots (createSnapshotPolicy,
listSnapshotPolicies, deleteSnapshotPolicies).

A policy is one per volume and interval type (its id derives from both): creating it again
updates it. Creating and deleting are jobs (CreateSnapshotPolicy, DeleteSnapshotPolicies) that
record the policy and make its Temporal Schedule (`snapshot-policy/<id>`) follow it; each run of
the schedule hands a CreateSnapshot job to the volume's queue. Bad fields are refused here with
a 4xx naming them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from api.auth import CurrentCaller
from api.dependencies import Consistent, Cursor, IdempotencyKey, Limit, PageNumber, Services
from api.errors import ApiError, not_found
from api.job_submission import JobSubmission, fingerprint, job_id_for, submit
from api.models import (
    Listing,
    SnapshotPolicyCreate,
    SnapshotPolicyJobAccepted,
    SnapshotPolicyPublic,
)
from api.reads import consistent_read, scoped_account
from api.services import CloudServices
from domain.errors import ErrorCode
from domain.job_requests import JobAttribute
from domain.snapshot_policy import SnapshotPolicy, policy_id_for
from domain.snapshot_policy_operations import (
    POLICY_RESOURCE,
    SnapshotPolicyChange,
    check_policy,
    schedule_id_for,
    volume_refusal,
)
from domain.volume import Volume

router = APIRouter(prefix="/v1/snapshot-policies", tags=["snapshot policies"])
TABLE = "snapshot_policies"


@router.get("", response_model=Listing[SnapshotPolicyPublic], summary="List snapshot policies")
async def list_policies(
    caller: CurrentCaller,
    services: Services,
    response: Response,
    volume_id: UUID | None = None,
    account_id: UUID | None = None,
    include_deleted: bool = False,
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[SnapshotPolicyPublic]:
    await run_in_threadpool(consistent_read, services, TABLE, consistent, response)
    filters = {
        "volume_id": volume_id,
        "account_id": scoped_account(caller, account_id),
        "active": None if include_deleted else True,
    }
    found = await run_in_threadpool(
        services.reads.page, TABLE, filters, limit=limit, cursor=cursor, page=page
    )
    next_runs = await asyncio.gather(*(_next_runs(services, row) for row in found.data))
    return Listing[SnapshotPolicyPublic](
        data=[
            SnapshotPolicyPublic(**row, next_run_times=runs)
            for row, runs in zip(found.data, next_runs, strict=True)
        ],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{policy_id}", response_model=SnapshotPolicyPublic, summary="Show a snapshot policy")
async def get_policy(
    policy_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> SnapshotPolicyPublic:
    await run_in_threadpool(consistent_read, services, TABLE, consistent, response)
    row = await run_in_threadpool(services.reads.get, TABLE, policy_id)
    if row is None or not caller.may_see(row["account_id"]):
        raise not_found(f"snapshot policy {policy_id}", ("path", "policy_id"))
    return SnapshotPolicyPublic(**row, next_run_times=await _next_runs(services, row))


async def _next_runs(services: CloudServices, row: dict[str, Any]) -> list[datetime] | None:
    """The schedule's next run times: one cheap describe; None when it cannot be asked."""
    if not row["active"]:
        return []
    try:
        handle = services.temporal.get_schedule_handle(schedule_id_for(row["id"]))
        description = await handle.describe()
    except RPCError:
        return None
    return list(description.info.next_action_times[:3])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SnapshotPolicyJobAccepted,
    summary="Create or update a volume's recurring snapshot policy (a job)",
)
async def create_policy(
    body: SnapshotPolicyCreate,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SnapshotPolicyJobAccepted:
    interval = check_policy(body.interval_type, body.schedule, body.timezone, body.max_snaps)
    volume = await run_in_threadpool(services.cloud.find, Volume, body.volume_id)
    if volume is None or not caller.may_see(volume.account_id):
        raise not_found(f"volume {body.volume_id}", ("body", "volume_id"))
    refusal = volume_refusal(volume.name, volume.state.value)
    if refusal is not None:
        raise ApiError(
            409,
            refusal.message,
            code=ErrorCode.PARAM_ERROR,
            loc=("body", "volume_id"),
            kind=refusal.kind,
        )
    policy_id = policy_id_for(volume.id, interval)
    change = SnapshotPolicyChange(
        job_id=job_id_for(caller, idempotency_key),
        policy_id=policy_id,
        volume_id=volume.id,
        account_id=volume.account_id,
        summary=f"{interval.value} snapshot policy of volume {volume.name}: {body.schedule} "
        f"{body.timezone}, keep {body.max_snaps}",
        interval_type=interval.value,
        schedule=body.schedule.strip(),
        timezone=body.timezone,
        max_snaps=body.max_snaps,
    )
    details = [
        f"**Volume:** {volume.name} (`{volume.id}`), {volume.state.value}",
        f"**Policy:** `{policy_id}` ({interval.value} `{change.schedule}` {body.timezone}, "
        f"keeps {body.max_snaps})",
        f"**Asked by:** {caller.name} (`{caller.account_id}`)",
    ]
    return await _submit(services, response, change, volume.zone_id, body, details, idempotency_key)


@router.delete(
    "/{policy_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SnapshotPolicyJobAccepted,
    summary="Delete a snapshot policy (a job); the snapshots it took are kept",
)
async def delete_policy(
    policy_id: UUID,
    caller: CurrentCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SnapshotPolicyJobAccepted:
    policy = await run_in_threadpool(services.cloud.find, SnapshotPolicy, policy_id)
    if policy is None or not policy.active or not caller.may_see(policy.account_id):
        raise not_found(f"snapshot policy {policy_id}", ("path", "policy_id"))
    change = SnapshotPolicyChange(
        job_id=job_id_for(caller, idempotency_key),
        policy_id=policy_id,
        volume_id=policy.volume_id,
        account_id=policy.account_id,
        summary=f"Delete the {policy.interval_type.value} snapshot policy of volume "
        f"{policy.volume_id}",
        delete=True,
        interval_type=policy.interval_type.value,
    )
    details = [
        f"**Policy:** `{policy_id}` ({policy.interval_type.value} `{policy.schedule}` "
        f"{policy.timezone})",
        f"**Asked by:** {caller.name} (`{caller.account_id}`)",
    ]
    return await _submit(services, response, change, policy.zone_id, None, details, idempotency_key)


async def _submit(
    services: CloudServices,
    response: Response,
    change: SnapshotPolicyChange,
    zone_id: UUID,
    body: SnapshotPolicyCreate | None,
    details: list[str],
    idempotency_key: str | None,
) -> SnapshotPolicyJobAccepted:
    await submit(
        services,
        JobSubmission(
            workflow=change.job_type,
            request=change,
            job_id=change.job_id,
            attributes={
                JobAttribute.JOB_TYPE: change.job_type,
                JobAttribute.JOB_STATE: "queued",
                JobAttribute.ACCOUNT_ID: str(change.account_id),
                JobAttribute.RESOURCE_TYPE: POLICY_RESOURCE,
                JobAttribute.RESOURCE_ID: str(change.policy_id),
                JobAttribute.ZONE_ID: str(zone_id),
            },
            summary=change.summary,
            details="\n".join(details),
            fingerprint=fingerprint(body) if body is not None else f"delete/{change.policy_id}",
        ),
        idempotent=idempotency_key is not None,
    )
    response.headers["Location"] = f"/v1/jobs/{change.job_id}"
    return SnapshotPolicyJobAccepted(
        job_id=change.job_id,
        snapshot_policy_id=change.policy_id,
        job_url=f"/v1/jobs/{change.job_id}",
        temporal_url=services.job_url(change.job_id),
    )
