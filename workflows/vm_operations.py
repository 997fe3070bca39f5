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

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar
from uuid import UUID

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.deployment_models import Placement, VmLaunch, VmRemoval
    from activities.hypervisor import HypervisorActivities
    from activities.vm_operation_models import (
        Begun,
        DestroyRecorded,
        DestroyStep,
        ExpungeOrder,
        HostStep,
        JobVm,
        MigrationPlan,
        MigrationRequest,
        MigrationStep,
        MovedDisks,
        OfferingChange,
        OperationInput,
        OperationOutcome,
        PlanStartInput,
        RestoreOrder,
        RestoreRequest,
        RestoreStep,
        SnapshotOrder,
        SnapshotStep,
        StorageStep,
        VmOnHost,
        VolumeCleanup,
    )
    from activities.vm_operations import VmOperationActivities
    from domain.errors import ErrorCode
    from domain.job_results import (
        DestroyedVm,
        ExpungedVm,
        MigratedVm,
        ServiceOfferingChanged,
        VmJobResult,
        VmRestored,
        VmSnapshotJobResult,
        VmSnapshotTaken,
    )
    from domain.vm_requests import (
        ChangeServiceOfferingRequest,
        DeleteVmSnapshotRequest,
        DestroyVmRequest,
        ExpungeVmRequest,
        MigrateVmRequest,
        RebootVmRequest,
        RecoverVmRequest,
        RestoreVmRequest,
        RevertToVmSnapshotRequest,
        SnapshotVmRequest,
        StartVmRequest,
        StopVmRequest,
        VmOperationRequest,
        VmRequest,
        VmSnapshotJobRequest,
    )

from workflows.job import JobWorkflow
from workflows.job_state import failure_of
from workflows.placement import Attempt, AvoidSet, launch_on_host, place_and_start
from workflows.retry_policies import UNDO_RETRY
from workflows.saga import Saga

#: The error type of an expunge that failed after it began deleting: the VM stays Expunging
#: and its queue tries the expunge again later.
EXPUNGE_INCOMPLETE = "ExpungeIncomplete"

#: The operation's own input model, and its own result.
Q = TypeVar("Q", bound=VmOperationRequest)
R = TypeVar("R", bound=VmJobResult)
Undo = Callable[[], Awaitable[None]]


class VirtualMachineJob(JobWorkflow[R], Generic[Q, R]):
    """A job on one VM: its records (the failure puts the VM back in the stable state it
    started from) and the steps several VM operations share."""

    async def _execute_operation(self, request: Q) -> R:
        submitted_at = workflow.info().start_time
        return await self._execute_recorded(
            lambda saga: self.perform(request, saga),
            fail=VmOperationActivities.fail,
            cancelled_while_queued=VmOperationActivities.record_queued_cancelled,
            outcome=lambda code, text, cancelled: OperationOutcome(
                request=request,
                submitted_at=submitted_at,
                error_code=code,
                error_text=text,
                cancelled=cancelled,
            ),
        )

    async def perform(self, request: Q, saga: Saga) -> R:
        """The operation's own steps: every VM job workflow implements it."""
        raise NotImplementedError

    # -- steps shared by several operations -------------------------------------------------
    async def _begin(self, request: Q) -> Begun:
        operation = request.operation.value
        self._enter(f"checking the VM can {operation}")
        given: OperationInput[VmOperationRequest] = OperationInput(
            request=request, submitted_at=workflow.info().start_time
        )
        return await self._control(
            VmOperationActivities.begin, given, f"check and record {operation}"
        )

    async def _stop_on_host(self, request: VmRequest, saga: Saga, on: VmOnHost) -> None:
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

    async def _expunge(self, request: VmRequest) -> ExpungedVm:
        """Delete from the hypervisor, delete the disks, release the IP, remove: no undo."""
        self._no_return = "the VM is being expunged (disks are deleted)"
        # Past here the VM stays Expunging: its queue tries the expunge again later.
        self._fails_as = EXPUNGE_INCOMPLETE
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
        return await self._control(
            VmOperationActivities.finish_expunge,
            step,
            "record volumes expunged, IP released, VM removed",
            retry=UNDO_RETRY,
        )

    def _redefine(self, request: VmRequest, on: VmOnHost) -> Undo:
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
class StartVirtualMachine(VirtualMachineJob[StartVmRequest, VmJobResult]):
    """Stopped -> Starting -> Running: place and start (last host first), as a deployment
    does once its disk and IP exist."""

    running_no_return = "the VM is already running; stop it instead"

    def __init__(self) -> None:
        super().__init__()
        self._vm: JobVm | None = None
        self._ha_restart = False

    @workflow.run
    async def run(self, request: StartVmRequest) -> VmJobResult:
        return await self._execute_operation(request)

    async def perform(self, request: StartVmRequest, saga: Saga) -> VmJobResult:
        self._vm = JobVm(job_id=request.job_id, vm_id=request.vm_id)
        self._ha_restart = request.ha_restart
        await self._begin(request)
        return await place_and_start(self, saga, self)

    # -- the placement steps of a start ---------------------------------------------------------
    def _host_step(self, attempt: Attempt) -> HostStep:
        assert self._vm is not None
        return HostStep(
            job_id=self._vm.job_id,
            vm_id=self._vm.vm_id,
            host_id=attempt.placement.host_id,
            attempt=attempt.number,
        )

    async def plan(self, attempt: int, avoid: AvoidSet) -> Placement:
        assert self._vm is not None
        placement: Placement = await self._control(
            VmOperationActivities.plan_start,
            PlanStartInput(
                job_id=self._vm.job_id,
                vm_id=self._vm.vm_id,
                attempt=attempt,
                avoid_host_ids=avoid.host_ids,
                ha_restart=self._ha_restart,
            ),
            f"plan a host (attempt {attempt})",
        )
        return placement

    async def reserve(self, saga: Saga, attempt: Attempt) -> None:
        step = self._host_step(attempt)
        saga.add("capacity", self._undo(VmOperationActivities.release_capacity, step))
        await self._control(
            VmOperationActivities.reserve_capacity,
            step,
            f"reserve capacity on {attempt.placement.host_name}",
        )

    async def prepare(self, saga: Saga, attempt: Attempt) -> None:
        """A stopped VM keeps its disk and IP: nothing to make before it starts."""

    async def launch(self, saga: Saga, attempt: Attempt) -> None:
        await launch_on_host(
            self,
            saga,
            VmOperationActivities.prepare_launch,
            self._host_step(attempt),
            attempt.placement,
        )

    async def complete(self, attempt: Attempt) -> VmJobResult:
        return await self._control(
            VmOperationActivities.complete_start, self._host_step(attempt), "record Running"
        )

    async def after_failed_attempt(self, attempt: Attempt, avoid: AvoidSet) -> None:
        avoid.host_ids.append(attempt.placement.host_id)


@workflow.defn(name="StopVirtualMachine")
class StopVirtualMachine(VirtualMachineJob[StopVmRequest, VmJobResult]):
    """Running -> Stopping -> Stopped: power off, undefine, give the host's capacity back."""

    @workflow.run
    async def run(self, request: StopVmRequest) -> VmJobResult:
        return await self._execute_operation(request)

    async def perform(self, request: StopVmRequest, saga: Saga) -> VmJobResult:
        on = _required_host(await self._begin(request), "stop")
        await self._stop_on_host(request, saga, on)
        self._no_return = "the VM is stopped; start it instead"
        self._enter("recording Stopped")
        return await self._control(
            VmOperationActivities.complete_stop,
            JobVm(job_id=request.job_id, vm_id=request.vm_id),
            "record Stopped and release the host's capacity",
        )


@workflow.defn(name="RebootVirtualMachine")
class RebootVirtualMachine(VirtualMachineJob[RebootVmRequest, VmJobResult]):
    """A Running VM rebooted on its host; it stays Running."""

    @workflow.run
    async def run(self, request: RebootVmRequest) -> VmJobResult:
        return await self._execute_operation(request)

    async def perform(self, request: RebootVmRequest, saga: Saga) -> VmJobResult:
        on = _required_host(await self._begin(request), "reboot")
        self._no_return = "the hypervisor is rebooting the VM"
        self._enter(f"rebooting on {on.host.name}")
        await self._hypervisor(
            HypervisorActivities.reboot_vm, on, on.task_queue, f"reboot on {on.host.name}"
        )
        return await self._control(
            VmOperationActivities.complete_reboot,
            JobVm(job_id=request.job_id, vm_id=request.vm_id),
            "record the reboot",
        )


@workflow.defn(name="DestroyVirtualMachine")
class DestroyVirtualMachine(VirtualMachineJob[DestroyVmRequest, DestroyedVm | ExpungedVm]):
    """Stop if running, then Destroyed (IP and volumes kept, recoverable until expunged); with
    `expunge`, expunged at once. Otherwise the VM's queue expunges it after the delay."""

    @workflow.run
    async def run(self, request: DestroyVmRequest) -> DestroyedVm | ExpungedVm:
        return await self._execute_operation(request)

    async def perform(self, request: DestroyVmRequest, saga: Saga) -> DestroyedVm | ExpungedVm:
        begun = await self._begin(request)
        if begun.state == "Stopping":
            await self._stop_on_host(request, saga, _required_host(begun, "stop"))
        self._no_return = "the VM is destroyed; recover it instead"
        self._enter("recording Destroyed")
        done: DestroyRecorded = await self._control(
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
class RecoverVirtualMachine(VirtualMachineJob[RecoverVmRequest, VmJobResult]):
    """Destroyed -> Stopped, before the expunge."""

    @workflow.run
    async def run(self, request: RecoverVmRequest) -> VmJobResult:
        return await self._execute_operation(request)

    async def perform(self, request: RecoverVmRequest, saga: Saga) -> VmJobResult:
        await self._begin(request)
        self._no_return = "the VM is being recovered"
        return await self._control(
            VmOperationActivities.recover,
            JobVm(job_id=request.job_id, vm_id=request.vm_id),
            "record Stopped (recovered)",
        )


@workflow.defn(name="ExpungeVirtualMachine")
class ExpungeVirtualMachine(VirtualMachineJob[ExpungeVmRequest, ExpungedVm]):
    """A Destroyed (or Error) VM deleted for good: hypervisor, disks, IP, then removed."""

    @workflow.run
    async def run(self, request: ExpungeVmRequest) -> ExpungedVm:
        return await self._execute_operation(request)

    async def perform(self, request: ExpungeVmRequest, saga: Saga) -> ExpungedVm:
        await self._begin(request)
        return await self._expunge(request)


@workflow.defn(name="MigrateVirtualMachine")
class MigrateVirtualMachine(VirtualMachineJob[MigrateVmRequest, MigratedVm]):
    """Running -> Migrating -> Running on another host of the same cluster (live, the disks
    stay on their shared pool): plan the target, reserve it, move the VM, record it there and
    give the source host its room back. A failure moves the VM back if it had moved, releases
    the target and leaves the VM Running on its source host.

    A target in another cluster of the zone takes the disks along (migrate with storage): the
    target cluster's pools reserve room for them before the hypervisor moves VM and disks in
    one operation, and the last record puts each disk on its new pool. A failure also gives
    that room back, the disks staying Ready where they were."""

    @workflow.run
    async def run(self, request: MigrateVmRequest) -> MigratedVm:
        return await self._execute_operation(request)

    async def perform(self, request: MigrateVmRequest, saga: Saga) -> MigratedVm:
        _required_host(await self._begin(request), "migrate")
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
        source = plan.there.source.name
        moved = MovedDisks(paths={})
        if plan.storage_there is not None and plan.storage_back is not None:
            moved = await self._migrate_with_storage(request, plan, saga)
            done = f"record Running on {target}, the disks moved, and release {source}'s room"
        else:
            self._enter(f"migrating to {target}")
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
            done = f"record Running on {target} and release {source}'s capacity"
        self._enter(f"recording Running on {target}")
        return await self._control(
            VmOperationActivities.complete_migration,
            MigrationStep(
                job_id=request.job_id,
                vm_id=request.vm_id,
                source_host_id=plan.source_host_id,
                target_host_id=plan.target_host_id,
                disk_moves=plan.disk_moves,
                paths=moved.paths,
            ),
            done,
        )

    async def _migrate_with_storage(
        self, request: MigrateVmRequest, plan: MigrationPlan, saga: Saga
    ) -> MovedDisks:
        """The disks' part of a migration across clusters (see the class's docstring): room on
        the target pools, then VM and disks moved by the hypervisor in one operation."""
        assert plan.storage_there is not None and plan.storage_back is not None
        workflow.patched("migrate-with-storage")  # a new command sequence, for new plans only
        target, source = plan.target_host_name, plan.there.source.name
        pools = ", ".join(sorted({m.target_pool_name for m in plan.disk_moves}))
        disks = StorageStep(job_id=request.job_id, vm_id=request.vm_id, disk_moves=plan.disk_moves)
        self._enter(f"reserving room for {len(plan.disk_moves)} disks on {pools}")
        saga.add("storage", self._undo(VmOperationActivities.release_storage, disks))
        await self._control(
            VmOperationActivities.reserve_storage, disks, f"reserve room on {pools}"
        )
        self._enter(f"migrating to {target} with its disks")
        saga.add(
            "migration",
            self._hypervisor_undo(
                HypervisorActivities.migrate_vm_with_storage, plan.storage_back, plan.task_queue
            ),
        )
        self._no_return = "the hypervisor is migrating the VM and its disks"
        moved: MovedDisks = await self._hypervisor(
            HypervisorActivities.migrate_vm_with_storage,
            plan.storage_there,
            plan.task_queue,
            f"live-migrate from {source} to {target}, disks to {pools}",
        )
        return moved


def _snapshot_step(request: VmSnapshotJobRequest) -> SnapshotStep:
    return SnapshotStep(job_id=request.job_id, vm_id=request.vm_id, snapshot_id=request.snapshot_id)


@workflow.defn(name="CreateVmSnapshot")
class CreateVmSnapshot(VirtualMachineJob[SnapshotVmRequest, VmSnapshotTaken]):
    """A Running VM's snapshot (with its memory when asked): Allocated -> Creating -> Ready.
    A failure deletes what the hypervisor made and leaves the snapshot in Error."""

    @workflow.run
    async def run(self, request: SnapshotVmRequest) -> VmSnapshotTaken:
        return await self._execute_operation(request)

    async def perform(self, request: SnapshotVmRequest, saga: Saga) -> VmSnapshotTaken:
        step = _snapshot_step(request)
        await self._begin(request)
        self._enter("recording the snapshot Creating")
        order: SnapshotOrder = await self._control(
            VmOperationActivities.begin_snapshot,
            OperationInput(request=request, submitted_at=workflow.info().start_time),
            "record the snapshot Creating",
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
        return await self._control(
            VmOperationActivities.complete_snapshot,
            step.model_copy(update={"memory": memory}),
            "record the snapshot Ready",
        )


@workflow.defn(name="RevertToVmSnapshot")
class RevertToVmSnapshot(VirtualMachineJob[RevertToVmSnapshotRequest, VmSnapshotJobResult]):
    """A Running VM back to a Ready snapshot: Running after a snapshot with memory, Stopped
    (through Stopping, its host's capacity given back) after a disk-only one. A failure leaves
    the VM Running on its host and the snapshot Ready."""

    @workflow.run
    async def run(self, request: RevertToVmSnapshotRequest) -> VmSnapshotJobResult:
        return await self._execute_operation(request)

    async def perform(self, request: RevertToVmSnapshotRequest, saga: Saga) -> VmSnapshotJobResult:
        step = _snapshot_step(request)
        await self._begin(request)
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
        return await self._control(
            VmOperationActivities.complete_revert,
            step,
            "record the snapshot Ready and the VM " + ("Running" if order.memory else "Stopped"),
        )


@workflow.defn(name="DeleteVmSnapshot")
class DeleteVmSnapshot(VirtualMachineJob[DeleteVmSnapshotRequest, VmSnapshotJobResult]):
    """A Ready (or Error) snapshot deleted: Expunging -> Removed. Deleting cannot be undone; a
    failure leaves the snapshot in Error (CloudStack's rule), to be deleted again."""

    @workflow.run
    async def run(self, request: DeleteVmSnapshotRequest) -> VmSnapshotJobResult:
        return await self._execute_operation(request)

    async def perform(self, request: DeleteVmSnapshotRequest, saga: Saga) -> VmSnapshotJobResult:
        step = _snapshot_step(request)
        await self._begin(request)
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
        return await self._control(
            VmOperationActivities.complete_delete_snapshot, step, "record the snapshot Removed"
        )


@workflow.defn(name="ScaleVirtualMachine")
class ChangeServiceOffering(
    VirtualMachineJob[ChangeServiceOfferingRequest, ServiceOfferingChanged]
):
    """A Stopped VM takes another service offering (CloudStack's scaleVirtualMachine of a
    stopped VM, logged as VM.UPGRADE): one write, checked again at run time. A stopped VM
    holds no capacity and is defined on no hypervisor: its next start sizes it anew."""

    @workflow.run
    async def run(self, request: ChangeServiceOfferingRequest) -> ServiceOfferingChanged:
        return await self._execute_operation(request)

    async def perform(
        self, request: ChangeServiceOfferingRequest, saga: Saga
    ) -> ServiceOfferingChanged:
        await self._begin(request)
        self._no_return = "the VM is taking its new service offering"
        self._enter("recording the new service offering")
        return await self._control(
            VmOperationActivities.change_service_offering,
            OfferingChange(
                job_id=request.job_id,
                vm_id=request.vm_id,
                service_offering_id=request.service_offering_id,
            ),
            "record the new service offering",
        )


@workflow.defn(name="RestoreVirtualMachine")
class RestoreVirtualMachine(VirtualMachineJob[RestoreVmRequest, VmRestored]):
    """A VM's root volume made again from a template (its own, or another for its hypervisor):
    stop it on its host if it runs, make the new root volume on the old one's pool, swap, define
    and start it again with the new disk if it ran; then the old root volume is deleted (the
    point of no return). A failure before that leaves the VM as it was: its old root volume,
    Running on its host or Stopped, and nothing of the new volume left."""

    @workflow.run
    async def run(self, request: RestoreVmRequest) -> VmRestored:
        return await self._execute_operation(request)

    async def perform(self, request: RestoreVmRequest, saga: Saga) -> VmRestored:
        job_id, vm_id = request.job_id, request.vm_id
        begun = await self._begin(request)
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
        return await self._control(
            VmOperationActivities.finish_restore,
            old,
            "record the old root volume Expunged",
            retry=UNDO_RETRY,
        )

    def _restore_volume_undo(self, request: RestoreVmRequest) -> Undo:
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
