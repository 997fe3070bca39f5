"""DeployVirtualMachine: the saga that takes a VM from an order to Running on a host.

validate and register → plan → reserve capacity → create the root volume → allocate the NIC's
IP → define and start on the host → record Running. A host or pool that cannot do its part goes
into the avoid set and the next one is tried (CloudStack's start.retry, 10 attempts); a final
failure unwinds everything in reverse (release IP, delete volume, release capacity), leaves the
VM in Error and fails the job with its CloudStack code. A cancelled job unwinds the same way.

Cancellation is Temporal's own. Every step is cancelled with WAIT_CANCELLATION_COMPLETED, so an
undo never races the step it undoes; a step that finishes anyway is followed by a safe point
where the cancel takes effect. A cancel that comes while one host's undos run (before the next
host is tried) waits for them, and one that comes while Running is being recorded is too late.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.deployment import DeploymentActivities
    from activities.deployment_models import (
        DeploymentOutcome,
        Placement,
        PlanInput,
        RegisterDeploymentInput,
        StepInput,
        VmLaunch,
        VmRemoval,
        VolumeCreated,
        VolumeOrder,
        VolumeRemoval,
    )
    from activities.errors import TRY_ELSEWHERE
    from activities.hypervisor import HypervisorActivities
    from domain.errors import ErrorCode
    from domain.job_requests import DeployVirtualMachineRequest
    from domain.placement import START_RETRY_ATTEMPTS

from workflows.job_state import error_type, failure_of, is_cancellation, set_job_state
from workflows.saga import Saga

CONTROL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=8,
)
HYPERVISOR_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
)
#: A hypervisor worker that stops heartbeating this long is taken for dead; the call is retried.
HYPERVISOR_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
#: Undo entries that belong to one placement attempt, unwound before the next host is tried.
ON_HOST = ("vm on host", "capacity")


@workflow.defn(name="DeployVirtualMachine")
class DeployVirtualMachine:
    def __init__(self) -> None:
        self._step = "queued"
        self._cancel_requested = False
        #: Set while cancelling must wait (undos are running, or Running is being recorded).
        self._not_now: str | None = None
        self._work: asyncio.Task[dict[str, Any]] | None = None

    @workflow.query(name="current_step")
    def current_step(self) -> str:
        return self._step

    @workflow.run
    async def run(self, request: DeployVirtualMachineRequest) -> dict[str, Any]:
        self._work = asyncio.create_task(self._run(request))
        try:
            return await asyncio.shield(self._work)
        except asyncio.CancelledError:
            # Temporal delivers its cancel once: remember it, so a step that finished anyway
            # is followed by the unwind, and interrupt the step unless undos are running.
            self._cancel_requested = True
            if self._not_now is None and not self._work.done():
                self._work.cancel()
            return await self._work

    async def _run(self, request: DeployVirtualMachineRequest) -> dict[str, Any]:
        saga = Saga()
        set_job_state("running")
        try:
            result = await self._deploy(request, saga)
        except BaseException as error:
            if isinstance(error, GeneratorExit):
                raise  # the worker dropped this run from its cache: nothing to unwind here
            self._not_now = "the job is already unwinding"
            cancelled = is_cancellation(error)
            code, text, kind = failure_of(error)
            self._enter("unwinding")
            await saga.unwind()
            if saga.failures:
                text += " (could not undo: " + "; ".join(saga.failures) + ")"
            await self._control(
                DeploymentActivities.fail,
                DeploymentOutcome(
                    job_id=request.job_id,
                    error_code=code,
                    error_text=text,
                    order=request.order,
                    submitted_at=workflow.info().start_time,
                    summary=request.summary,
                    cancelled=cancelled,
                ),
                "record the failure",
                retry=UNDO_RETRY,
            )
            set_job_state("cancelled" if cancelled else "failed")
            self._enter("cancelled" if cancelled else "failed")
            if cancelled:
                raise
            raise ApplicationError(text, code, type=kind, non_retryable=True) from None
        set_job_state("succeeded")
        self._enter("succeeded")
        return result

    async def _deploy(self, request: DeployVirtualMachineRequest, saga: Saga) -> dict[str, Any]:
        job_id = request.job_id
        self._enter("validating")
        await self._control(
            DeploymentActivities.register,
            RegisterDeploymentInput(
                job_id=job_id,
                order=request.order,
                submitted_at=workflow.info().start_time,
                summary=request.summary,
            ),
            f"validate and register VM {request.order.name}",
        )
        avoid_hosts: list[UUID] = []
        avoid_pools: list[UUID] = []
        volume_pool: UUID | None = None
        nic_allocated = False
        last_failure = ""
        for attempt in range(1, START_RETRY_ATTEMPTS + 1):
            self._enter(f"planning (attempt {attempt})")
            try:
                placement: Placement = await self._control(
                    DeploymentActivities.plan,
                    PlanInput(
                        job_id=job_id,
                        attempt=attempt,
                        avoid_host_ids=avoid_hosts,
                        avoid_pool_ids=avoid_pools,
                    ),
                    f"plan a host (attempt {attempt})",
                )
            except ActivityError as error:
                if last_failure and error_type(error) == "InsufficientCapacity":
                    code, text, kind = failure_of(error)
                    raise ApplicationError(
                        f"{text}; last failure: {last_failure}", code, type=kind
                    ) from None
                raise
            step = StepInput(
                job_id=job_id,
                attempt=attempt,
                host_id=placement.host_id,
                pool_id=volume_pool or placement.pool_id,
            )
            stage = "capacity"
            try:
                self._enter(f"reserving capacity on {placement.host_name}")
                saga.add("capacity", self._undo(DeploymentActivities.release_capacity, step))
                await self._control(
                    DeploymentActivities.reserve_capacity,
                    step,
                    f"reserve capacity on {placement.host_name}",
                )

                if volume_pool is None:
                    stage = "volume"
                    self._enter("creating root volume")
                    saga.add("root volume", self._volume_undo(step, placement))
                    order: VolumeOrder = await self._control(
                        DeploymentActivities.begin_root_volume, step, "book the root volume"
                    )
                    created = await self._hypervisor(
                        HypervisorActivities.create_volume,
                        order,
                        placement,
                        f"create root volume on {order.pool.name}",
                    )
                    await self._control(
                        DeploymentActivities.complete_root_volume,
                        VolumeCreated(step=step, volume=created),
                        "record the root volume Ready",
                    )
                    volume_pool = step.pool_id

                stage = "nic"
                if not nic_allocated:
                    self._enter("allocating IP address")
                    saga.add("nic", self._undo(DeploymentActivities.release_nic, step))
                    await self._control(
                        DeploymentActivities.allocate_nic, step, "allocate the NIC's IP"
                    )
                    nic_allocated = True

                stage = "start"
                self._enter(f"starting on {placement.host_name}")
                launch: VmLaunch = await self._control(
                    DeploymentActivities.prepare_launch, step, "record Starting on the host"
                )
                saga.add(
                    "vm on host",
                    self._hypervisor_undo(
                        HypervisorActivities.destroy_vm,
                        VmRemoval(host=launch.host, vm_id=launch.spec.vm_id),
                        placement,
                    ),
                )
                await self._hypervisor(
                    HypervisorActivities.launch_vm,
                    launch,
                    placement,
                    f"define and start VM on {placement.host_name}",
                )
                self._not_now = "the VM is being recorded Running"
                self._enter("recording Running")
                result: dict[str, Any] = await self._control(
                    DeploymentActivities.complete, step, "record Running"
                )
                return result
            except ActivityError as error:
                if error_type(error) not in TRY_ELSEWHERE:
                    raise
                _, last_failure, _ = failure_of(error)
                workflow.logger.warning("attempt %s failed at %s: %s", attempt, stage, error)
                self._not_now = "this host's undos are running"
                await saga.unwind(only=ON_HOST)
                self._not_now = None
                if stage == "volume":
                    await self._control(
                        DeploymentActivities.abandon_root_volume, step, "abandon the root volume"
                    )
                    avoid_pools.append(step.pool_id)
                else:
                    avoid_hosts.append(placement.host_id)
        raise ApplicationError(
            f"gave up after {START_RETRY_ATTEMPTS} attempts; last failure: {last_failure}",
            int(ErrorCode.INSUFFICIENT_CAPACITY),
            type="InsufficientCapacity",
        )

    # -- plumbing -----------------------------------------------------------------------------
    def _enter(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(f"**Step:** {step}")

    def _stop_if_cancelled(self) -> None:
        """A safe point: a cancel that came while a step could not be interrupted (it finished
        anyway) or while undos ran unwinds here, before the next step."""
        if self._cancel_requested and self._not_now is None:
            raise asyncio.CancelledError()

    async def _control(
        self, activity: Any, arg: Any, summary: str, *, retry: RetryPolicy = CONTROL_RETRY
    ) -> Any:
        self._stop_if_cancelled()
        result = await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=timedelta(seconds=60),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=retry,
            summary=summary,
        )
        self._stop_if_cancelled()
        return result

    async def _hypervisor(
        self,
        activity: Any,
        arg: Any,
        placement: Placement,
        summary: str,
        *,
        retry: RetryPolicy = HYPERVISOR_RETRY,
    ) -> Any:
        self._stop_if_cancelled()
        result = await workflow.execute_activity_method(
            activity,
            arg,
            task_queue=placement.hypervisor_task_queue or workflow.info().task_queue,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=HYPERVISOR_HEARTBEAT_TIMEOUT,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=retry,
            summary=summary,
        )
        self._stop_if_cancelled()
        return result

    def _undo(self, activity: Any, step: StepInput) -> Any:
        async def undo() -> None:
            await self._control(activity, step, f"undo: {activity.__name__}", retry=UNDO_RETRY)

        return undo

    def _hypervisor_undo(self, activity: Any, arg: Any, placement: Placement) -> Any:
        async def undo() -> None:
            await self._hypervisor(
                activity, arg, placement, f"undo: {activity.__name__}", retry=UNDO_RETRY
            )

        return undo

    def _volume_undo(self, step: StepInput, placement: Placement) -> Any:
        """Delete the disk on the hypervisor (nothing to do if it was never made), then record
        the volume expunged and the pool's bytes given back."""

        async def undo() -> None:
            removal: VolumeRemoval = await self._control(
                DeploymentActivities.root_volume_removal, step, "undo: locate the root volume"
            )
            await self._hypervisor(
                HypervisorActivities.delete_volume,
                removal,
                placement,
                "undo: delete the root volume",
                retry=UNDO_RETRY,
            )
            await self._control(
                DeploymentActivities.expunge_root_volume,
                step,
                "undo: expunge the root volume",
                retry=UNDO_RETRY,
            )

        return undo
