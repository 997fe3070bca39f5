"""Create, attach, detach, resize, migrate and delete a data volume: one job workflow each.

A volume's jobs are serialized with its VM while it is attached (they go through the VM's
queue, `vm/<vm_id>`), and through the volume's own queue (`volume/<volume_id>`, the same
queue workflow) while it is detached. Like the VM's jobs, each waits for its turn (the `grant`
signal), then runs as a saga: each step that changes the world registers its undo before it
runs, and a failure or a cancellation unwinds in reverse and leaves the volume in the stable
state it started from. The waiting, the `cancel` update with its point-of-no-return validator
and the plumbing are the job base's (`workflows/job.py`); only the record steps differ.

Points of no return, in words the API returns with its 409: an attach once its record is being
written, a detach once the disk is unplugged, a resize once the disk is being grown (a disk is
never shrunk back), a migrate once the move is recorded (the source is then deleted), a delete
from its first step (a deleted volume is not recoverable).
"""

from __future__ import annotations

from typing import Generic, TypeVar
from uuid import UUID

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.deployment_models import VolumeRemoval
    from activities.drivers.hypervisor import VolumeInfo
    from activities.hypervisor import HypervisorActivities
    from activities.volume_operation_models import (
        AttachOrder,
        AttachStep,
        DeleteOrder,
        DetachOrder,
        DiskResize,
        MigrateOrder,
        MigrateStep,
        ResizeOrder,
        ResizeStep,
        VolumeJobInput,
        VolumeJobOutcome,
        VolumeStep,
    )
    from activities.volume_operations import VolumeOperationActivities
    from domain.job_results import DeletedVolume, JobResult, VolumeJobResult
    from domain.volume_requests import (
        AttachVolumeRequest,
        CreateVolumeRequest,
        DeleteVolumeRequest,
        DetachVolumeRequest,
        MigrateVolumeRequest,
        ResizeVolumeRequest,
        VolumeOperationRequest,
    )

from workflows.job import JobWorkflow
from workflows.retry_policies import UNDO_RETRY
from workflows.saga import Saga

#: The operation's own input model, and its job's result.
Q = TypeVar("Q", bound=VolumeOperationRequest)
R = TypeVar("R", bound=JobResult)


class VolumeJob(JobWorkflow[R], Generic[Q, R]):
    """A job on one volume: the base's turn, cancel and saga, with the volume's own record (a
    failure puts the volume back in the stable state it started from)."""

    async def _execute_volume(self, request: Q) -> R:
        given = VolumeJobInput(request=request, submitted_at=workflow.info().start_time)
        return await self._execute_recorded(
            lambda saga: self.perform_volume(given, saga),
            fail=VolumeOperationActivities.fail,
            cancelled_while_queued=VolumeOperationActivities.record_queued_cancelled,
            outcome=lambda code, text, cancelled: VolumeJobOutcome(
                request=given.request,
                submitted_at=given.submitted_at,
                error_code=code,
                error_text=text,
                cancelled=cancelled,
            ),
        )

    async def perform_volume(self, given: VolumeJobInput[Q], saga: Saga) -> R:
        """The operation's own steps: every volume job workflow implements it."""
        raise NotImplementedError


@workflow.defn(name="CreateVolume")
class CreateVolume(VolumeJob[CreateVolumeRequest, VolumeJobResult]):
    """Record a data volume Allocated: its disk is made when it is first attached."""

    @workflow.run
    async def run(self, request: CreateVolumeRequest) -> VolumeJobResult:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[CreateVolumeRequest], saga: Saga
    ) -> VolumeJobResult:
        self._enter("recording the volume Allocated")
        return await self._control(
            VolumeOperationActivities.create, given, "record the volume Allocated"
        )


@workflow.defn(name="AttachVolume")
class AttachVolume(VolumeJob[AttachVolumeRequest, VolumeJobResult]):
    """Reserve a device; make the disk if the volume was only allocated; plug it into the VM
    if it runs; record it attached."""

    @workflow.run
    async def run(self, request: AttachVolumeRequest) -> VolumeJobResult:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[AttachVolumeRequest], saga: Saga
    ) -> VolumeJobResult:
        request = given.request
        self._enter("checking the VM and the volume")
        order: AttachOrder = await self._control(
            VolumeOperationActivities.begin_attach, given, "check, reserve the device"
        )
        step = AttachStep(
            job_id=request.job_id,
            volume_id=request.volume_id,
            vm_id=request.vm_id,
            pool_id=order.pool_id,
            device_id=order.device_id,
            hypervisor=order.hypervisor,
        )
        saga.add("books", self._undo(VolumeOperationActivities.undo_attach, step))
        created: VolumeInfo | None = None
        if order.create is not None:
            self._enter(f"creating the disk on {order.create.pool.name}")
            saga.add(
                "disk",
                self._hypervisor_undo(
                    HypervisorActivities.delete_volume,
                    VolumeRemoval(
                        host=order.create.host,
                        pool=order.create.pool,
                        volume_id=order.create.spec.volume_id,
                    ),
                    order.create_task_queue,
                ),
            )
            created = await self._hypervisor(
                HypervisorActivities.create_volume,
                order.create,
                order.create_task_queue,
                f"create the disk on {order.create.pool.name}",
            )
        if order.plug is not None:
            plug = (
                order.plug if created is None else order.plug.model_copy(update={"volume": created})
            )
            self._enter(f"plugging in on {plug.host.name}")
            saga.add(
                "plug",
                self._hypervisor_undo(HypervisorActivities.detach_volume, plug, plug.task_queue),
            )
            await self._hypervisor(
                HypervisorActivities.attach_volume,
                plug,
                plug.task_queue,
                f"attach at device {plug.device_id} on {plug.host.name}",
            )
        self._no_return = "the volume is being recorded attached; detach it instead"
        self._enter("recording attached")
        result = await self._control(
            VolumeOperationActivities.complete_attach,
            step.model_copy(update={"created": created}),
            "record the volume attached",
        )
        saga.forget()
        return result


@workflow.defn(name="DetachVolume")
class DetachVolume(VolumeJob[DetachVolumeRequest, VolumeJobResult]):
    """Unplug the disk if the VM runs; record the volume detached (it is kept)."""

    @workflow.run
    async def run(self, request: DetachVolumeRequest) -> VolumeJobResult:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[DetachVolumeRequest], saga: Saga
    ) -> VolumeJobResult:
        request = given.request
        self._enter("checking the volume is attached")
        order: DetachOrder = await self._control(
            VolumeOperationActivities.begin_detach, given, "check the volume is attached"
        )
        if order.unplug is not None:
            plug = order.unplug
            self._enter(f"unplugging on {plug.host.name}")
            saga.add(
                "plug",
                self._hypervisor_undo(HypervisorActivities.attach_volume, plug, plug.task_queue),
            )
            await self._hypervisor(
                HypervisorActivities.detach_volume,
                plug,
                plug.task_queue,
                f"detach from the VM on {plug.host.name}",
            )
        self._no_return = "the volume is detached; attach it again instead"
        self._enter("recording detached")
        result = await self._control(
            VolumeOperationActivities.complete_detach,
            VolumeStep(job_id=request.job_id, volume_id=request.volume_id),
            "record the volume detached",
        )
        saga.forget()
        return result


@workflow.defn(name="ResizeVolume")
class ResizeVolume(VolumeJob[ResizeVolumeRequest, VolumeJobResult]):
    """Reserve the new size on the pool, grow the disk, record the size. A volume with no disk
    yet only changes its size on the books."""

    @workflow.run
    async def run(self, request: ResizeVolumeRequest) -> VolumeJobResult:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[ResizeVolumeRequest], saga: Saga
    ) -> VolumeJobResult:
        request = given.request
        self._enter("checking the new size")
        order: ResizeOrder = await self._control(
            VolumeOperationActivities.begin_resize, given, "check and reserve the new size"
        )
        step = ResizeStep(
            job_id=request.job_id,
            volume_id=request.volume_id,
            new_size_bytes=order.new_size_bytes,
        )
        if order.host is not None and order.pool is not None:
            saga.add("books", self._undo(VolumeOperationActivities.undo_resize, step))
            self._no_return = "the disk is being resized on primary storage"
            self._enter(f"resizing the disk on {order.pool.name}")
            await self._hypervisor(
                HypervisorActivities.resize_volume,
                DiskResize(
                    host=order.host,
                    pool=order.pool,
                    volume_id=str(request.volume_id),
                    size_bytes=order.new_size_bytes,
                ),
                order.task_queue,
                f"resize to {order.new_size_bytes} bytes on {order.pool.name}",
            )
            saga.forget()
            grown = step.model_copy(update={"disk_size_bytes": order.new_size_bytes})
            saga.add("books", self._undo(VolumeOperationActivities.undo_resize, grown))
        self._no_return = "the volume is resized"
        self._enter("recording the new size")
        result = await self._control(
            VolumeOperationActivities.complete_resize, step, "record the new size"
        )
        saga.forget()
        return result


@workflow.defn(name="MigrateVolume")
class MigrateVolume(VolumeJob[MigrateVolumeRequest, VolumeJobResult]):
    """Reserve the target pool, copy the disk there, record the move, delete the source."""

    @workflow.run
    async def run(self, request: MigrateVolumeRequest) -> VolumeJobResult:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[MigrateVolumeRequest], saga: Saga
    ) -> VolumeJobResult:
        request = given.request
        self._enter("checking the target pool")
        order: MigrateOrder = await self._control(
            VolumeOperationActivities.begin_migrate, given, "check and reserve the target pool"
        )
        copy = order.copy_order
        step = MigrateStep(
            job_id=request.job_id,
            volume_id=request.volume_id,
            target_pool_id=UUID(copy.target_pool.pool_id),
        )
        saga.add("books", self._undo(VolumeOperationActivities.undo_migrate, step))
        self._enter(f"copying to {copy.target_pool.name}")
        saga.add(
            "copy",
            self._hypervisor_undo(
                HypervisorActivities.delete_volume, order.target_removal, order.task_queue
            ),
        )
        copied: VolumeInfo = await self._hypervisor(
            HypervisorActivities.copy_volume,
            copy,
            order.task_queue,
            f"copy from {copy.source_pool.name} to {copy.target_pool.name}",
        )
        self._no_return = "the volume is recorded on the target pool"
        self._enter("recording the move")
        await self._control(
            VolumeOperationActivities.complete_migrate,
            step.model_copy(update={"path": copied.path}),
            f"record the volume on {copy.target_pool.name}",
        )
        saga.forget()
        self._enter(f"deleting the source disk on {copy.source_pool.name}")
        await self._hypervisor(
            HypervisorActivities.delete_volume,
            order.source_removal,
            order.task_queue,
            f"delete the source disk on {copy.source_pool.name}",
            retry=UNDO_RETRY,
        )
        return await self._control(
            VolumeOperationActivities.succeed,
            VolumeStep(job_id=request.job_id, volume_id=request.volume_id),
            "record the job done",
        )


@workflow.defn(name="DeleteVolume")
class DeleteVolume(VolumeJob[DeleteVolumeRequest, DeletedVolume]):
    """Destroy → Expunging (no way back), delete the disk, Expunged with the pool's bytes back.
    A delete that fails part way leaves the volume Expunging; deleting again finishes it."""

    @workflow.run
    async def run(self, request: DeleteVolumeRequest) -> DeletedVolume:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[DeleteVolumeRequest], saga: Saga
    ) -> DeletedVolume:
        request = given.request
        self._enter("checking the volume is detached")
        self._no_return = "the volume is being deleted"
        order: DeleteOrder = await self._control(
            VolumeOperationActivities.begin_delete, given, "check, record Expunging"
        )
        if order.removal is not None:
            self._enter(f"deleting the disk on {order.removal.pool.name}")
            await self._hypervisor(
                HypervisorActivities.delete_volume,
                order.removal,
                order.task_queue,
                f"delete the disk on {order.removal.pool.name}",
                retry=UNDO_RETRY,
            )
        return await self._control(
            VolumeOperationActivities.finish_delete,
            VolumeStep(job_id=request.job_id, volume_id=request.volume_id),
            "record Expunged, give the pool's bytes back",
            retry=UNDO_RETRY,
        )


VOLUME_OPERATION_WORKFLOWS: tuple[type, ...] = (
    CreateVolume,
    AttachVolume,
    DetachVolume,
    ResizeVolume,
    MigrateVolume,
    DeleteVolume,
)
