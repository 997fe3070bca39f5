"""DeployVirtualMachine: the job that takes a VM from an order to Running on a host.

validate and register → place and start (workflows/placement.py: plan → reserve capacity →
create the root volume → allocate the NIC's IP → define and start on the host → record Running).
A final failure unwinds everything in reverse (release IP, delete volume, release capacity),
leaves the VM in Error and fails the job with its CloudStack code; a cancel unwinds the same way.

It is the first job in its VM's queue. Submitted through the queue's `enqueue` signal it waits
for its turn like every other job (`waits_for_turn`); deployments submitted before that (the
queue's `submit` update) started at once, and still do when their histories replay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.deployment import DeploymentActivities
    from activities.deployment_models import (
        DeploymentOutcome,
        Placement,
        PlanInput,
        RegisterDeploymentInput,
        StepInput,
        VolumeCreated,
        VolumeOrder,
        VolumeRemoval,
    )
    from activities.hypervisor import HypervisorActivities
    from domain.job_requests import DeployVirtualMachineRequest
    from domain.job_results import DeployedVm

from workflows.job import JobWorkflow
from workflows.placement import Attempt, AvoidSet, launch_on_host, place_and_start
from workflows.retry_policies import UNDO_RETRY
from workflows.saga import Saga


@workflow.defn(name="DeployVirtualMachine")
class DeployVirtualMachine(JobWorkflow[DeployedVm]):
    running_no_return = "the VM is being recorded Running"

    def __init__(self) -> None:
        super().__init__()
        self._request: DeployVirtualMachineRequest | None = None
        #: The pool the root volume was made on: later attempts keep it (the disk stays).
        self._volume_pool: UUID | None = None
        self._nic_allocated = False

    @workflow.run
    async def run(self, request: DeployVirtualMachineRequest) -> DeployedVm:
        self._request = request
        return await self._execute_recorded(
            self._deploy,
            fail=DeploymentActivities.fail,
            outcome=lambda code, text, cancelled: DeploymentOutcome(
                job_id=request.job_id,
                error_code=code,
                error_text=text,
                order=request.order,
                submitted_at=workflow.info().start_time,
                summary=request.summary,
                cancelled=cancelled,
            ),
            waits_for_turn=request.waits_for_turn,
        )

    @property
    def request(self) -> DeployVirtualMachineRequest:
        assert self._request is not None
        return self._request

    async def _deploy(self, saga: Saga) -> DeployedVm:
        request = self.request
        self._enter("validating")
        await self._control(
            DeploymentActivities.register,
            RegisterDeploymentInput(
                job_id=request.job_id,
                order=request.order,
                submitted_at=workflow.info().start_time,
                summary=request.summary,
            ),
            f"validate and register VM {request.order.name}",
        )
        return await place_and_start(self, saga, self)

    # -- the placement steps of a deployment ------------------------------------------------
    def _placement_step(self, attempt: Attempt) -> StepInput:
        return StepInput(
            job_id=self.request.job_id,
            attempt=attempt.number,
            host_id=attempt.placement.host_id,
            pool_id=self._volume_pool or attempt.placement.pool_id,
        )

    async def plan(self, attempt: int, avoid: AvoidSet) -> Placement:
        placement: Placement = await self._control(
            DeploymentActivities.plan,
            PlanInput(
                job_id=self.request.job_id,
                attempt=attempt,
                avoid_host_ids=avoid.host_ids,
                avoid_pool_ids=avoid.pool_ids,
            ),
            f"plan a host (attempt {attempt})",
        )
        return placement

    async def reserve(self, saga: Saga, attempt: Attempt) -> None:
        step = self._placement_step(attempt)
        saga.add("capacity", self._undo(DeploymentActivities.release_capacity, step))
        await self._control(
            DeploymentActivities.reserve_capacity,
            step,
            f"reserve capacity on {attempt.placement.host_name}",
        )

    async def prepare(self, saga: Saga, attempt: Attempt) -> None:
        step = self._placement_step(attempt)
        placement = attempt.placement
        if self._volume_pool is None:
            attempt.stage = "volume"
            self._enter("creating root volume")
            saga.add("root volume", self._root_volume_undo(step, placement))
            order: VolumeOrder = await self._control(
                DeploymentActivities.begin_root_volume, step, "book the root volume"
            )
            created = await self._hypervisor(
                HypervisorActivities.create_volume,
                order,
                placement.hypervisor_task_queue,
                f"create root volume on {order.pool.name}",
            )
            await self._control(
                DeploymentActivities.complete_root_volume,
                VolumeCreated(step=step, volume=created),
                "record the root volume Ready",
            )
            self._volume_pool = step.pool_id
        attempt.stage = "nic"
        if not self._nic_allocated:
            self._enter("allocating IP address")
            saga.add("nic", self._undo(DeploymentActivities.release_nic, step))
            await self._control(DeploymentActivities.allocate_nic, step, "allocate the NIC's IP")
            self._nic_allocated = True

    async def launch(self, saga: Saga, attempt: Attempt) -> None:
        await launch_on_host(
            self,
            saga,
            DeploymentActivities.prepare_launch,
            self._placement_step(attempt),
            attempt.placement,
        )

    async def complete(self, attempt: Attempt) -> DeployedVm:
        return await self._control(
            DeploymentActivities.complete, self._placement_step(attempt), "record Running"
        )

    async def after_failed_attempt(self, attempt: Attempt, avoid: AvoidSet) -> None:
        if attempt.stage == "volume":
            step = self._placement_step(attempt)
            await self._control(
                DeploymentActivities.abandon_root_volume, step, "abandon the root volume"
            )
            avoid.pool_ids.append(step.pool_id)
        else:
            avoid.host_ids.append(attempt.placement.host_id)

    def _root_volume_undo(
        self, step: StepInput, placement: Placement
    ) -> Callable[[], Awaitable[None]]:
        """Delete the disk on the hypervisor (nothing to do if it was never made), then record
        the volume expunged and the pool's bytes given back."""

        async def undo() -> None:
            removal: VolumeRemoval = await self._control(
                DeploymentActivities.root_volume_removal, step, "undo: locate the root volume"
            )
            await self._hypervisor(
                HypervisorActivities.delete_volume,
                removal,
                placement.hypervisor_task_queue,
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
