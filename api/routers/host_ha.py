"""Host HA (admin only): kvm.ha settings per cluster, HA on and off per host, and an operator's
word that a host is off.

- `PUT /v1/clusters/{id}/ha`: the cluster's kvm.ha settings (out of range: 422 naming the
  setting). Answers the settings in force.
- `POST /v1/hosts/{id}/ha/enable|disable`: HA for one host. On, the host is watched by its
  cluster's monitor (started here if it does not run) and is Available, or Ineligible while it
  has no out-of-band management to fence it with.
- `POST /v1/hosts/{id}/declare-fenced`: a job (202). For a host the BMC could not confirm off:
  the operator has made sure it is, the host is recorded Fenced (by whom) and its HA VMs are
  restarted elsewhere, each a start job of its own; its other VMs end Stopped. Declaring a
  fenced host again restarts what it still holds (after an HA job that failed).
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from api.auth import AdminCaller, Caller
from api.dependencies import IdempotencyKey, Services
from api.errors import not_found
from api.job_submission import job_id_for
from api.models import ClusterHaPublic, HostHaPublic, HostJobAccepted
from api.routers.host_maintenance import find_host, refused_by_state, submit_host_job
from api.routers.infrastructure import run_short_job
from api.services import CloudServices
from domain.cluster import Cluster
from domain.host_ha import HaSettings
from domain.host_ha_operations import (
    CHECK_NOW_SIGNAL,
    CONFIGURE_HA_JOB,
    MONITOR_WORKFLOW,
    RESTART_JOB,
    HaConfiguration,
    HostHaMonitorInput,
    RestartVmsRequest,
    monitor_id,
)

router = APIRouter(prefix="/v1", tags=["infrastructure"])


async def watch_cluster(services: CloudServices, cluster_id: UUID, account_id: UUID) -> None:
    """Start the cluster's monitor, or ask the running one for a pass now (signal-with-start:
    durable once the call returns, whatever the workers are doing)."""
    await services.temporal.start_workflow(
        MONITOR_WORKFLOW,
        HostHaMonitorInput(cluster_id=cluster_id, account_id=account_id),
        id=monitor_id(cluster_id),
        task_queue=services.task_queue,
        start_signal=CHECK_NOW_SIGNAL,
        static_summary=f"Host HA monitor of cluster {cluster_id}",
    )


async def configure(
    services: CloudServices,
    caller: Caller,
    job_id: UUID,
    resource: tuple[Literal["Host", "Cluster"], UUID, UUID],
    summary: str,
    fingerprint: str,
    **change: Any,
) -> dict[str, Any]:
    """A ConfigureHostHa short job on a host or a cluster (`change`: enabled, or settings)."""
    kind, resource_id, _ = resource
    request = HaConfiguration(
        job_id=job_id,
        account_id=caller.account_id,
        resource_type=kind,
        resource_id=resource_id,
        summary=summary,
        **change,
    )
    result: dict[str, Any] = await run_short_job(
        services,
        caller,
        CONFIGURE_HA_JOB,
        request,
        job_id,
        resource=resource,
        summary=summary,
        request_fingerprint=fingerprint,
    )
    return result


@router.put(
    "/clusters/{cluster_id}/ha",
    response_model=ClusterHaPublic,
    summary="Set a cluster's host-HA settings (CloudStack's kvm.ha.*)",
)
async def configure_cluster_ha(
    cluster_id: UUID,
    settings: HaSettings,
    caller: AdminCaller,
    services: Services,
    idempotency_key: IdempotencyKey = None,
) -> ClusterHaPublic:
    cluster = await run_in_threadpool(services.cloud.find, Cluster, cluster_id)
    if cluster is None:
        raise not_found(f"cluster {cluster_id}", ("path", "cluster_id"))
    result = await configure(
        services,
        caller,
        job_id_for(caller, idempotency_key),
        ("Cluster", cluster.id, cluster.zone_id),
        f"Set the HA settings of cluster {cluster.name}",
        f"cluster-ha/{cluster.id}/{settings.model_dump_json()}",
        settings=settings,
    )
    return ClusterHaPublic(**result)


async def switch_host_ha(
    services: CloudServices, caller: Caller, host_id: UUID, enabled: bool, job_id: UUID
) -> HostHaPublic:
    """HA on or off for a host (a ConfigureHostHa short job); on, its cluster's monitor is
    started or asked for a pass now."""
    host = await run_in_threadpool(find_host, services.cloud, host_id)
    verb = "enable" if enabled else "disable"
    result = await configure(
        services,
        caller,
        job_id,
        ("Host", host.id, host.zone_id),
        f"{verb.capitalize()} HA for host {host.name}",
        f"host-ha/{host.id}/{enabled}",
        enabled=enabled,
    )
    if enabled:
        await watch_cluster(services, host.cluster_id, caller.account_id)
    return HostHaPublic(**result)


def _add_switch(enabled: bool, verb: str) -> None:
    async def switch(
        host_id: UUID,
        caller: AdminCaller,
        services: Services,
        idempotency_key: IdempotencyKey = None,
    ) -> HostHaPublic:
        job_id = job_id_for(caller, idempotency_key)
        return await switch_host_ha(services, caller, host_id, enabled, job_id)

    router.add_api_route(
        f"/hosts/{{host_id}}/ha/{verb}",
        switch,
        methods=["POST"],
        response_model=HostHaPublic,
        name=f"{verb}_host_ha",
        summary=f"{verb.capitalize()} HA for a host (its cluster's monitor watches it)",
    )


_add_switch(True, "enable")
_add_switch(False, "disable")


@router.post(
    "/hosts/{host_id}/declare-fenced",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=HostJobAccepted,
    summary="Declare a host fenced (its BMC could not confirm it off): its HA VMs restart "
    "elsewhere (a job)",
)
async def declare_host_fenced(
    host_id: UUID,
    caller: AdminCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> HostJobAccepted:
    host = await run_in_threadpool(find_host, services.cloud, host_id)
    if not host.ha_enabled:
        raise refused_by_state(f"host {host.name} does not have HA enabled")
    job_id = job_id_for(caller, idempotency_key)
    summary = f"Host {host.name} declared fenced by {caller.name}: restart its HA VMs"
    return await submit_host_job(
        services,
        caller,
        response,
        host,
        job_id,
        workflow=RESTART_JOB,
        request=RestartVmsRequest(
            job_id=job_id,
            account_id=caller.account_id,
            host_id=host.id,
            summary=summary,
            declared_by=caller.name,
        ),
        summary=summary,
        idempotent=idempotency_key is not None,
        details=(f"**HA state when declared:** {host.ha_state} ({host.ha.reason})",),
    )
