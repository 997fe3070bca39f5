"""Inventory activities on the control plane: recording clusters, hosts and storage pools.

Decisions over the event store only; the host's capacity comes from the agent
(`hypervisor.host_capacity`, on the cluster's task queue), never from the request.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.drivers.hypervisor import HostRef
from activities.errors import reports_cloud_errors
from activities.infrastructure_models import (
    AddHostFailure,
    AddHostStep,
    ClusterAdded,
    HostAdded,
    HostProbe,
    HostRecorded,
    StoragePoolAdded,
)
from domain import infrastructure
from domain.cloud import Cloud
from domain.infrastructure import AddClusterRequest, AddStoragePoolRequest


class InfrastructureActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @activity.defn(name="infrastructure.add_cluster")
    @reports_cloud_errors
    def add_cluster(self, request: AddClusterRequest) -> ClusterAdded:
        return ClusterAdded.model_validate(infrastructure.add_cluster(self.cloud, request))

    @activity.defn(name="infrastructure.add_storage_pool")
    @reports_cloud_errors
    def add_storage_pool(self, request: AddStoragePoolRequest) -> StoragePoolAdded:
        return StoragePoolAdded.model_validate(infrastructure.add_storage_pool(self.cloud, request))

    @activity.defn(name="infrastructure.begin_add_host")
    @reports_cloud_errors
    def begin_add_host(self, step: AddHostStep) -> HostProbe:
        """Record the job, check the host can join the cluster, and say where to ask."""
        request = step.request
        infrastructure.open_add_host_job(self.cloud, request, step.submitted_at)
        cluster = infrastructure.validate_host(
            self.cloud, request.cluster_id, request.name, request.address
        )
        return HostProbe(
            host=HostRef(
                host_id=str(request.host_id),
                name=request.name,
                address=request.address,
                cluster_id=str(cluster.id),
                hypervisor=cluster.hypervisor,
            ),
            task_queue=cluster.agent_task_queue,
        )

    @activity.defn(name="infrastructure.record_host")
    @reports_cloud_errors
    def record_host(self, recorded: HostRecorded) -> HostAdded:
        capacity = recorded.capacity
        added = infrastructure.record_host(
            self.cloud,
            recorded.request,
            capacity.cpu_count,
            capacity.cpu_speed_mhz,
            capacity.memory_mib,
        )
        return HostAdded.model_validate(added)

    @activity.defn(name="infrastructure.fail_add_host")
    @reports_cloud_errors
    def fail_add_host(self, failure: AddHostFailure) -> None:
        infrastructure.fail_add_host(
            self.cloud,
            failure.request,
            failure.submitted_at,
            failure.error_code,
            failure.error_text,
        )


def infrastructure_activities(cloud: Cloud) -> list[Any]:
    """The control-plane activities of this module and of the power-state sync."""
    from activities.power_state import PowerStateActivities

    infra = InfrastructureActivities(cloud)
    power = PowerStateActivities(cloud)
    return [
        infra.add_cluster,
        infra.add_storage_pool,
        infra.begin_add_host,
        infra.record_host,
        infra.fail_add_host,
        power.cluster_hosts,
        power.reconcile,
    ]
