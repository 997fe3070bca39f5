"""Admin jobs that build the inventory for real hypervisors: AddCluster, AddHost and
AddStoragePool.

AddHost is the one that touches a hypervisor: the cluster's agent (its task queue) asks the
host what it has, and the control plane records the host with exactly that capacity. AddCluster
also starts the cluster's PowerStateSync (an abandoned child: it outlives the job).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.hypervisor import HypervisorActivities
    from activities.infrastructure import InfrastructureActivities
    from activities.infrastructure_models import (
        AddHostFailure,
        AddHostStep,
        ClusterAdded,
        HostAdded,
        HostProbe,
        HostRecorded,
        ReportedCapacity,
        StoragePoolAdded,
    )
    from domain.errors import ErrorCode
    from domain.infrastructure import (
        AddClusterRequest,
        AddHostRequest,
        AddStoragePoolRequest,
        PowerStateSyncInput,
        power_state_sync_id,
    )

from workflows.job import JobWorkflow, no_failure_record
from workflows.power_state_sync import PowerStateSync
from workflows.retry_policies import HYPERVISOR_HEARTBEAT_TIMEOUT, PROBE_RETRY

#: How long an AddHost job waits for the cluster's agent to take the probe.
AGENT_WAIT = timedelta(minutes=2)


@workflow.defn(name="AddCluster")
class AddCluster(JobWorkflow[ClusterAdded]):
    @workflow.run
    async def run(self, request: AddClusterRequest) -> ClusterAdded:
        return await self._execute(
            lambda saga: self._add(request),
            record_failure=no_failure_record,
            waits_for_turn=False,
        )

    async def _add(self, request: AddClusterRequest) -> ClusterAdded:
        cluster = await self._control(
            InfrastructureActivities.add_cluster,
            request,
            f"record {request.hypervisor} cluster {request.name}",
        )
        sync_id = power_state_sync_id(request.cluster_id)
        # A retried request finds the cluster's sync already running.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                PowerStateSync.run,
                PowerStateSyncInput(
                    cluster_id=request.cluster_id,
                    interval_seconds=request.power_sync_interval_seconds,
                    grace_seconds=request.transitional_grace_seconds,
                ),
                id=sync_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"Power-state sync of cluster {request.name}",
            )
        return cluster.model_copy(update={"power_state_sync_workflow_id": sync_id})


@workflow.defn(name="AddStoragePool")
class AddStoragePool(JobWorkflow[StoragePoolAdded]):
    @workflow.run
    async def run(self, request: AddStoragePoolRequest) -> StoragePoolAdded:
        return await self._execute(
            lambda saga: self._control(
                InfrastructureActivities.add_storage_pool,
                request,
                f"record {request.scope.lower()}-scoped primary storage {request.name}",
            ),
            record_failure=no_failure_record,
            waits_for_turn=False,
        )


@workflow.defn(name="AddHost")
class AddHost(JobWorkflow[HostAdded]):
    """Ask the host (through its cluster's agent) what it has, then record it with that."""

    @workflow.run
    async def run(self, request: AddHostRequest) -> HostAdded:
        submitted_at = workflow.info().start_time
        return await self._execute(
            lambda saga: self._add(request),
            record_failure=lambda code, text, cancelled: self._control(
                InfrastructureActivities.fail_add_host,
                AddHostFailure(
                    request=request, submitted_at=submitted_at, error_code=code, error_text=text
                ),
                "record the failure",
            ),
            waits_for_turn=False,
        )

    async def _add(self, request: AddHostRequest) -> HostAdded:
        self._enter("validating")
        probe: HostProbe = await self._control(
            InfrastructureActivities.begin_add_host,
            AddHostStep(request=request, submitted_at=workflow.info().start_time),
            f"check host {request.name} can join the cluster",
        )
        queue = probe.task_queue or workflow.info().task_queue
        self._enter(f"asking {request.address} for its capacity")
        try:
            capacity: ReportedCapacity = await workflow.execute_activity_method(
                HypervisorActivities.host_capacity,
                probe,
                task_queue=queue,
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=AGENT_WAIT + timedelta(minutes=2),
                heartbeat_timeout=HYPERVISOR_HEARTBEAT_TIMEOUT,
                retry_policy=PROBE_RETRY,
                summary=f"ask {probe.host.hypervisor} host {request.address} for its capacity "
                f"({queue})",
            )
        except ActivityError as error:
            if isinstance(error.cause, TimeoutError):
                raise ApplicationError(
                    f"no agent answered on task queue {queue} for host {request.address} "
                    f"(is `stratus agent` running with this cluster configured?)",
                    int(ErrorCode.RESOURCE_UNAVAILABLE),
                    type="ResourceUnavailable",
                    non_retryable=True,
                ) from None
            raise
        self._enter("recording the host")
        return await self._control(
            InfrastructureActivities.record_host,
            HostRecorded(request=request, capacity=capacity),
            f"record host {request.name} with {capacity.cpu_count} cpus, {capacity.memory_mib} MiB",
        )
