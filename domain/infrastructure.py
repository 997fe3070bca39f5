"""Building the inventory for real hypervisors: the admin's addCluster, addHost and
createStoragePool, as decisions over the event store.

A cluster is recorded with its connection settings (addresses only) and the task queue of the
agent that serves it. A host is recorded by a job: the agent asks the hypervisor what the host
has (cpus, speed, memory), and the host is added with exactly that capacity. Ids derive from the
job id, so every step is idempotent and the API can answer with the new id at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from domain import inventory, job_records
from domain.catalog import HypervisorType
from domain.cloud import Cloud, Decision
from domain.cluster import DEFAULT_DISABLE_THRESHOLD, Cluster, check_overprovisioning
from domain.cluster_connection import (
    ClusterConnection,
    ConnectionSettings,
    check_connection,
    connection_id_for,
)
from domain.errors import InvalidParameter, NotFound
from domain.host import Host
from domain.ids import derived_id
from domain.job import Job
from domain.job_records import JobTicket
from domain.locations import check_location
from domain.quantities import MAX_STORAGE_BYTES
from domain.storage import PrimaryStorage, StorageScope
from domain.text import check_storable
from domain.zone import Pod, Zone

ADD_HOST_JOB = "AddHost"
#: The task queue an agent serves for a cluster unless told otherwise.
AGENT_QUEUE_PREFIX = "hypervisor-"


def default_agent_task_queue(cluster_id: UUID | str) -> str:
    return f"{AGENT_QUEUE_PREFIX}{cluster_id}"


# -- requests (built by the API, run by the workflows) ----------------------------------------
class AddClusterRequest(BaseModel):
    job_id: UUID
    cluster_id: UUID
    pod_id: UUID
    name: str
    hypervisor: str
    cpu_overprovisioning: float = 1.0
    memory_overprovisioning: float = 1.0
    disable_threshold: float = DEFAULT_DISABLE_THRESHOLD
    agent_task_queue: str | None = None
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)
    #: How often the cluster's power-state sync runs, and how long a VM may stay transitional.
    power_sync_interval_seconds: float = 60.0
    transitional_grace_seconds: float = 600.0


class AddHostRequest(BaseModel):
    job_id: UUID
    host_id: UUID
    cluster_id: UUID
    account_id: UUID
    name: str
    address: str
    tags: list[str] = Field(default_factory=list)
    summary: str


class AddStoragePoolRequest(BaseModel):
    job_id: UUID
    pool_id: UUID
    name: str
    scope: str
    path: str
    capacity_bytes: int
    zone_id: UUID | None = None
    cluster_id: UUID | None = None
    overprovisioning: float = 2.0
    tags: list[str] = Field(default_factory=list)


def cluster_id_for(job_id: UUID) -> UUID:
    return derived_id(job_id, "cluster")


def host_id_for(job_id: UUID) -> UUID:
    return derived_id(job_id, "host")


def pool_id_for(job_id: UUID) -> UUID:
    return derived_id(job_id, "storage-pool")


# -- clusters ---------------------------------------------------------------------------------
def validate_cluster(cloud: Cloud, request: AddClusterRequest) -> Pod:
    """Refuse, before any job runs, a cluster that can never be added (naming the field)."""
    check_storable(request.name, "name")
    pod = cloud.find(Pod, request.pod_id)
    if pod is None:
        raise NotFound(f"no pod with id {request.pod_id}", field="pod_id")
    try:
        HypervisorType(request.hypervisor)
    except ValueError:
        raise InvalidParameter(
            f"{request.hypervisor!r} is not one of {', '.join(HypervisorType)}",
            field="hypervisor",
        ) from None
    try:
        check_overprovisioning(
            request.cpu_overprovisioning,
            request.memory_overprovisioning,
            request.disable_threshold,
        )
    except InvalidParameter as error:
        field = "disable_threshold" if "threshold" in error.message else "cpu_overprovisioning"
        raise InvalidParameter(error.message, field=field) from None
    check_connection(request.hypervisor, request.connection)
    return pod


def add_cluster(cloud: Cloud, request: AddClusterRequest) -> dict[str, Any]:
    """Record the cluster and its connection settings together (idempotent by cluster id)."""
    validate_cluster(cloud, request)
    queue = request.agent_task_queue
    inventory.add_cluster(
        cloud,
        request.cluster_id,
        request.pod_id,
        request.name,
        request.hypervisor,
        cpu_overprovisioning=request.cpu_overprovisioning,
        memory_overprovisioning=request.memory_overprovisioning,
        disable_threshold=request.disable_threshold,
        agent_task_queue=queue,
    )

    def record_connection(d: Decision) -> ClusterConnection:
        connection_id = connection_id_for(request.cluster_id)
        found = d.find(ClusterConnection, connection_id)
        if found is not None:
            return found
        return d.add(
            ClusterConnection.create_with_id(
                connection_id,
                cluster_id=request.cluster_id,
                hypervisor=request.hypervisor,
                settings=request.connection.model_dump(exclude_defaults=True),
                agent_task_queue=queue,
            )
        )

    cloud.decide(record_connection)
    return cluster_view(cloud, request.cluster_id)


def cluster_view(cloud: Cloud, cluster_id: UUID) -> dict[str, Any]:
    cluster = cloud.load(Cluster, cluster_id)
    connection = cloud.find(ClusterConnection, connection_id_for(cluster_id))
    return {
        "id": str(cluster.id),
        "name": cluster.name,
        "zone_id": str(cluster.zone_id),
        "pod_id": str(cluster.pod_id),
        "hypervisor": cluster.hypervisor,
        "cpu_overprovisioning": cluster.cpu_overprovisioning,
        "memory_overprovisioning": cluster.memory_overprovisioning,
        "disable_threshold": cluster.disable_threshold,
        "agent_task_queue": cluster.agent_task_queue,
        "allocation_state": cluster.allocation_state.value,
        "connection": connection.settings if connection is not None else {},
    }


# -- hosts ------------------------------------------------------------------------------------
def validate_host(cloud: Cloud, cluster_id: UUID, name: str, address: str) -> Cluster:
    check_location(address, "address")
    check_storable(name, "name")
    cluster = cloud.find(Cluster, cluster_id)
    if cluster is None:
        raise NotFound(f"no cluster with id {cluster_id}", field="cluster_id")
    connection = cloud.find(ClusterConnection, connection_id_for(cluster_id))
    bmcs = connection.connection.bmc_addresses if connection is not None else []
    if cluster.hypervisor == HypervisorType.BAREMETAL.value and bmcs and address not in bmcs:
        raise InvalidParameter(
            f"a bare-metal host's address is its BMC's, one of: {', '.join(bmcs)}",
            field="address",
        )
    for host_id in cluster.host_ids:
        host = cloud.load(Host, host_id)
        if host.name == name:
            raise InvalidParameter(
                f"cluster {cluster.name} already has a host named {name}", field="name"
            )
        if host.address == address:
            raise InvalidParameter(
                f"host {host.name} of cluster {cluster.name} already has address {address}",
                field="address",
            )
    return cluster


def open_add_host_job(cloud: Cloud, request: AddHostRequest, submitted_at: datetime) -> None:
    """Record the AddHost job (the first step), before anything can fail."""

    def decide(d: Decision) -> None:
        cluster = d.cloud.find(Cluster, request.cluster_id)
        job = job_records.open_job(
            d,
            JobTicket(
                job_id=request.job_id,
                job_type=ADD_HOST_JOB,
                account_id=request.account_id,
                resource_type="Host",
                resource_id=request.host_id,
                zone_id=cluster.zone_id if cluster is not None else None,
                summary=request.summary,
                submitted_at=submitted_at,
            ),
        )
        job.enter_step("asking the hypervisor for the host's capacity", f"{request.job_id}/ask")

    cloud.decide(decide)


def record_host(
    cloud: Cloud,
    request: AddHostRequest,
    cpu_count: int,
    cpu_speed_mhz: int,
    memory_mib: int,
) -> dict[str, Any]:
    """Add the host with the capacity its hypervisor reported, and succeed the job."""
    existing = cloud.find(Host, request.host_id)
    if existing is None:
        validate_host(cloud, request.cluster_id, request.name, request.address)
    host = inventory.add_host(
        cloud,
        request.host_id,
        request.cluster_id,
        request.name,
        address=request.address,
        cpu_count=cpu_count,
        cpu_speed_mhz=cpu_speed_mhz,
        memory_mib=memory_mib,
        tags=list(request.tags),
    )
    result = {
        "host_id": str(host.id),
        "name": host.name,
        "cluster_id": str(host.cluster_id),
        "cpu_count": str(host.cpu_count),
        "cpu_speed_mhz": str(host.cpu_speed_mhz),
        "memory_mib": str(host.memory_mib),
    }

    def succeed(d: Decision) -> None:
        job = d.get(Job, request.job_id)
        job.enter_step(
            f"added host {host.name}: {cpu_count} cpus at {cpu_speed_mhz} MHz, "
            f"{memory_mib} MiB, as its hypervisor reported",
            f"{request.job_id}/recorded-step",
        )
        job.succeed(result, f"{request.job_id}/succeeded")

    cloud.decide(succeed)
    return result


def fail_add_host(
    cloud: Cloud, request: AddHostRequest, submitted_at: datetime, code: int, text: str
) -> None:
    open_add_host_job(cloud, request, submitted_at)

    def decide(d: Decision) -> None:
        job = d.get(Job, request.job_id)
        if not job.status.is_final:
            job.fail(code, text, f"{request.job_id}/failed")

    cloud.decide(decide)


# -- primary storage --------------------------------------------------------------------------
def validate_storage_pool(cloud: Cloud, request: AddStoragePoolRequest) -> None:
    check_storable(request.name, "name")
    check_location(request.path, "path")
    try:
        scope = StorageScope(request.scope)
    except ValueError:
        raise InvalidParameter(
            f"{request.scope!r} is not one of {', '.join(StorageScope)}", field="scope"
        ) from None
    if scope is StorageScope.CLUSTER:
        if request.cluster_id is None:
            raise InvalidParameter("a cluster-scoped pool needs cluster_id", field="cluster_id")
        if cloud.find(Cluster, request.cluster_id) is None:
            raise NotFound(f"no cluster with id {request.cluster_id}", field="cluster_id")
    else:
        if request.zone_id is None:
            raise InvalidParameter("a zone-scoped pool needs zone_id", field="zone_id")
        if cloud.find(Zone, request.zone_id) is None:
            raise NotFound(f"no zone with id {request.zone_id}", field="zone_id")
    if not 0 < request.capacity_bytes <= MAX_STORAGE_BYTES:
        raise InvalidParameter(
            f"must be positive and at most {MAX_STORAGE_BYTES} (8 PiB)", field="capacity_bytes"
        )
    if not 1.0 <= request.overprovisioning <= 100.0:
        raise InvalidParameter("must be from 1.0 to 100.0", field="overprovisioning")


def add_storage_pool(cloud: Cloud, request: AddStoragePoolRequest) -> dict[str, Any]:
    validate_storage_pool(cloud, request)
    fields: dict[str, Any] = {
        "path": request.path,
        "capacity_bytes": request.capacity_bytes,
        "overprovisioning": request.overprovisioning,
        "tags": list(request.tags),
    }
    if StorageScope(request.scope) is StorageScope.CLUSTER:
        assert request.cluster_id is not None
        pool = inventory.add_cluster_storage(
            cloud, request.pool_id, request.cluster_id, request.name, **fields
        )
    else:
        assert request.zone_id is not None
        pool = inventory.add_zone_storage(
            cloud, request.pool_id, request.zone_id, request.name, **fields
        )
    return storage_pool_view(pool)


def storage_pool_view(pool: PrimaryStorage) -> dict[str, Any]:
    return {
        "id": str(pool.id),
        "name": pool.name,
        "zone_id": str(pool.zone_id),
        "scope": pool.scope.value,
        "cluster_id": str(pool.cluster_id) if pool.cluster_id else None,
        "pod_id": str(pool.pod_id) if pool.pod_id else None,
        "path": pool.path,
        "capacity_bytes": pool.capacity_bytes,
        "overprovisioning": pool.overprovisioning,
        "tags": list(pool.tags),
    }


class PowerStateSyncInput(BaseModel):
    """A cluster's power-state sync: its settings, and what it carries across continue-as-new."""

    cluster_id: UUID
    interval_seconds: float = 60.0
    grace_seconds: float = 600.0
    clock_skew_seconds: float = 2.0
    #: Passes completed by earlier runs of the workflow (run ids stay unique across runs).
    passes_completed: int = 0
    #: Continue-as-new after this many passes, to keep the history short.
    passes_per_run: int = 200


def power_state_sync_id(cluster_id: UUID | str) -> str:
    """The workflow id of a cluster's power-state sync (one per cluster)."""
    return f"power-state-sync/{cluster_id}"
