"""Start, stop, reboot, destroy, recover, expunge and migrate a VM, change its service offering
(stopped) and restore its root volume from a template, and create, revert to and delete its
snapshots: one job workflow each.

Every job is a child of its VM's queue (`workflows/vm_queue.py`) and starts by waiting for its
turn (the `grant` signal), so operations on one VM never overlap. Then it runs as a saga: each
step that changes the world registers its undo before it runs, and a failure or a cancellation
unwinds in reverse and leaves the VM in the stable state it started from.

Cancellation goes through the `cancel` update: its validator refuses (and the API answers 409)
once the job is past its point of no return, which each job states in words (a stop whose VM
is already recorded Stopped cannot be undone; an expunge that deleted disks cannot either). A
queued job that is cancelled leaves the queue at once. Every step is cancelled with
WAIT_CANCELLATION_COMPLETED, so an undo never races the step it undoes; a step that finishes
anyway (a hypervisor call that could not be interrupted, a short control step) is followed by a
safe point, where the cancel takes effect and the step's registered undo gives its work back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any
from uuid import UUID

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.deployment_models import Placement, VmLaunch, VmRemoval
    from activities.errors import TRY_ELSEWHERE
    from activities.hypervisor import HypervisorActivities
    from activities.vm_operation_models import (
        Begun,
        DestroyStep,
        ExpungeOrder,
        HostStep,
        JobResult,
        JobVm,
        MigrationPlan,
        MigrationRequest,
        MigrationStep,
        OfferingChange,
        OperationInput,
        OperationOutcome,
        PlanStartInput,
        RestoreOrder,
        RestoreRequest,
        RestoreStep,
        SnapshotOrder,
        SnapshotStep,
        VmOnHost,
        VolumeCleanup,
    )
    from activities.vm_operations import VmOperationActivities
    from domain.errors import ErrorCode
    from domain.job_requests import VirtualMachineOperationRequest
    from domain.placement import START_RETRY_ATTEMPTS

from workflows.deploy_virtual_machine import (
    CONTROL_RETRY,
    HYPERVISOR_HEARTBEAT_TIMEOUT,
    HYPERVISOR_RETRY,
    UNDO_RETRY,
)
from workflows.job_state import error_type, failure_of, is_cancellation, set_job_state
from workflows.saga import Saga

#: The error type of an expunge that failed after it began deleting: the VM stays Expunging
#: and its queue tries the expunge again later.
EXPUNGE_INCOMPLETE = "ExpungeIncomplete"
PAST_NO_RETURN = "PastPointOfNoReturn"


class VirtualMachineJob:
    """What every VM job shares: waiting for its turn, cancellation, the saga, the record."""

    def __init__(self) -> None:
        self._step = "queued"
        self._granted = False
        self._cancel_requested = False
        self._no_return: str | None = None
        self._expunging = False
        self._work: asyncio.Task[dict[str, Any]] | None = None

    # -- the queue's and the API's view --------------------------------------------------------
    @workflow.signal(name="grant")
    def grant(self) -> None:
        """The VM's queue says it is this job's turn."""
        self._granted = True

    @workflow.query(name="current_step")
    def current_step(self) -> str:
        return self._step

    @workflow.update(name="cancel")
    async def cancel(self, reason: str) -> str:
        """Cancel: a queued job leaves the queue, a running one unwinds. Answers which."""
        was = "running" if self._granted else "queued"
        self._cancel_requested = True
        if self._work is not None and not self._work.done():
            self._work.cancel()
        return was

    @cancel.validator
    def _may_cancel(self, reason: str) -> None:
        if self._no_return is not None:
            raise ApplicationError(
                f"the job is past its point of no return: {self._no_return}", type=PAST_NO_RETURN
            )

    # -- the run, shared ---------------------------------------------------------------------
    async def _execute(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        given = OperationInput(request=request, submitted_at=workflow.info().start_time)
        return await self._shielded(
            self._run_job(
                perform=lambda saga: self.perform(given, saga),
                record_queued_cancelled=lambda: self._control(
                    VmOperationActivities.record_queued_cancelled,
                    self._outcome(given, 0, "cancelled while queued", cancelled=True),
                    "record the job cancelled while queued",
                    retry=UNDO_RETRY,
                ),
                record_failure=lambda code, text, cancelled: self._control(
                    VmOperationActivities.fail,
                    self._outcome(given, code, text, cancelled=cancelled),
                    "record the failure",
                    retry=UNDO_RETRY,
                ),
            )
        )

    async def _shielded(self, job: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        """Run the job as a task of its own, so Temporal's cancellation of this workflow can be
        weighed like the cancel update instead of interrupting whatever runs."""
        self._work = asyncio.create_task(job)
        try:
            return await asyncio.shield(self._work)
        except asyncio.CancelledError:
            # Temporal cancelled this workflow (its queue went away, or an operator): the same
            # as the cancel update, unless the job is past its point of no return.
            self._cancel_requested = True
            if self._no_return is None and not self._work.done():
                self._work.cancel()
            return await self._work

    async def _run_job(
        self,
        *,
        perform: Callable[[Saga], Awaitable[dict[str, Any]]],
        record_queued_cancelled: Callable[[], Awaitable[object]],
        record_failure: Callable[[int, str, bool], Awaitable[object]],
    ) -> dict[str, Any]:
        """Wait for the turn, run the job's steps as a saga, and on failure or cancel unwind
        and record how it ended (the records are the job kind's own)."""
        try:
            if self._cancel_requested:
                raise asyncio.CancelledError()
            await workflow.wait_condition(lambda: self._granted)
        except asyncio.CancelledError:
            self._no_return = "it was cancelled while queued"
            await record_queued_cancelled()
            set_job_state("cancelled")
            self._enter("cancelled")
            raise
        set_job_state("running")
        saga = Saga()
        try:
            result = await perform(saga)
        except BaseException as error:
            if isinstance(error, GeneratorExit):
                raise  # the worker dropped this run from its cache: nothing to unwind here
            # From here on the job only unwinds: a cancel now would interrupt the undos.
            self._no_return = self._no_return or "it is already unwinding"
            cancelled = is_cancellation(error)
            code, text, kind = failure_of(error)
            if self._expunging and not cancelled:
                kind = EXPUNGE_INCOMPLETE
            self._enter("unwinding")
            await saga.unwind()
            if saga.failures:
                text += " (could not undo: " + "; ".join(saga.failures) + ")"
            await record_failure(code, text, cancelled)
            set_job_state("cancelled" if cancelled else "failed")
            self._enter("cancelled" if cancelled else "failed")
            if cancelled:
                raise
            raise ApplicationError(text, code, type=kind, non_retryable=True) from None
        set_job_state("succeeded")
        self._enter("succeeded")
        return result

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        """The operation's own steps: every VM job workflow implements it."""
        raise NotImplementedError

    # -- steps shared by several operations -------------------------------------------------
    async def _begin(self, given: OperationInput) -> Begun:
        self._enter(f"checking the VM can {given.request.operation.value}")
        begun: Begun = await self._control(
            VmOperationActivities.begin, given, f"check and record {given.request.operation.value}"
        )
        return begun

    async def _stop_on_host(
        self, request: VirtualMachineOperationRequest, saga: Saga, on: VmOnHost
    ) -> None:
        """Power off and undefine on the host, each with its undo (power on, define again)."""
        self._enter(f"stopping on {on.host.name}")
        saga.add("power", self._hypervisor_undo(HypervisorActivities.start_vm, on, on.task_queue))
        await self._hypervisor(
            HypervisorActivities.stop_vm,
            on,
            on.task_queue,
            f"{'force ' if on.forced else ''}power off on {on.host.name}",
        )
        saga.add("definition", self._redefine(request, on))
        await self._hypervisor(
            HypervisorActivities.destroy_vm,
            VmRemoval(host=on.host, vm_id=on.vm_id),
            on.task_queue,
            f"undefine on {on.host.name} (disks kept)",
        )

    async def _expunge(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        """Delete from the hypervisor, delete the disks, release the IP, remove: no undo."""
        self._no_return = "the VM is being expunged (disks are deleted)"
        self._expunging = True
        self._enter("expunging")
        step = JobVm(job_id=request.job_id, vm_id=request.vm_id)
        order: ExpungeOrder = await self._control(
            VmOperationActivities.begin_expunge, step, "record Expunging", retry=UNDO_RETRY
        )
        if order.vm is not None:
            await self._hypervisor(
                HypervisorActivities.destroy_vm,
                order.vm,
                order.vm_task_queue,
                f"delete the VM from {order.vm.host.name}",
                retry=UNDO_RETRY,
            )
        if order.volume is not None:
            await self._hypervisor(
                HypervisorActivities.delete_volume,
                order.volume,
                order.volume_task_queue,
                f"delete the root volume from {order.volume.pool.name}",
                retry=UNDO_RETRY,
            )
        result: dict[str, Any] = await self._control(
            VmOperationActivities.finish_expunge,
            step,
            "record volumes expunged, IP released, VM removed",
            retry=UNDO_RETRY,
        )
        return result

    # -- plumbing -----------------------------------------------------------------------------
    def _enter(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(f"**Step:** {step}")

    @staticmethod
    def _outcome(
        given: OperationInput, code: int, text: str, *, cancelled: bool
    ) -> OperationOutcome:
        return OperationOutcome(
            request=given.request,
            submitted_at=given.submitted_at,
            error_code=code,
            error_text=text,
            cancelled=cancelled,
        )

    def _stop_if_cancelled(self) -> None:
        """A safe point: a cancel that came while a step could not be interrupted (it finished
        anyway) unwinds here, before the next step, unless the job is past its point of no
        return or already unwinding."""
        if self._cancel_requested and self._no_return is None:
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
        task_queue: str | None,
        summary: str,
        *,
        retry: RetryPolicy = HYPERVISOR_RETRY,
    ) -> Any:
        self._stop_if_cancelled()
        result = await workflow.execute_activity_method(
            activity,
            arg,
            task_queue=task_queue or workflow.info().task_queue,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=HYPERVISOR_HEARTBEAT_TIMEOUT,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            retry_policy=retry,
            summary=summary,
        )
        self._stop_if_cancelled()
        return result

    def _undo(self, activity: Any, arg: Any) -> Any:
        async def undo() -> None:
            await self._control(activity, arg, f"undo: {activity.__name__}", retry=UNDO_RETRY)

        return undo

    def _hypervisor_undo(self, activity: Any, arg: Any, task_queue: str | None) -> Any:
        async def undo() -> None:
            await self._hypervisor(
                activity, arg, task_queue, f"undo: {activity.__name__}", retry=UNDO_RETRY
            )

        return undo

    def _redefine(self, request: VirtualMachineOperationRequest, on: VmOnHost) -> Any:
        """Undo of undefining: define the VM on the host again and power it on."""

        async def undo() -> None:
            launch: VmLaunch = await self._control(
                VmOperationActivities.launch_spec,
                HostStep(job_id=request.job_id, vm_id=request.vm_id, host_id=UUID(on.host.host_id)),
                "undo: the VM's definition",
                retry=UNDO_RETRY,
            )
            await self._hypervisor(
                HypervisorActivities.launch_vm,
                launch,
                on.task_queue,
                f"undo: define and start again on {on.host.name}",
                retry=UNDO_RETRY,
            )

        return undo


def _required_host(begun: Begun, what: str) -> VmOnHost:
    if begun.on_host is None:
        raise ApplicationError(
            f"cannot {what}: the VM is on no host", int(ErrorCode.INTERNAL_ERROR), type="NoHost"
        )
    return begun.on_host


@workflow.defn(name="StartVirtualMachine")
class StartVirtualMachine(VirtualMachineJob):
    """Stopped -> Starting -> Running: plan (last host first), reserve, define and power on."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        await self._begin(given)
        avoid_hosts: list[Any] = []
        last_failure = ""
        for attempt in range(1, START_RETRY_ATTEMPTS + 1):
            self._enter(f"planning (attempt {attempt})")
            try:
                placement: Placement = await self._control(
                    VmOperationActivities.plan_start,
                    PlanStartInput(
                        job_id=request.job_id,
                        vm_id=request.vm_id,
                        attempt=attempt,
                        avoid_host_ids=avoid_hosts,
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
            step = HostStep(
                job_id=request.job_id,
                vm_id=request.vm_id,
                host_id=placement.host_id,
                attempt=attempt,
            )
            try:
                self._enter(f"reserving capacity on {placement.host_name}")
                saga.add("capacity", self._undo(VmOperationActivities.release_capacity, step))
                await self._control(
                    VmOperationActivities.reserve_capacity,
                    step,
                    f"reserve capacity on {placement.host_name}",
                )
                self._enter(f"starting on {placement.host_name}")
                launch: VmLaunch = await self._control(
                    VmOperationActivities.prepare_launch, step, "record Starting on the host"
                )
                saga.add(
                    "vm on host",
                    self._hypervisor_undo(
                        HypervisorActivities.destroy_vm,
                        VmRemoval(host=launch.host, vm_id=launch.spec.vm_id),
                        placement.hypervisor_task_queue,
                    ),
                )
                await self._hypervisor(
                    HypervisorActivities.launch_vm,
                    launch,
                    placement.hypervisor_task_queue,
                    f"define and start on {placement.host_name}",
                )
                self._no_return = "the VM is already running; stop it instead"
                self._enter("recording Running")
                result: dict[str, Any] = await self._control(
                    VmOperationActivities.complete_start, step, "record Running"
                )
                return result
            except ActivityError as error:
                if error_type(error) not in TRY_ELSEWHERE:
                    raise
                _, last_failure, _ = failure_of(error)
                self._no_return = None
                await saga.unwind(only=("vm on host", "capacity"))
                avoid_hosts.append(placement.host_id)
        raise ApplicationError(
            f"gave up after {START_RETRY_ATTEMPTS} attempts; last failure: {last_failure}",
            int(ErrorCode.INSUFFICIENT_CAPACITY),
            type="InsufficientCapacity",
        )


@workflow.defn(name="StopVirtualMachine")
class StopVirtualMachine(VirtualMachineJob):
    """Running -> Stopping -> Stopped: power off, undefine, give the host's capacity back."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        on = _required_host(await self._begin(given), "stop")
        await self._stop_on_host(request, saga, on)
        self._no_return = "the VM is stopped; start it instead"
        self._enter("recording Stopped")
        result: dict[str, Any] = await self._control(
            VmOperationActivities.complete_stop,
            JobVm(job_id=request.job_id, vm_id=request.vm_id),
            "record Stopped and release the host's capacity",
        )
        return result


@workflow.defn(name="RebootVirtualMachine")
class RebootVirtualMachine(VirtualMachineJob):
    """A Running VM rebooted on its host; it stays Running."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        on = _required_host(await self._begin(given), "reboot")
        self._no_return = "the hypervisor is rebooting the VM"
        self._enter(f"rebooting on {on.host.name}")
        await self._hypervisor(
            HypervisorActivities.reboot_vm, on, on.task_queue, f"reboot on {on.host.name}"
        )
        result: dict[str, Any] = await self._control(
            VmOperationActivities.complete_reboot,
            JobVm(job_id=request.job_id, vm_id=request.vm_id),
            "record the reboot",
        )
        return result


@workflow.defn(name="DestroyVirtualMachine")
class DestroyVirtualMachine(VirtualMachineJob):
    """Stop if running, then Destroyed (IP and volumes kept, recoverable until expunged); with
    `expunge`, expunged at once. Otherwise the VM's queue expunges it after the delay."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        begun = await self._begin(given)
        if begun.state == "Stopping":
            await self._stop_on_host(request, saga, _required_host(begun, "stop"))
        self._no_return = "the VM is destroyed; recover it instead"
        self._enter("recording Destroyed")
        done: JobResult = await self._control(
            VmOperationActivities.complete_destroy,
            DestroyStep(
                job_id=request.job_id,
                vm_id=request.vm_id,
                expunge=request.expunge,
                expunge_delay_seconds=request.expunge_delay_seconds,
            ),
            "record Destroyed" + (" (expunge follows)" if request.expunge else ""),
        )
        saga.forget()
        if done.result is not None:
            return done.result
        return await self._expunge(request)


@workflow.defn(name="RecoverVirtualMachine")
class RecoverVirtualMachine(VirtualMachineJob):
    """Destroyed -> Stopped, before the expunge."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        await self._begin(given)
        self._no_return = "the VM is being recovered"
        result: dict[str, Any] = await self._control(
            VmOperationActivities.recover,
            JobVm(job_id=request.job_id, vm_id=request.vm_id),
            "record Stopped (recovered)",
        )
        return result


@workflow.defn(name="ExpungeVirtualMachine")
class ExpungeVirtualMachine(VirtualMachineJob):
    """A Destroyed (or Error) VM deleted for good: hypervisor, disks, IP, then removed."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        await self._begin(given)
        return await self._expunge(given.request)


@workflow.defn(name="MigrateVirtualMachine")
class MigrateVirtualMachine(VirtualMachineJob):
    """Running -> Migrating -> Running on another host of the same cluster (live, the disks
    stay on their shared pool): plan the target, reserve it, move the VM, record it there and
    give the source host its room back. A failure moves the VM back if it had moved, releases
    the target and leaves the VM Running on its source host."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        _required_host(await self._begin(given), "migrate")
        self._enter("choosing the target host")
        plan: MigrationPlan = await self._control(
            VmOperationActivities.plan_migration,
            MigrationRequest(job_id=request.job_id, vm_id=request.vm_id, host_id=request.host_id),
            "choose the target host" if request.host_id is None else "check the target host",
        )
        target = plan.target_host_name
        step = HostStep(job_id=request.job_id, vm_id=request.vm_id, host_id=plan.target_host_id)
        self._enter(f"reserving capacity on {target}")
        saga.add("capacity", self._undo(VmOperationActivities.release_capacity, step))
        await self._control(
            VmOperationActivities.reserve_capacity, step, f"reserve capacity on {target}"
        )
        self._enter(f"migrating to {target}")
        source = plan.there.source.name
        saga.add(
            "migration",
            self._hypervisor_undo(HypervisorActivities.migrate_vm, plan.back, plan.task_queue),
        )
        # Cancelling a live migration half-way is the hypervisor's business, not ours.
        self._no_return = "the hypervisor is migrating the VM"
        await self._hypervisor(
            HypervisorActivities.migrate_vm,
            plan.there,
            plan.task_queue,
            f"live-migrate from {source} to {target}",
        )
        self._enter(f"recording Running on {target}")
        result: dict[str, Any] = await self._control(
            VmOperationActivities.complete_migration,
            MigrationStep(
                job_id=request.job_id,
                vm_id=request.vm_id,
                source_host_id=plan.source_host_id,
                target_host_id=plan.target_host_id,
            ),
            f"record Running on {target} and release {source}'s capacity",
        )
        return result


def _snapshot_step(request: VirtualMachineOperationRequest) -> SnapshotStep:
    if request.snapshot_id is None:
        raise ApplicationError(
            "a VM snapshot job needs its snapshot id",
            int(ErrorCode.PARAM_ERROR),
            type="InvalidParameter",
        )
    return SnapshotStep(job_id=request.job_id, vm_id=request.vm_id, snapshot_id=request.snapshot_id)


@workflow.defn(name="CreateVmSnapshot")
class CreateVmSnapshot(VirtualMachineJob):
    """A Running VM's snapshot (with its memory when asked): Allocated -> Creating -> Ready.
    A failure deletes what the hypervisor made and leaves the snapshot in Error."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        step = _snapshot_step(request)
        await self._begin(given)
        self._enter("recording the snapshot Creating")
        order: SnapshotOrder = await self._control(
            VmOperationActivities.begin_snapshot, given, "record the snapshot Creating"
        )
        host = order.on_host.host.name
        self._enter(f"snapshotting on {host}")
        saga.add(
            "snapshot",
            self._hypervisor_undo(
                HypervisorActivities.delete_snapshot, order.snapshot, order.on_host.task_queue
            ),
        )
        memory: bool = await self._hypervisor(
            HypervisorActivities.create_snapshot,
            order.snapshot,
            order.on_host.task_queue,
            f"snapshot{' with memory' if order.memory else ' (disks only)'} on {host}",
        )
        self._enter("recording the snapshot Ready")
        result: dict[str, Any] = await self._control(
            VmOperationActivities.complete_snapshot,
            step.model_copy(update={"memory": memory}),
            "record the snapshot Ready",
        )
        return result


@workflow.defn(name="RevertToVmSnapshot")
class RevertToVmSnapshot(VirtualMachineJob):
    """A Running VM back to a Ready snapshot: Running after a snapshot with memory, Stopped
    (through Stopping, its host's capacity given back) after a disk-only one. A failure leaves
    the VM Running on its host and the snapshot Ready."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        step = _snapshot_step(request)
        await self._begin(given)
        self._enter("recording the revert")
        order: SnapshotOrder = await self._control(
            VmOperationActivities.begin_revert, step, "record the snapshot Reverting"
        )
        on = order.on_host
        self._enter(f"reverting on {on.host.name}")
        # A revert cannot be taken back; what can be is the VM's power: running again.
        saga.add("power", self._hypervisor_undo(HypervisorActivities.start_vm, on, on.task_queue))
        self._no_return = "the hypervisor is reverting the VM's disks"
        await self._hypervisor(
            HypervisorActivities.revert_snapshot,
            order.snapshot,
            on.task_queue,
            f"revert to the snapshot on {on.host.name}",
        )
        if not order.memory:
            # Powered off by the revert: a stopped VM is defined on no hypervisor.
            saga.add("definition", self._redefine(request, on))
            await self._hypervisor(
                HypervisorActivities.destroy_vm,
                VmRemoval(host=on.host, vm_id=on.vm_id),
                on.task_queue,
                f"undefine on {on.host.name} (disks kept)",
            )
        self._enter("recording the revert")
        result: dict[str, Any] = await self._control(
            VmOperationActivities.complete_revert,
            step,
            "record the snapshot Ready and the VM " + ("Running" if order.memory else "Stopped"),
        )
        return result


@workflow.defn(name="DeleteVmSnapshot")
class DeleteVmSnapshot(VirtualMachineJob):
    """A Ready (or Error) snapshot deleted: Expunging -> Removed. Deleting cannot be undone; a
    failure leaves the snapshot in Error (CloudStack's rule), to be deleted again."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        step = _snapshot_step(request)
        await self._begin(given)
        self._enter("recording the snapshot Expunging")
        order: SnapshotOrder = await self._control(
            VmOperationActivities.begin_delete_snapshot, step, "record the snapshot Expunging"
        )
        host = order.on_host.host.name
        self._no_return = "the hypervisor is deleting the snapshot"
        self._enter(f"deleting the snapshot on {host}")
        await self._hypervisor(
            HypervisorActivities.delete_snapshot,
            order.snapshot,
            order.on_host.task_queue,
            f"delete the snapshot on {host}",
        )
        self._enter("recording the snapshot Removed")
        result: dict[str, Any] = await self._control(
            VmOperationActivities.complete_delete_snapshot, step, "record the snapshot Removed"
        )
        return result


@workflow.defn(name="ScaleVirtualMachine")
class ChangeServiceOffering(VirtualMachineJob):
    """A Stopped VM takes another service offering (CloudStack's scaleVirtualMachine of a
    stopped VM, logged as VM.UPGRADE): one write, checked again at run time. A stopped VM
    holds no capacity and is defined on no hypervisor: its next start sizes it anew."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        if request.service_offering_id is None:
            raise ApplicationError(
                "a service offering change needs the offering",
                int(ErrorCode.PARAM_ERROR),
                type="InvalidParameter",
            )
        await self._begin(given)
        self._no_return = "the VM is taking its new service offering"
        self._enter("recording the new service offering")
        result: dict[str, Any] = await self._control(
            VmOperationActivities.change_service_offering,
            OfferingChange(
                job_id=request.job_id,
                vm_id=request.vm_id,
                service_offering_id=request.service_offering_id,
            ),
            "record the new service offering",
        )
        return result


@workflow.defn(name="RestoreVirtualMachine")
class RestoreVirtualMachine(VirtualMachineJob):
    """A VM's root volume made again from a template (its own, or another for its hypervisor):
    stop it on its host if it runs, make the new root volume on the old one's pool, swap, define
    and start it again with the new disk if it ran; then the old root volume is deleted (the
    point of no return). A failure before that leaves the VM as it was: its old root volume,
    Running on its host or Stopped, and nothing of the new volume left."""

    @workflow.run
    async def run(self, request: VirtualMachineOperationRequest) -> dict[str, Any]:
        return await self._execute(request)

    async def perform(self, given: OperationInput, saga: Saga) -> dict[str, Any]:
        request = given.request
        job_id, vm_id = request.job_id, request.vm_id
        begun = await self._begin(given)
        on: VmOnHost | None = None
        if begun.state == "Stopping":
            on = _required_host(begun, "stop")
            await self._stop_on_host(request, saga, on)

        self._enter("creating the new root volume")
        saga.add("new root volume", self._restore_volume_undo(request))
        order: RestoreOrder = await self._control(
            VmOperationActivities.begin_restore_volume,
            RestoreRequest(job_id=job_id, vm_id=vm_id, template_id=request.template_id),
            "book the new root volume",
        )
        created = await self._hypervisor(
            HypervisorActivities.create_volume,
            order.volume,
            order.task_queue,
            f"create the new root volume on {order.volume.pool.name}",
        )
        await self._control(
            VmOperationActivities.complete_restore_volume,
            RestoreStep(
                job_id=job_id,
                vm_id=vm_id,
                volume_id=order.new_volume_id,
                pool_id=order.pool_id,
                path=created.path,
                size_bytes=created.size_bytes,
            ),
            "record the new root volume Ready",
        )

        self._enter("swapping the root volume")
        saga.add(
            "root volume swap",
            self._undo(
                VmOperationActivities.unswap_root_volume,
                RestoreStep(
                    job_id=job_id,
                    vm_id=vm_id,
                    volume_id=order.old_volume_id,
                    template_id=order.old_template_id,
                ),
            ),
        )
        await self._control(
            VmOperationActivities.swap_root_volume,
            RestoreStep(
                job_id=job_id,
                vm_id=vm_id,
                volume_id=order.new_volume_id,
                template_id=order.template_id,
            ),
            "boot the VM from the new root volume",
        )

        if on is not None:
            self._enter(f"starting on {on.host.name} with the new root volume")
            launch: VmLaunch = await self._control(
                VmOperationActivities.launch_spec,
                HostStep(job_id=job_id, vm_id=vm_id, host_id=UUID(on.host.host_id)),
                "the VM's definition with its new root volume",
            )
            saga.add(
                "vm on host",
                self._hypervisor_undo(
                    HypervisorActivities.destroy_vm,
                    VmRemoval(host=on.host, vm_id=on.vm_id),
                    on.task_queue,
                ),
            )
            await self._hypervisor(
                HypervisorActivities.launch_vm,
                launch,
                on.task_queue,
                f"define and start on {on.host.name} with the new root volume",
            )

        self._no_return = "the old root volume is being deleted"
        self._enter("deleting the old root volume")
        old = RestoreStep(job_id=job_id, vm_id=vm_id, volume_id=order.old_volume_id)
        cleanup: VolumeCleanup = await self._control(
            VmOperationActivities.complete_restore,
            old,
            "record the VM restored and the old root volume Expunging",
        )
        saga.forget()
        if cleanup.removal is not None:
            try:
                await self._hypervisor(
                    HypervisorActivities.delete_volume,
                    cleanup.removal,
                    cleanup.task_queue,
                    f"delete the old root volume from {cleanup.removal.pool.name}",
                    retry=UNDO_RETRY,
                )
            except ActivityError as error:
                code, text, kind = failure_of(error)
                raise ApplicationError(
                    f"the VM was restored, but its old root volume {order.old_volume_id} could "
                    f"not be deleted from {cleanup.removal.pool.name} ({text}); it stays "
                    "Expunging and detached, holding its bytes on the pool: delete the volume "
                    "again to finish",
                    code,
                    type=kind,
                    non_retryable=True,
                ) from None
        result: dict[str, Any] = await self._control(
            VmOperationActivities.finish_restore,
            old,
            "record the old root volume Expunged",
            retry=UNDO_RETRY,
        )
        return result

    def _restore_volume_undo(self, request: VirtualMachineOperationRequest) -> Any:
        """Delete the new root disk (nothing to do if it was never made), then record the
        volume Expunged and its pool's bytes given back."""

        async def undo() -> None:
            step = RestoreStep(job_id=request.job_id, vm_id=request.vm_id, volume_id=request.vm_id)
            cleanup: VolumeCleanup = await self._control(
                VmOperationActivities.restore_volume_removal,
                step,
                "undo: locate the new root volume",
                retry=UNDO_RETRY,
            )
            if cleanup.removal is not None:
                await self._hypervisor(
                    HypervisorActivities.delete_volume,
                    cleanup.removal,
                    cleanup.task_queue,
                    "undo: delete the new root volume",
                    retry=UNDO_RETRY,
                )
            await self._control(
                VmOperationActivities.abandon_restore_volume,
                step,
                "undo: expunge the new root volume",
                retry=UNDO_RETRY,
            )

        return undo


VM_OPERATION_WORKFLOWS: tuple[type, ...] = (
    StartVirtualMachine,
    StopVirtualMachine,
    RebootVirtualMachine,
    DestroyVirtualMachine,
    RecoverVirtualMachine,
    ExpungeVirtualMachine,
    MigrateVirtualMachine,
    CreateVmSnapshot,
    RevertToVmSnapshot,
    DeleteVmSnapshot,
    ChangeServiceOffering,
    RestoreVirtualMachine,
)
