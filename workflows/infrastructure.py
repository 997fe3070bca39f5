"""Admin jobs that build the inventory for real hypervisors: AddCluster, AddHost and
AddStoragePool.

AddHost is the one that touches a hypervisor: the cluster's agent (its task queue) asks the
host what it has, and the control plane records the host with exactly that capacity. AddCluster
also starts the cluster's PowerStateSync (an abandoned child: it outlives the job).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
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
        HostProbe,
        HostRecorded,
        ReportedCapacity,
    )
    from domain.errors import ErrorCode
    from domain.infrastructure import (
        AddClusterRequest,
        AddHostRequest,
        AddStoragePoolRequest,
        PowerStateSyncInput,
        power_state_sync_id,
    )

from workflows.job_state import failure_of, is_cancellation, set_job_state
from workflows.power_state_sync import PowerStateSync

CONTROL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=8,
)
PROBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
#: How long an AddHost job waits for the cluster's agent to take the probe.
AGENT_WAIT = timedelta(minutes=2)


@workflow.defn(name="AddCluster")
class AddCluster:
    @workflow.run
    async def run(self, request: AddClusterRequest) -> dict[str, Any]:
        set_job_state("running")
        cluster: dict[str, Any] = await workflow.execute_activity_method(
            InfrastructureActivities.add_cluster,
            request,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=CONTROL_RETRY,
            summary=f"record {request.hypervisor} cluster {request.name}",
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
        set_job_state("succeeded")
        return {**cluster, "power_state_sync_workflow_id": sync_id}


@workflow.defn(name="AddStoragePool")
class AddStoragePool:
    @workflow.run
    async def run(self, request: AddStoragePoolRequest) -> dict[str, Any]:
        set_job_state("running")
        pool: dict[str, Any] = await workflow.execute_activity_method(
            InfrastructureActivities.add_storage_pool,
            request,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=CONTROL_RETRY,
            summary=f"record {request.scope.lower()}-scoped primary storage {request.name}",
        )
        set_job_state("succeeded")
        return pool


@workflow.defn(name="AddHost")
class AddHost:
    def __init__(self) -> None:
        self._step = "queued"

    @workflow.query(name="current_step")
    def current_step(self) -> str:
        return self._step

    @workflow.run
    async def run(self, request: AddHostRequest) -> dict[str, Any]:
        set_job_state("running")
        submitted_at = workflow.info().start_time
        try:
            result = await self._add(request)
        except BaseException as error:
            if isinstance(error, GeneratorExit):
                raise  # the worker dropped this run from its cache: nothing to unwind here
            cancelled = is_cancellation(error)
            code, text, kind = failure_of(error)
            self._enter("failed")
            await workflow.execute_activity_method(
                InfrastructureActivities.fail_add_host,
                AddHostFailure(
                    request=request, submitted_at=submitted_at, error_code=code, error_text=text
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=CONTROL_RETRY,
                summary="record the failure",
            )
            set_job_state("cancelled" if cancelled else "failed")
            if cancelled:
                raise
            raise ApplicationError(text, code, type=kind, non_retryable=True) from None
        set_job_state("succeeded")
        self._enter("succeeded")
        return result

    async def _add(self, request: AddHostRequest) -> dict[str, Any]:
        self._enter("validating")
        probe: HostProbe = await workflow.execute_activity_method(
            InfrastructureActivities.begin_add_host,
            AddHostStep(request=request, submitted_at=workflow.info().start_time),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=CONTROL_RETRY,
            summary=f"check host {request.name} can join the cluster",
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
                heartbeat_timeout=timedelta(seconds=10),
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
        result: dict[str, Any] = await workflow.execute_activity_method(
            InfrastructureActivities.record_host,
            HostRecorded(request=request, capacity=capacity),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=CONTROL_RETRY,
            summary=f"record host {request.name} with {capacity.cpu_count} cpus, "
            f"{capacity.memory_mib} MiB",
        )
        return result

    def _enter(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(f"**Step:** {step}")
