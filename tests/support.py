"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.drivers.out_of_band import IpmiPowerControl
from activities.drivers.simulator import SimulatorDriver
from api.job_submission import enqueue_job
from domain.cloud import Cloud
from domain.deployment import root_volume_id_for, virtual_machine_id_for
from domain.guest_network import GuestNetwork
from domain.host import Host
from domain.job import Job
from domain.job_requests import (
    DeploymentOrder,
    DeployVirtualMachineRequest,
    JobQueue,
    VmJobAccepted,
    VmJobSubmission,
    vm_queue_id,
)
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine
from domain.volume import Volume
from workers.demo_cloud import DemoCloud, seed_demo_cloud
from workers.worker import build_worker, control_plane_activities

ADMIN_KEY = "test-admin-key"
ADMIN_SECRET = "test-admin-secret-key"
T = typing.TypeVar("T")


@typing.overload
async def wait_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool] = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


@typing.overload
async def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool] = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def wait_until(
    probe: Callable[[], Any],
    done: Callable[[Any], bool] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> Any:
    """Poll `probe` until `done` holds for what it returns, and return that; fail at the
    deadline saying what was awaited and what was last seen. The one way tests wait for
    something asynchronous (never a sleep of a guessed length)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {value!r}")
        await asyncio.sleep(interval)


def seed_zone(cloud: Cloud, **kwargs: Any) -> DemoCloud:
    """A zone of our own, so tests never share capacity."""
    return seed_demo_cloud(
        cloud, ADMIN_KEY, prefix=f"T{uuid.uuid4().hex[:8]}", admin_name="test-admin", **kwargs
    )


def activity_name(fn: Callable[..., Any]) -> str:
    definition = activity._Definition.from_callable(fn)
    assert definition is not None and definition.name is not None
    return definition.name


def wrap_activity(fn: Callable[..., Any], around: Callable[[str, Callable[[], Any]], Any]) -> Any:
    """Re-register an activity under its own name, with `around(name, call)` controlling it.

    The wrapper keeps the original's resolved type hints, so Temporal still decodes the
    pydantic inputs. `around` is plain code that may block (sleep, call twice); an async
    activity is therefore run by it from a thread, each `call()` awaiting the coroutine on
    the worker's loop.
    """
    name = activity_name(fn)
    hints = typing.get_type_hints(fn)

    signature = inspect.signature(fn)
    (parameter,) = signature.parameters.values()

    wrapper: Callable[[Any], Any]
    if inspect.iscoroutinefunction(fn):

        async def wrapper(arg: Any) -> Any:
            loop = asyncio.get_running_loop()

            def call() -> Any:
                return asyncio.run_coroutine_threadsafe(fn(arg), loop).result()

            return await asyncio.to_thread(around, name, call)

    else:

        def wrapper(arg: Any) -> Any:
            return around(name, lambda: fn(arg))

    wrapper.__name__ = wrapper.__qualname__ = fn.__name__
    wrapper.__annotations__ = {parameter.name: hints[parameter.name], "return": hints["return"]}
    # What inspect.signature() reads; typeshed declares no __signature__ on a function, so it
    # goes into the function's __dict__ directly (the same thing an attribute assignment does).
    vars(wrapper)["__signature__"] = signature.replace(
        parameters=[parameter.replace(annotation=hints[parameter.name])],
        return_annotation=hints["return"],
    )
    return activity.defn(name=name)(wrapper)


def fail_before(step: str) -> Callable[[str, Callable[[], Any]], Any]:
    """The named step fails for good before doing anything."""

    def around(name: str, call: Callable[[], Any]) -> Any:
        if name == step:
            raise ApplicationError(
                f"injected failure at {step}", 530, type="InjectedFailure", non_retryable=True
            )
        return call()

    return around


def crash_after_first(step: str | None = None) -> Callable[[str, Callable[[], Any]], Any]:
    """The step does its work, then 'crashes' before reporting, once: Temporal retries it."""
    crashed: set[str] = set()

    def around(name: str, call: Callable[[], Any]) -> Any:
        result = call()
        if (step is None or name == step) and name not in crashed:
            crashed.add(name)
            raise ApplicationError(f"worker lost after {name}", type="WorkerLost")
        return result

    return around


class SlowStep:
    """The named step (optionally only in jobs of one workflow type) is held before doing its
    work until the test releases it, once the job has seen the test's cancel. The hold sends
    no heartbeat, so the step never learns of the cancel (as a control step, which never
    heartbeats, does not): its work is done after the cancel, and the job must unwind it.
    With `after`, the step does its work first and is held before it answers: what it wrote
    is there while its workflow still waits for it.
    `seconds` only bounds the hold, so a test that fails early does not hang its worker."""

    def __init__(
        self,
        step: str,
        seconds: float = 60.0,
        workflow_type: str | None = None,
        *,
        after: bool = False,
    ) -> None:
        self.step, self.seconds, self.workflow_type = step, seconds, workflow_type
        self.after = after
        self.started = threading.Event()
        self._released = threading.Event()

    def __call__(self, name: str, call: Callable[[], Any]) -> Any:
        ours = self.workflow_type in (None, activity.info().workflow_type)
        if name != self.step or not ours or self.started.is_set():
            return call()
        result = call() if self.after else None
        self.started.set()
        self._released.wait(self.seconds)
        return result if self.after else call()

    async def wait_started(self, timeout: float = 30.0) -> None:
        await wait_until(self.started.is_set, timeout=timeout, what=f"{self.step} to run")

    def release(self) -> None:
        self._released.set()


async def cancel_seen(handle: WorkflowHandle[Any, Any], timeout: float = 30.0) -> None:
    """Wait until the workflow has run a workflow task after the cancel request reached it,
    so it has seen the cancel (Temporal's cancel call returns once the server has it)."""

    async def seen() -> bool:
        requested = False
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
                requested = True
            elif requested and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return True
        return False

    await wait_until(seen, timeout=timeout, what=f"{handle.id} to see its cancel")


def run_twice(name: str, call: Callable[[], Any]) -> Any:
    """Every step runs twice, as at-least-once delivery allows; the second result is used."""
    call()
    return call()


@dataclass
class Harness:
    client: Client
    cloud: Cloud
    task_queue: str
    driver: SimulatorDriver
    faults: list[dict[str, Any]] = field(default_factory=list)

    async def deploy(
        self,
        zone: DemoCloud,
        name: str = "web-1",
        *,
        offering_id: UUID | None = None,
        job_id: UUID | None = None,
    ) -> WorkflowHandle[Any, Any]:
        job_id = job_id or uuid.uuid4()
        order = DeploymentOrder(
            account_id=zone.admin_account_id,
            zone_id=zone.zone_id,
            service_offering_id=offering_id or zone.small_offering_id,
            template_id=zone.template_id,
            network_id=zone.network_id,
            name=name,
            display_name=name,
        )
        return await self.client.start_workflow(
            "DeployVirtualMachine",
            DeployVirtualMachineRequest(job_id=job_id, order=order, summary=f"deploy {name}"),
            id=str(job_id),
            task_queue=self.task_queue,
            # A workflow task that keeps failing would otherwise retry for ever.
            execution_timeout=timedelta(seconds=90),
        )


@asynccontextmanager
async def running_worker(
    client: Client,
    cloud: Cloud,
    *,
    around: Callable[[str, Callable[[], Any]], Any] | None = None,
    driver: SimulatorDriver | None = None,
    task_queue: str | None = None,
    power_control: IpmiPowerControl | None = None,
) -> AsyncIterator[Harness]:
    faults: list[dict[str, Any]] = []
    driver = driver or SimulatorDriver(lambda: faults)
    activities: Sequence[Any] = control_plane_activities(
        cloud, {driver.hypervisor: driver}, power_control=power_control
    )
    if around is not None:
        activities = [wrap_activity(a, around) for a in activities]
    queue = task_queue or f"test-{uuid.uuid4().hex[:8]}"
    worker: Worker = build_worker(client, queue, activities, threads=16)
    async with worker:
        yield Harness(client, cloud, queue, driver, faults)


@dataclass(frozen=True)
class Leaks:
    reservations: dict[str, list[str]]
    ip_addresses: list[str]
    pool_allocations: dict[str, int]
    simulator_vms: list[str]
    simulator_volumes: list[str]

    @property
    def none(self) -> bool:
        return not (
            self.reservations
            or self.ip_addresses
            or self.pool_allocations
            or self.simulator_vms
            or self.simulator_volumes
        )


def leaks_of(cloud: Cloud, zone: DemoCloud, driver: SimulatorDriver, job_id: UUID) -> Leaks:
    """What a job still holds anywhere: capacity, IPs, storage, hypervisor VMs and disks."""
    vm_id = str(virtual_machine_id_for(job_id))
    volume_id = str(root_volume_id_for(job_id))
    reservations = {
        str(host_id): [vm for vm in cloud.load(Host, host_id).reservations if vm == vm_id]
        for host_id in zone.host_ids
    }
    network = cloud.load(GuestNetwork, zone.network_id)
    pools = {
        str(pool_id): cloud.load(PrimaryStorage, pool_id).allocations.get(volume_id, 0)
        for pool_id in zone.pool_ids
    }
    return Leaks(
        reservations={h: r for h, r in reservations.items() if r},
        ip_addresses=[ip for ip, owner in network.allocations.items() if owner == vm_id],
        pool_allocations={p: n for p, n in pools.items() if n},
        simulator_vms=[
            vm.vm_id
            for host_id in zone.host_ids
            for vm in driver.vms_on(str(host_id))
            if vm.vm_id == vm_id
        ],
        simulator_volumes=[
            v.volume_id
            for pool_id in zone.pool_ids
            for v in driver.volumes_on(str(pool_id))
            if v.volume_id == volume_id
        ],
    )


def vm_of(cloud: Cloud, job_id: UUID) -> VirtualMachine:
    return cloud.load(VirtualMachine, virtual_machine_id_for(job_id))


def volume_of(cloud: Cloud, job_id: UUID) -> Volume:
    return cloud.load(Volume, root_volume_id_for(job_id))


def job_of(cloud: Cloud, job_id: UUID) -> Job:
    return cloud.load(Job, job_id)


async def enqueue(harness: Harness, queue: JobQueue, submission: VmJobSubmission) -> VmJobAccepted:
    """Submit a job to its resource's queue exactly as the API does (signal-with-start, then
    the job recorded queued)."""
    job_id = await enqueue_job(harness.client, harness.task_queue, harness.cloud, queue, submission)
    return VmJobAccepted(job_id=job_id)


async def started(client: Client, job_id: UUID, timeout: float = 60.0) -> WorkflowHandle[Any, Any]:
    """The job's workflow once its queue has started it (a submission only signals the queue)."""
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(str(job_id))

    async def exists() -> bool:
        try:
            await handle.describe()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            return False
        return True

    await wait_until(exists, timeout=timeout, what=f"job {job_id}'s workflow to start")
    return handle


async def step_reached(
    client: Client, job_id: UUID | str, prefix: str, timeout: float = 30.0
) -> WorkflowHandle[Any, Any]:
    """The job's workflow once its current step starts with `prefix`."""
    handle = await started(client, UUID(str(job_id)), timeout)

    async def step() -> str:
        current: str = await handle.query("current_step")
        return current

    await wait_until(
        step,
        lambda current: current.startswith(prefix),
        timeout=timeout,
        what=f"job {job_id} to reach {prefix!r}",
    )
    return handle


async def outcome(
    client: Client, job_id: UUID, *, cloud: Cloud | None = None, timeout: float = 120.0
) -> tuple[str, Any]:
    """('succeeded', result) or ('ended', error) once the job ended. A job its queue has not
    started yet has no workflow: wait for one. A job that never gets a workflow of its own
    (it joined an identical one, or its queue refused it) ends in its record only: pass the
    `cloud` to read it there."""
    deadline = time.monotonic() + timeout
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(str(job_id))
    while True:
        try:
            await handle.describe()
            break
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
        job = cloud.find(Job, job_id) if cloud is not None else None
        if job is not None and job.status.is_final:
            if job.status.value == "succeeded":
                return "succeeded", job.result
            return "ended", ApplicationError(job.error_text or job.status.value, job.error_code)
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} never started nor ended")
        await asyncio.sleep(0.05)
    try:
        return "succeeded", await handle.result()
    except Exception as error:
        return "ended", error


def event_names(cloud: Cloud, aggregate_id: UUID) -> list[str]:
    return [type(e).__qualname__ for e in cloud.events.get(aggregate_id)]


async def queue_drained(client: Client, vm_id: UUID, timeout: float = 20.0) -> list[str]:
    """The VM queue's job ids once it has learned that every job ended."""
    return await queue_settled_to(client, vm_id, [], timeout)


async def queue_settled_to(
    client: Client, vm_id: UUID, expected: Sequence[UUID], timeout: float = 20.0
) -> list[str]:
    """The VM queue's job ids once they are `expected`. A job's end reaches its queue on the
    queue's next workflow task, a moment after the job's own result, so a job that just ended
    may still be listed."""
    queue = client.get_workflow_handle(vm_queue_id(vm_id))
    wanted = [str(job_id) for job_id in expected]

    async def ids() -> list[str]:
        return [str(job["job_id"]) for job in await queue.query("jobs")]

    return await wait_until(
        ids, lambda listed: listed == wanted, timeout=timeout, what=f"the queue to list {wanted}"
    )
