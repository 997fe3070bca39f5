"""Place and start: the one loop that puts a VM on a host, for its deployment and for a start.

plan a host (the VM's last host first) → reserve capacity there → (a deployment also makes the
root disk and takes the NIC's IP) → define and power on → record Running. A host or pool that
cannot do its part joins the avoid set, what this attempt took there is given back, and the next
host is tried, up to CloudStack's start.retry (10) attempts. Each kind of job supplies its own
steps (`PlacementSteps`): a deployment's and a start's records differ, the loop does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.deployment_models import Placement, VmLaunch, VmRemoval
    from activities.errors import TRY_ELSEWHERE
    from activities.hypervisor import HypervisorActivities
    from domain.errors import ErrorCode
    from domain.placement import START_RETRY_ATTEMPTS

from workflows.job import JobWorkflow
from workflows.job_state import error_type, failure_of
from workflows.saga import Saga

R = TypeVar("R", covariant=True)
A = TypeVar("A")

#: Undo entries that belong to one placement attempt, unwound before the next host is tried.
ON_HOST = ("vm on host", "capacity")


@dataclass
class AvoidSet:
    """Hosts and primary storage pools that failed this job: the planner skips them."""

    host_ids: list[UUID] = field(default_factory=list)
    pool_ids: list[UUID] = field(default_factory=list)


@dataclass
class Attempt:
    number: int
    placement: Placement
    #: What the attempt was doing: a failure while making the disk avoids the pool, not the host.
    stage: str = "capacity"


class PlacementSteps(Protocol, Generic[R]):
    """The records and calls one kind of job makes around the shared loop."""

    #: Why a cancel is refused once the VM runs and is being recorded Running.
    running_no_return: str

    async def plan(self, attempt: int, avoid: AvoidSet) -> Placement: ...

    async def reserve(self, saga: Saga, attempt: Attempt) -> None:
        """Register the capacity's undo, then reserve it on the attempt's host."""

    async def prepare(self, saga: Saga, attempt: Attempt) -> None:
        """What must exist before the VM can start there (a deployment's disk and IP)."""

    async def launch(self, saga: Saga, attempt: Attempt) -> None:
        """Record Starting, register the undo, define and power on the VM on the host."""

    async def complete(self, attempt: Attempt) -> R: ...

    async def after_failed_attempt(self, attempt: Attempt, avoid: AvoidSet) -> None:
        """Put the failed host (or pool) into the avoid set, and forget what it held."""


async def launch_on_host(
    job: JobWorkflow[Any],
    saga: Saga,
    prepare_launch: Callable[[Any, A], VmLaunch],
    step: A,
    placement: Placement,
) -> None:
    """Record Starting (which answers the VM's definition), register the undo (undefine it
    there), then define and power it on with the cluster's hypervisor."""
    launch: VmLaunch = await job._control(prepare_launch, step, "record Starting on the host")
    saga.add(
        "vm on host",
        job._hypervisor_undo(
            HypervisorActivities.destroy_vm,
            VmRemoval(host=launch.host, vm_id=launch.spec.vm_id),
            placement.hypervisor_task_queue,
        ),
    )
    await job._hypervisor(
        HypervisorActivities.launch_vm,
        launch,
        placement.hypervisor_task_queue,
        f"define and start VM on {placement.host_name}",
    )


async def place_and_start(job: JobWorkflow[R], saga: Saga, steps: PlacementSteps[R]) -> R:
    avoid = AvoidSet()
    last_failure = ""
    for number in range(1, START_RETRY_ATTEMPTS + 1):
        job._enter(f"planning (attempt {number})")
        try:
            placement = await steps.plan(number, avoid)
        except ActivityError as error:
            if last_failure and error_type(error) == "InsufficientCapacity":
                code, text, kind = failure_of(error)
                raise ApplicationError(
                    f"{text}; last failure: {last_failure}", code, type=kind
                ) from None
            raise
        attempt = Attempt(number=number, placement=placement)
        try:
            job._enter(f"reserving capacity on {placement.host_name}")
            await steps.reserve(saga, attempt)
            await steps.prepare(saga, attempt)
            attempt.stage = "start"
            job._enter(f"starting on {placement.host_name}")
            await steps.launch(saga, attempt)
            job._no_return = steps.running_no_return
            job._enter("recording Running")
            return await steps.complete(attempt)
        except ActivityError as error:
            if error_type(error) not in TRY_ELSEWHERE:
                raise
            _, last_failure, _ = failure_of(error)
            workflow.logger.warning("attempt %s failed at %s: %s", number, attempt.stage, error)
            job._no_return = None
            await job._unwind_attempt(saga, ON_HOST)
            await steps.after_failed_attempt(attempt, avoid)
    raise ApplicationError(
        f"gave up after {START_RETRY_ATTEMPTS} attempts; last failure: {last_failure}",
        int(ErrorCode.INSUFFICIENT_CAPACITY),
        type="InsufficientCapacity",
    )
