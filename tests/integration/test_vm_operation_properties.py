"""Properties of VM operations under random sequences and random failures, through the real
queue, a real worker, PostgreSQL and the Temporal dev server.

Hypothesis draws up to six operations (start, stop, reboot, destroy, recover, expunge; forced
stops and destroys; destroys that expunge at once), submitted back to back to a fresh VM's queue
as the API does, each with an optional fault at one of its steps: a step that fails for good, or
one that does its work and then "crashes" so Temporal runs it again; and some are cancelled as
soon as they are submitted (most then still wait in the queue) or as soon as they start
running (a cancel that lands in whichever step is under way, or is refused past the point of no
return). Whatever happens, once the VM's jobs have ended:

- every job has a final record, and neither the VM nor its root volume is left in a
  transitional state (an expunge past its point of no return is retried by the queue until
  the VM is gone);
- every recorded transition of the VM and of its volume is a legal table transition, and each
  starts from the state the previous one left;
- the VM holds exactly what its final state allows: capacity and a powered-on hypervisor VM
  only when Running, its IP and disk until expunged, nothing at all once removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.errors import ApiError
from api.job_cancellation import cancel as cancel_job
from domain.cloud import Cloud
from domain.job import Job, JobStatus
from domain.job_requests import VmOperation, vm_queue_id
from domain.state_machine import StateMachine
from domain.virtual_machine import VM_STATE_MACHINE, VirtualMachine, VmEvent, VmState
from domain.volume import VOLUME_STATE_MACHINE, Volume, VolumeEvent, VolumeState
from tests.integration.vm_jobs import deploy, problems_of, submit
from tests.support import Harness, outcome, queue_drained, running_worker, seed_zone, wait_until

S = VmOperation
_STOP_ON_HOST = ["hypervisor.stop_vm", "hypervisor.destroy_vm"]
_EXPUNGE = [
    "vm.begin_expunge",
    "hypervisor.destroy_vm",
    "hypervisor.delete_volume",
    "vm.finish_expunge",
]
#: The steps each operation may run, in order (a stop's only when the VM runs, an expunge's only
#: when the destroy expunges at once): where a fault can be injected.
STEPS: dict[tuple[VmOperation, bool], list[str]] = {
    (S.START, False): [
        "vm.begin",
        "vm.plan_start",
        "vm.reserve_capacity",
        "vm.prepare_launch",
        "hypervisor.launch_vm",
        "vm.complete_start",
    ],
    (S.STOP, False): ["vm.begin", *_STOP_ON_HOST, "vm.complete_stop"],
    (S.REBOOT, False): ["vm.begin", "hypervisor.reboot_vm", "vm.complete_reboot"],
    (S.DESTROY, False): ["vm.begin", *_STOP_ON_HOST, "vm.complete_destroy"],
    (S.DESTROY, True): ["vm.begin", *_STOP_ON_HOST, "vm.complete_destroy", *_EXPUNGE],
    (S.RECOVER, False): ["vm.begin", "vm.recover"],
    (S.EXPUNGE, False): ["vm.begin", *_EXPUNGE],
}


LIFECYCLE: list[VmOperation] = [op for op in VmOperation if (op, False) in STEPS]


@dataclass(frozen=True)
class Command:
    operation: VmOperation
    forced: bool = False
    expunge: bool = False
    #: ("fail" | "crash", index into the operation's steps), or no fault.
    fault: tuple[str, int] | None = None
    #: Cancel it "queued" (right after submitting it) or "running" (once it has its turn).
    cancel: str | None = None

    @property
    def options(self) -> dict[str, bool]:
        """The fields its operation takes (a stop may be forced; a destroy may also expunge)."""
        if self.operation is S.DESTROY:
            return {"forced": self.forced, "expunge": self.expunge}
        if self.operation is S.STOP:
            return {"forced": self.forced}
        return {}

    @property
    def fault_step(self) -> tuple[str, str] | None:
        if self.fault is None:
            return None
        mode, index = self.fault
        steps = STEPS[(self.operation, self.expunge)]
        return mode, steps[index % len(steps)]


@st.composite
def commands(draw: st.DrawFn) -> Command:
    # The lifecycle operations this property is about (migration and snapshots have their own
    # saga tests), in a stable order so hypothesis can shrink and replay.
    operation = draw(st.sampled_from(LIFECYCLE))
    stops = operation in (S.STOP, S.DESTROY)
    return Command(
        operation=operation,
        forced=stops and draw(st.booleans()),
        expunge=operation is S.DESTROY and draw(st.booleans()),
        fault=draw(
            st.one_of(
                st.none(),
                st.tuples(st.sampled_from(["fail", "crash"]), st.integers(0, 7)),
            )
        ),
        cancel=draw(st.sampled_from([None, None, None, "queued", "running"])),
    )


class Faults:
    """Faults by job id: each fires once, at the first call of its step in that job."""

    def __init__(self) -> None:
        self.planned: dict[str, tuple[str, str]] = {}

    def around(self, name: str, call: Callable[[], Any]) -> Any:
        job = activity.info().workflow_id or ""
        planned = self.planned.get(job)
        if planned is None or planned[1] != name:
            return call()
        del self.planned[job]
        mode, _ = planned
        if mode == "fail":
            raise ApplicationError(
                f"injected failure at {name}", 530, type="InjectedFailure", non_retryable=True
            )
        call()  # done, but the answer is lost: Temporal runs the step again
        raise ApplicationError(f"worker lost after {name}", type="WorkerLost")


@dataclass
class Rig:
    harness: Harness
    faults: Faults


@pytest.fixture(scope="module")
async def rig(temporal_client: Client, cloud: Cloud) -> AsyncIterator[Rig]:
    """One worker for every example: starting one per example would dominate the run time."""
    faults = Faults()
    async with running_worker(temporal_client, cloud, around=faults.around) as harness:
        yield Rig(harness, faults)


def illegal_transitions(
    cloud: Cloud, aggregate_id: uuid.UUID, machine: StateMachine[Any, Any], events: type
) -> list[str]:
    """Recorded transitions the table does not allow, or that do not start where the last
    one ended."""
    found: list[str] = []
    current: str | None = None
    for recorded in cloud.events.get(aggregate_id):
        new_state = getattr(recorded, "new_state", None)
        if new_state is None:
            continue
        old_state = getattr(recorded, "old_state", None)
        event_name = getattr(recorded, "vm_event", None) or getattr(recorded, "volume_event", None)
        if old_state is not None and event_name is not None:
            if current is not None and old_state != current:
                found.append(f"{event_name} from {old_state}, but the state was {current}")
            if not machine.allows(machine_state(machine, old_state), events(event_name)):
                found.append(f"{old_state} does not accept {event_name}")
            elif machine.next_state(machine_state(machine, old_state), events(event_name)) != (
                new_state
            ):
                found.append(f"{old_state} --{event_name}--> {new_state} is not the table's")
        current = new_state
    return found


def machine_state(machine: StateMachine[Any, Any], value: str) -> Any:
    state_type = type(next(iter(machine.transitions))[0])
    return state_type(value)


async def cancel(client: Client, cloud: Cloud, job_id: uuid.UUID, when: str) -> None:
    """Ask to cancel the job now ("queued") or once it has its turn ("running"), as the API
    does. A refusal (past the point of no return) or a job that already ended is an answer,
    not an error; so is a job that never runs (it joined the identical one before it)."""

    async def has_its_turn_or_ended() -> bool:
        job = cloud.find(Job, job_id)
        if job is not None and (job.status.is_final or job.status is JobStatus.RUNNING):
            return True
        try:
            step: str = await client.get_workflow_handle(str(job_id)).query("current_step")
        except RPCError:  # its queue has not started it (yet, or ever: it joined another)
            return False
        return step != "queued"

    with contextlib.suppress(ApiError):
        if when == "running":
            await wait_until(has_its_turn_or_ended, timeout=60, what=f"job {job_id}'s turn")
        await cancel_job(client, cloud, job_id, "property test")


async def settled(client: Client, cloud: Cloud, vm_id: uuid.UUID) -> None:
    """Until the queue has no job and no expunge retry due soon (a destroy's day-long expunge
    delay is the VM's final word here, not pending work)."""
    queue = client.get_workflow_handle(vm_queue_id(vm_id))

    async def quiet() -> bool:
        if cloud.load(VirtualMachine, vm_id).is_removed:
            return True
        jobs = await queue.query("jobs")
        raw = await queue.query("expunge_at")
        due = datetime.fromisoformat(raw) if raw is not None else None
        return not jobs and (due is None or due - datetime.now(UTC) > timedelta(hours=1))

    await wait_until(quiet, timeout=45, interval=0.1, what=f"the queue of {vm_id} to settle")


@settings(
    max_examples=15,
    deadline=None,
    # No shrinking: each example runs real jobs for seconds, and a failure is reported as
    # drawn (its job ids and steps are in the output) instead of minutes of shrinking.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(commands(), min_size=1, max_size=6))
async def test_random_operations_with_random_failures_leave_a_vm_stable_legal_and_leak_free(
    rig: Rig, temporal_client: Client, cloud: Cloud, sequence: list[Command]
) -> None:
    harness = rig.harness
    zone = seed_zone(cloud)
    deploy_job, vm_id = await deploy(harness, zone, "prop")
    assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"

    job_ids: list[uuid.UUID] = []
    cancels: list[asyncio.Task[None]] = []
    for command in sequence:  # back to back: later ones wait in the queue
        job_id = uuid.uuid4()
        if command.fault_step is not None:
            rig.faults.planned[str(job_id)] = command.fault_step
        # A job on an expunged VM is refused by its queue (failed, 431); one repeating the
        # queued job before it joins that one: either way it ends without running.
        accepted = await submit(
            harness, zone, vm_id, command.operation, job_id=job_id, **command.options
        )
        job_ids.append(accepted.job_id)
        if command.cancel is not None:
            cancelling = cancel(temporal_client, cloud, accepted.job_id, command.cancel)
            if command.cancel == "queued":
                await cancelling
            else:
                cancels.append(asyncio.create_task(cancelling))
    await asyncio.gather(*cancels)
    for job_id in job_ids:
        await outcome(temporal_client, job_id, cloud=cloud)
    await settled(temporal_client, cloud, vm_id)

    for job_id in job_ids:
        job = cloud.find(Job, job_id)
        assert job is not None and job.status.is_final, (job_id, job and job.status)
    vm = cloud.load(VirtualMachine, vm_id)
    volume = cloud.load(Volume, vm.root_volume_id)
    assert not vm.is_transitional or vm.is_removed, vm.state
    assert volume.state in (VolumeState.READY, VolumeState.EXPUNGED), volume.state
    assert illegal_transitions(cloud, vm_id, VM_STATE_MACHINE, VmEvent) == []
    assert illegal_transitions(cloud, volume.id, VOLUME_STATE_MACHINE, VolumeEvent) == []
    assert problems_of(cloud, zone, harness, vm_id) == []
    if vm.is_removed:
        return
    # Still serving the VM: its queue ran every job and is idle.
    assert await queue_drained(temporal_client, vm_id) == []
    assert vm.state in (VmState.RUNNING, VmState.STOPPED, VmState.DESTROYED), vm.state
