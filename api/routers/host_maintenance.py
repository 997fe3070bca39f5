"""Taking hosts out of service and back (admin only): maintenance, and allocation state.

- `POST /v1/hosts/{id}/maintenance` (prepareHostForMaintenance): a job (202). The host takes no
  new VMs, each of its VMs is live-migrated away by a migrate job of its own (HA-enabled VMs
  first), stopped VMs that last ran there are unassigned, and the host ends in Maintenance, or
  in ErrorInMaintenance with the reason of each VM that could not move.
- `POST /v1/hosts/{id}/cancel-maintenance` (cancelHostMaintenance): a job (202). A maintenance
  still being prepared is cancelled (VMs not yet moved stay); the host is Enabled again.
- `POST /v1/hosts/{id}/enable|disable`, `POST /v1/clusters/{id}/enable|disable` (updateHost /
  updateCluster allocationstate): whether the host or cluster takes new VMs; running VMs stay.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from api.auth import AdminCaller, Caller
from api.dependencies import IdempotencyKey, Services
from api.errors import ApiError, not_found
from api.job_submission import JobSubmission, job_id_for, submit
from api.models import AllocationStatePublic, HostJobAccepted
from api.routers.infrastructure import job_attributes, run_short_job
from api.services import CloudServices
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.errors import ErrorCode, IllegalStateTransition
from domain.host import Host
from domain.host_maintenance import (
    CANCEL_MAINTENANCE_JOB,
    CHANGE_ALLOCATION_JOB,
    MAX_STOPPED_VMS,
    PREPARE_MAINTENANCE_JOB,
    AllocationStateRequest,
    CancelHostMaintenanceRequest,
    HostMaintenanceRequest,
)
from projections.virtual_machines import stopped_with_last_host

router = APIRouter(prefix="/v1", tags=["infrastructure"])


def find_host(cloud: Cloud, host_id: UUID) -> Host:
    """The host the path names; 404 naming `host_id` when there is none."""
    host = cloud.find(Host, host_id)
    if host is None:
        raise not_found(f"host {host_id}", ("path", "host_id"))
    return host


def refused_by_state(message: str) -> ApiError:
    """409 naming the host: its state does not allow what was asked."""
    return ApiError(
        409, message, code=ErrorCode.PARAM_ERROR, loc=("path", "host_id"), kind="illegal_state"
    )


def _stopped_vms(services: CloudServices, host_id: UUID) -> list[UUID]:
    with services.reads.pool.connection() as conn:
        return stopped_with_last_host(conn, host_id, MAX_STOPPED_VMS)


async def submit_host_job(
    services: CloudServices,
    caller: Caller,
    response: Response,
    host: Host,
    job_id: UUID,
    *,
    workflow: str,
    request: Any,
    summary: str,
    idempotent: bool,
    details: tuple[str, ...] = (),
    request_fingerprint: str | None = None,
) -> HostJobAccepted:
    """A job on one host (maintenance, its cancel, a power action), answered 202 with where
    to follow it; `details` add to what the Temporal UI shows of the host."""
    await submit(
        services,
        JobSubmission(
            workflow=workflow,
            request=request,
            job_id=job_id,
            attributes=job_attributes(caller, workflow, "Host", host.id, host.zone_id),
            summary=summary,
            details="\n".join(
                [
                    f"**Host:** {host.name} (`{host.id}`) at {host.address}",
                    f"**State when asked:** {host.resource_state}",
                    *details,
                    f"**Asked by:** {caller.name} (`{caller.account_id}`)",
                ]
            ),
            fingerprint=request_fingerprint or f"{workflow}/{host.id}",
        ),
        idempotent=idempotent,
    )
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return HostJobAccepted(
        job_id=job_id,
        host_id=host.id,
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )


@router.post(
    "/hosts/{host_id}/maintenance",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=HostJobAccepted,
    summary="Prepare a host for maintenance: its VMs are migrated away "
    "(prepareHostForMaintenance, a job)",
)
async def prepare_host_for_maintenance(
    host_id: UUID,
    caller: AdminCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> HostJobAccepted:
    host = await run_in_threadpool(find_host, services.cloud, host_id)
    job_id = job_id_for(caller, idempotency_key)
    if host.maintenance_job_id != job_id:
        try:
            host.check_may_enter_maintenance()
        except IllegalStateTransition as refusal:
            raise refused_by_state(refusal.message) from None
    summary = f"Prepare host {host.name} for maintenance"
    return await submit_host_job(
        services,
        caller,
        response,
        host,
        job_id,
        workflow=PREPARE_MAINTENANCE_JOB,
        request=HostMaintenanceRequest(
            job_id=job_id,
            host_id=host.id,
            account_id=caller.account_id,
            summary=summary,
            stopped_vm_ids=await run_in_threadpool(_stopped_vms, services, host.id),
        ),
        summary=summary,
        idempotent=idempotency_key is not None,
    )


@router.post(
    "/hosts/{host_id}/cancel-maintenance",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=HostJobAccepted,
    summary="Return a host to service (cancelHostMaintenance, a job)",
)
async def cancel_host_maintenance(
    host_id: UUID,
    caller: AdminCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> HostJobAccepted:
    host = await run_in_threadpool(find_host, services.cloud, host_id)
    if not host.resource_state.in_maintenance and idempotency_key is None:
        raise refused_by_state(f"host {host.name} is {host.resource_state}, not in maintenance")
    job_id = job_id_for(caller, idempotency_key)
    summary = f"Cancel the maintenance of host {host.name}"
    return await submit_host_job(
        services,
        caller,
        response,
        host,
        job_id,
        workflow=CANCEL_MAINTENANCE_JOB,
        request=CancelHostMaintenanceRequest(
            job_id=job_id, host_id=host.id, account_id=caller.account_id, summary=summary
        ),
        summary=summary,
        idempotent=idempotency_key is not None,
    )


async def _change_allocation(
    services: CloudServices,
    caller: Caller,
    resource: tuple[str, UUID, UUID, str],
    state: str,
    idempotency_key: str | None,
) -> AllocationStatePublic:
    resource_type, resource_id, zone_id, name = resource
    job_id = job_id_for(caller, idempotency_key)
    verb = "Enable" if state == "Enabled" else "Disable"
    summary = f"{verb} {resource_type.lower()} {name} for new VMs"
    request = AllocationStateRequest(
        job_id=job_id,
        account_id=caller.account_id,
        resource_type=resource_type,
        resource_id=resource_id,
        allocation_state=state,
        summary=summary,
    )
    result = await run_short_job(
        services,
        caller,
        CHANGE_ALLOCATION_JOB,
        request,
        job_id,
        resource=(resource_type, resource_id, zone_id),
        summary=summary,
        request_fingerprint=f"{resource_type}/{resource_id}/{state}",
    )
    return AllocationStatePublic(**result)


def _add_allocation_routes(state: str, verb: str) -> None:
    async def change_host(
        host_id: UUID,
        caller: AdminCaller,
        services: Services,
        idempotency_key: IdempotencyKey = None,
    ) -> AllocationStatePublic:
        host = await run_in_threadpool(find_host, services.cloud, host_id)
        if host.resource_state.in_maintenance:
            raise refused_by_state(
                f"host {host.name} is in {host.resource_state}: cancel its maintenance first"
            )
        return await _change_allocation(
            services, caller, ("Host", host.id, host.zone_id, host.name), state, idempotency_key
        )

    async def change_cluster(
        cluster_id: UUID,
        caller: AdminCaller,
        services: Services,
        idempotency_key: IdempotencyKey = None,
    ) -> AllocationStatePublic:
        cluster = await run_in_threadpool(services.cloud.find, Cluster, cluster_id)
        if cluster is None:
            raise not_found(f"cluster {cluster_id}", ("path", "cluster_id"))
        return await _change_allocation(
            services,
            caller,
            ("Cluster", cluster.id, cluster.zone_id, cluster.name),
            state,
            idempotency_key,
        )

    router.add_api_route(
        f"/hosts/{{host_id}}/{verb}",
        change_host,
        methods=["POST"],
        response_model=AllocationStatePublic,
        name=f"{verb}_host",
        summary=f"{verb.capitalize()} a host for new VMs (updateHost allocationstate)",
    )
    router.add_api_route(
        f"/clusters/{{cluster_id}}/{verb}",
        change_cluster,
        methods=["POST"],
        response_model=AllocationStatePublic,
        name=f"{verb}_cluster",
        summary=f"{verb.capitalize()} a cluster for new VMs (updateCluster allocationstate)",
    )


_add_allocation_routes("Enabled", "enable")
_add_allocation_routes("Disabled", "disable")
