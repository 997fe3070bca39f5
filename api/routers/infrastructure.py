"""Building the inventory for real hypervisors (admin only): clusters, hosts, primary storage.

- `POST /v1/clusters`: a cluster of a hypervisor type with its connection settings (addresses:
  libvirt URI template, vCenter address/datacenter/cluster, XenServer pool master, BMC
  addresses) and the task queue of the agent that serves it. Credentials are refused with a
  422 naming the field: they belong to the agent's configuration, never to Stratus's events.
  A short AddCluster job records it and starts the cluster's power-state sync; 201.
- `POST /v1/hosts`: an AddHost job (202 + job id + host id): the cluster's agent asks the
  hypervisor what the host has, and the host is recorded with that capacity.
- `POST /v1/storage-pools`: cluster- or zone-scoped primary storage (a short job; 201).

Listings stay where they are (`GET /v1/clusters`, `/v1/hosts`, `/v1/storage-pools`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response, status
from starlette.concurrency import run_in_threadpool
from temporalio.client import WorkflowFailureError
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.exceptions import TimeoutError as WorkflowTimeout

from api.auth import AdminCaller, Caller
from api.dependencies import IdempotencyKey, Services
from api.errors import ApiError
from api.job_submission import JobSubmission, fingerprint, job_id_for, submit
from api.models import (
    ClusterCreate,
    ClusterPublic,
    HostCreate,
    HostJobAccepted,
    StoragePoolCreate,
    StoragePoolPublic,
)
from api.services import CloudServices
from domain.catalog import HypervisorType
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.cluster_connection import credential_fields
from domain.errors import ErrorCode
from domain.infrastructure import (
    ADD_HOST_JOB,
    AddClusterRequest,
    AddHostRequest,
    AddStoragePoolRequest,
    cluster_id_for,
    default_agent_task_queue,
    host_id_for,
    pool_id_for,
    validate_cluster,
    validate_host,
    validate_storage_pool,
)
from domain.job_requests import JobAttribute
from domain.zone import Pod

router = APIRouter(prefix="/v1", tags=["infrastructure"])

#: How long the API waits for a short inventory job (AddCluster, AddStoragePool).
SHORT_JOB_TIMEOUT = timedelta(seconds=60)
#: How a short job's failure code answers over HTTP: a refusal of the request is a 422, a
#: resource in the way (busy, no room) a 409 or 503; anything unforeseen stays a 500.
SHORT_JOB_STATUS = {
    ErrorCode.PARAM_ERROR: 422,
    ErrorCode.MALFORMED_PARAMETER: 422,
    ErrorCode.UNSUPPORTED_ACTION: 400,
    ErrorCode.RESOURCE_IN_USE: 409,
    ErrorCode.INSUFFICIENT_CAPACITY: 503,
    ErrorCode.RESOURCE_UNAVAILABLE: 503,
}


async def refuse_credentials(request: Request, _: AdminCaller) -> None:
    """422 when any key of the body looks like a credential, before the body is validated
    (and after the caller is known to be an admin)."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return  # malformed JSON: the body validation answers it
    found = list(credential_fields(body))
    if found:
        names = ", ".join(".".join(path) for path in found)
        raise ApiError(
            422,
            f"credentials are not accepted here ({names}): Stratus records only addresses; "
            "put user names and passwords in the agent's configuration (STRATUS_AGENT_CONFIG)",
            code=ErrorCode.PARAM_ERROR,
            loc=("body", *found[0]),
            kind="credentials_refused",
        )


NoCredentials = Depends(refuse_credentials)


# -- clusters ---------------------------------------------------------------------------------
@router.post(
    "/clusters",
    status_code=status.HTTP_201_CREATED,
    response_model=ClusterPublic,
    dependencies=[NoCredentials],
    summary="Add a cluster of a hypervisor type (addCluster)",
)
async def add_cluster(
    body: ClusterCreate,
    caller: AdminCaller,
    services: Services,
    idempotency_key: IdempotencyKey = None,
) -> ClusterPublic:
    job_id = job_id_for(caller, idempotency_key)
    cluster_id = cluster_id_for(job_id)
    queue = body.agent_task_queue
    if queue is None and body.hypervisor != HypervisorType.SIMULATOR.value:
        queue = default_agent_task_queue(cluster_id)
    request = AddClusterRequest(
        job_id=job_id,
        cluster_id=cluster_id,
        pod_id=body.pod_id,
        name=body.name,
        hypervisor=body.hypervisor,
        cpu_overprovisioning=body.cpu_overprovisioning,
        memory_overprovisioning=body.memory_overprovisioning,
        disable_threshold=body.disable_threshold,
        agent_task_queue=queue,
        connection=body.connection,
        power_sync_interval_seconds=body.power_sync_interval_seconds,
        transitional_grace_seconds=body.transitional_grace_seconds,
    )
    pod: Pod = await run_in_threadpool(validate_cluster, services.cloud, request)
    result = await run_short_job(
        services,
        caller,
        "AddCluster",
        request,
        job_id,
        resource=("Cluster", cluster_id, pod.zone_id),
        summary=f"Add {body.hypervisor} cluster {body.name} to pod {pod.name}",
        request_fingerprint=fingerprint(body),
    )
    return ClusterPublic(**result)


# -- hosts ------------------------------------------------------------------------------------
@router.post(
    "/hosts",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=HostJobAccepted,
    dependencies=[NoCredentials],
    summary="Add a host to a cluster (addHost, a job)",
)
async def add_host(
    body: HostCreate,
    caller: AdminCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> HostJobAccepted:
    job_id = job_id_for(caller, idempotency_key)
    host_id = host_id_for(job_id)
    cluster: Cluster = await run_in_threadpool(
        validate_host, services.cloud, body.cluster_id, body.name, body.address
    )
    summary = (
        f"Add {cluster.hypervisor} host {body.name} ({body.address}) to cluster {cluster.name}"
    )
    await submit(
        services,
        JobSubmission(
            workflow=ADD_HOST_JOB,
            request=AddHostRequest(
                job_id=job_id,
                host_id=host_id,
                cluster_id=body.cluster_id,
                account_id=caller.account_id,
                name=body.name,
                address=body.address,
                tags=body.tags,
                summary=summary,
            ),
            job_id=job_id,
            attributes=job_attributes(caller, ADD_HOST_JOB, "Host", host_id, cluster.zone_id),
            summary=summary,
            details="\n".join(
                [
                    f"**Host:** {body.name} (`{host_id}`) at {body.address}",
                    f"**Cluster:** {cluster.name} (`{cluster.id}`), {cluster.hypervisor}",
                    f"**Agent task queue:** {cluster.agent_task_queue or 'control plane'}",
                ]
            ),
            fingerprint=fingerprint(body),
        ),
        idempotent=idempotency_key is not None,
    )
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return HostJobAccepted(
        job_id=job_id,
        host_id=host_id,
        job_url=f"/v1/jobs/{job_id}",
        temporal_url=services.job_url(job_id),
    )


# -- primary storage --------------------------------------------------------------------------
@router.post(
    "/storage-pools",
    status_code=status.HTTP_201_CREATED,
    response_model=StoragePoolPublic,
    dependencies=[NoCredentials],
    summary="Add cluster- or zone-scoped primary storage (createStoragePool)",
)
async def add_storage_pool(
    body: StoragePoolCreate,
    caller: AdminCaller,
    services: Services,
    idempotency_key: IdempotencyKey = None,
) -> StoragePoolPublic:
    job_id = job_id_for(caller, idempotency_key)
    pool_id = pool_id_for(job_id)
    request = AddStoragePoolRequest(
        job_id=job_id,
        pool_id=pool_id,
        name=body.name,
        scope=body.scope,
        path=body.path,
        capacity_bytes=body.capacity_bytes,
        zone_id=body.zone_id,
        cluster_id=body.cluster_id,
        overprovisioning=body.overprovisioning,
        tags=body.tags,
    )
    zone_id = await run_in_threadpool(_pool_zone, services.cloud, request)
    result = await run_short_job(
        services,
        caller,
        "AddStoragePool",
        request,
        job_id,
        resource=("PrimaryStorage", pool_id, zone_id),
        summary=f"Add {body.scope.lower()}-scoped primary storage {body.name}",
        request_fingerprint=fingerprint(body),
    )
    return StoragePoolPublic(**result)


def _pool_zone(cloud: Cloud, request: AddStoragePoolRequest) -> UUID:
    validate_storage_pool(cloud, request)
    if request.cluster_id is not None and request.scope == "CLUSTER":
        return cloud.load(Cluster, request.cluster_id).zone_id
    assert request.zone_id is not None
    return request.zone_id


# -- plumbing ---------------------------------------------------------------------------------
def job_attributes(
    caller: Caller, job_type: str, resource_type: str, resource_id: UUID, zone_id: UUID
) -> dict[JobAttribute, str]:
    return {
        JobAttribute.JOB_TYPE: job_type,
        JobAttribute.JOB_STATE: "queued",
        JobAttribute.ACCOUNT_ID: str(caller.account_id),
        JobAttribute.RESOURCE_TYPE: resource_type,
        JobAttribute.RESOURCE_ID: str(resource_id),
        JobAttribute.ZONE_ID: str(zone_id),
    }


async def run_short_job(
    services: CloudServices,
    caller: Caller,
    workflow: str,
    request: Any,
    job_id: UUID,
    *,
    resource: tuple[str, UUID, UUID],
    summary: str,
    request_fingerprint: str,
) -> dict[str, Any]:
    """Run a short admin job and wait for its result; a repeated Idempotency-Key gets the
    first job's result (or 409 when it was for a different request)."""
    resource_type, resource_id, zone_id = resource
    pairs = [
        SearchAttributePair(SearchAttributeKey.for_keyword(attribute.value), value)
        for attribute, value in job_attributes(
            caller, workflow, resource_type, resource_id, zone_id
        ).items()
    ]
    try:
        handle = await services.temporal.start_workflow(
            workflow,
            request,
            id=str(job_id),
            task_queue=services.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            execution_timeout=SHORT_JOB_TIMEOUT,
            search_attributes=TypedSearchAttributes(pairs),
            static_summary=summary,
            memo={"request_fingerprint": request_fingerprint},
        )
    except WorkflowAlreadyStartedError:
        handle = services.temporal.get_workflow_handle(str(job_id))
    memo = await (await handle.describe()).memo()
    if memo.get("request_fingerprint") != request_fingerprint:
        raise ApiError(
            409,
            "this Idempotency-Key was already used for a different request",
            code=ErrorCode.PARAM_ERROR,
            loc=("header", "Idempotency-Key"),
            kind="idempotency_conflict",
        )
    try:
        result: dict[str, Any] = await handle.result()
    except WorkflowFailureError as error:
        cause: BaseException | None = error.cause
        while cause is not None and not isinstance(cause, ApplicationError):
            cause = cause.__cause__
        details = cause.details if cause is not None else ()
        code = ErrorCode.INTERNAL_ERROR
        if details and isinstance(details[0], int) and details[0] in set(ErrorCode):
            code = ErrorCode(details[0])
        message = cause.message if cause is not None else str(error)
        status_code = SHORT_JOB_STATUS.get(code, 500)
        if isinstance(error.cause, WorkflowTimeout):
            code, status_code = ErrorCode.RESOURCE_UNAVAILABLE, 503
            message = f"it did not finish within {SHORT_JOB_TIMEOUT.seconds} s (are workers up?)"
        raise ApiError(
            status_code, f"{workflow} failed: {message}", code=code, kind="job_failed"
        ) from error
    return result
