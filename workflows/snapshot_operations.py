"""Volume snapshots as jobs: take one (createSnapshot), delete one, revert a volume to one, make
a volume or a template from one.

They are volume jobs: they run in the queue of the snapshot's volume (its VM's, `vm/<vm_id>`,
while the volume is attached; the volume's own otherwise, also after the volume was deleted,
since a snapshot outlives it), so a snapshot is never deleted while it is being reverted to or
copied, and a volume is never snapshotted while it is being resized or migrated. Each runs as a
saga: an undo is registered before each step that changes the world, and a failure or a
cancellation unwinds in reverse.

Points of no return, in words the API returns with its 409: a snapshot once its backup is
recorded (delete it instead), a delete once the copies are being deleted, a revert once the
disk is being overwritten, a new volume once it is recorded (delete it instead), a template
once its image is being made.

A snapshot taken for a recurring policy then prunes the policy's oldest backed-up snapshots
while they are more than the policy keeps (CloudStack's maxsnaps); a copy that cannot be
deleted leaves that snapshot BackedUp for the next run, and the new snapshot stays taken.
"""

from __future__ import annotations

from typing import Generic, TypeVar
from uuid import UUID

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.drivers.hypervisor import TemplateRef, VolumeInfo, VolumeSnapshotInfo
    from activities.hypervisor import HypervisorActivities
    from activities.snapshot_operation_models import (
        RevertOrder,
        SnapshotOrder,
        SnapshotRemovalOrder,
        SnapshotStep,
        TemplateOrder,
        TemplateRecord,
        VolumeFromSnapshotOrder,
    )
    from activities.snapshot_operations import SnapshotOperationActivities
    from activities.volume_operation_models import VolumeJobInput
    from domain.job_results import (
        JobResult,
        SnapshotJobResult,
        SnapshotTaken,
        TemplateFromSnapshot,
        VolumeFromSnapshot,
    )
    from domain.volume_requests import (
        DeleteSnapshotRequest,
        RevertSnapshotRequest,
        SnapshotJobRequest,
        SnapshotVolumeRequest,
        TemplateFromSnapshotRequest,
        VolumeFromSnapshotRequest,
    )

from workflows.retry_policies import HYPERVISOR_RETRY, UNDO_RETRY
from workflows.saga import Saga
from workflows.volume_operations import VolumeJob

#: The snapshot operation's own input model, and its job's result.
Q = TypeVar(
    "Q",
    bound=SnapshotVolumeRequest
    | DeleteSnapshotRequest
    | RevertSnapshotRequest
    | VolumeFromSnapshotRequest
    | TemplateFromSnapshotRequest,
)
R = TypeVar("R", bound=JobResult)


class SnapshotJob(VolumeJob[Q, R], Generic[Q, R]):
    """A volume job about a snapshot: deleting a snapshot's copies is shared by delete and
    pruning."""

    async def _remove_copies(
        self, order: SnapshotRemovalOrder, *, retry: RetryPolicy = HYPERVISOR_RETRY
    ) -> None:
        if order.primary is not None:
            await self._hypervisor(
                HypervisorActivities.delete_volume_snapshot,
                order.primary,
                order.task_queue,
                f"delete snapshot {order.snapshot_id} on primary storage",
                retry=retry,
            )
        if order.backup is not None:
            assert order.backup.secondary is not None
            await self._hypervisor(
                HypervisorActivities.delete_snapshot_backup,
                order.backup,
                order.task_queue,
                f"delete snapshot {order.snapshot_id} on {order.backup.secondary.name}",
                retry=retry,
            )

    @staticmethod
    def _snapshot_step(
        request: SnapshotJobRequest,
        *,
        pool_id: UUID | None = None,
        secondary_storage_id: UUID | None = None,
        policy_id: UUID | None = None,
        template_id: UUID | None = None,
    ) -> SnapshotStep:
        return SnapshotStep(
            job_id=request.job_id,
            volume_id=request.volume_id,
            snapshot_id=request.snapshot_id,
            pool_id=pool_id,
            secondary_storage_id=secondary_storage_id,
            policy_id=policy_id,
            template_id=template_id,
        )


@workflow.defn(name="CreateSnapshot")
class CreateSnapshot(SnapshotJob[SnapshotVolumeRequest, SnapshotTaken]):
    """Snapshot on primary storage, back up to secondary storage, remove the primary copy;
    for a policy, prune its oldest."""

    @workflow.run
    async def run(self, request: SnapshotVolumeRequest) -> SnapshotTaken:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[SnapshotVolumeRequest], saga: Saga
    ) -> SnapshotTaken:
        request = given.request
        self._enter("checking the volume")
        order: SnapshotOrder = await self._control(
            SnapshotOperationActivities.begin, given, "check, hold secondary storage"
        )
        step = self._snapshot_step(
            request,
            pool_id=order.pool_id,
            secondary_storage_id=order.secondary_storage_id,
            policy_id=request.policy_id,
        )
        work, queue = order.work, order.task_queue
        assert work.pool is not None and work.secondary is not None
        saga.add("books", self._undo(SnapshotOperationActivities.undo, step))
        saga.add(
            "primary",
            self._hypervisor_undo(HypervisorActivities.delete_volume_snapshot, work, queue),
        )
        self._enter(f"snapshotting on {work.pool.name}")
        taken: VolumeSnapshotInfo = await self._hypervisor(
            HypervisorActivities.snapshot_volume,
            work,
            queue,
            f"snapshot the disk on {work.pool.name}",
        )
        await self._control(
            SnapshotOperationActivities.record_on_primary,
            step.model_copy(update={"path": taken.path}),
            "record CreatedOnPrimary, the volume free again",
        )
        saga.add(
            "backup",
            self._hypervisor_undo(HypervisorActivities.delete_snapshot_backup, work, queue),
        )
        self._enter(f"backing up to {work.secondary.name}")
        backup: VolumeSnapshotInfo = await self._hypervisor(
            HypervisorActivities.backup_volume_snapshot,
            work,
            queue,
            f"back up to {work.secondary.name}",
        )
        self._no_return = "the snapshot is backed up; delete it instead"
        await self._control(
            SnapshotOperationActivities.record_backed_up,
            step.model_copy(update={"path": backup.path, "size_bytes": backup.size_bytes}),
            "record BackedUp",
        )
        saga.forget()
        self._enter("removing the copy on primary storage")
        try:
            await self._hypervisor(
                HypervisorActivities.delete_volume_snapshot,
                work,
                queue,
                f"delete the copy on {work.pool.name}",
            )
            await self._control(
                SnapshotOperationActivities.record_primary_copy_removed,
                step,
                "record the primary copy removed",
            )
        except ActivityError as error:
            # The backup is what counts; the snapshot keeps the primary copy on its books
            # and deleting the snapshot removes it later.
            workflow.logger.warning("primary copy of %s kept: %s", step.snapshot_id, error)
        pruned = await self._prune(step) if request.policy_id is not None else []
        return await self._control(
            SnapshotOperationActivities.complete,
            step.model_copy(update={"pruned": pruned}),
            "record the job done",
        )

    async def _prune(self, step: SnapshotStep) -> list[UUID]:
        self._enter("pruning the policy's oldest snapshots")
        orders: list[SnapshotRemovalOrder] = await self._control(
            SnapshotOperationActivities.begin_pruning,
            step,
            "mark the policy's snapshots beyond its maximum for deletion",
        )
        pruned: list[UUID] = []
        for order in orders:
            removal = SnapshotStep(
                job_id=step.job_id, volume_id=step.volume_id, snapshot_id=order.snapshot_id
            )
            try:
                await self._remove_copies(order)
            except ActivityError as error:
                await self._control(
                    SnapshotOperationActivities.keep_after_failed_removal,
                    removal.model_copy(update={"reason": f"could not delete: {error.cause}"}),
                    f"keep snapshot {order.snapshot_id} (its copies could not be deleted)",
                    retry=UNDO_RETRY,
                )
                continue
            await self._control(
                SnapshotOperationActivities.finish_removal,
                removal,
                f"record snapshot {order.snapshot_id} Destroyed",
                retry=UNDO_RETRY,
            )
            pruned.append(order.snapshot_id)
        return pruned


@workflow.defn(name="DeleteSnapshot")
class DeleteSnapshot(SnapshotJob[DeleteSnapshotRequest, SnapshotJobResult]):
    """Destroying, delete the copies, Destroyed with the secondary storage's bytes back."""

    @workflow.run
    async def run(self, request: DeleteSnapshotRequest) -> SnapshotJobResult:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[DeleteSnapshotRequest], saga: Saga
    ) -> SnapshotJobResult:
        self._enter("checking the snapshot")
        order: SnapshotRemovalOrder = await self._control(
            SnapshotOperationActivities.begin_delete, given, "check, record Destroying"
        )
        step = self._snapshot_step(given.request)
        saga.add("books", self._undo(SnapshotOperationActivities.undo_delete, step))
        self._no_return = "the snapshot's copies are being deleted"
        self._enter("deleting the snapshot's copies")
        await self._remove_copies(order)
        saga.forget()
        await self._control(
            SnapshotOperationActivities.finish_removal,
            step,
            "record Destroyed, give the secondary storage's bytes back",
            retry=UNDO_RETRY,
        )
        return await self._control(
            SnapshotOperationActivities.complete_delete, step, "record the job done"
        )


@workflow.defn(name="RevertSnapshot")
class RevertSnapshot(SnapshotJob[RevertSnapshotRequest, VolumeFromSnapshot]):
    """RevertSnapshotting, overwrite the disk from the backup, Ready at the snapshot's size."""

    @workflow.run
    async def run(self, request: RevertSnapshotRequest) -> VolumeFromSnapshot:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[RevertSnapshotRequest], saga: Saga
    ) -> VolumeFromSnapshot:
        self._enter("checking the volume and the snapshot")
        order: RevertOrder = await self._control(
            SnapshotOperationActivities.begin_revert, given, "check, record RevertSnapshotting"
        )
        step = self._snapshot_step(given.request)
        saga.add("books", self._undo(SnapshotOperationActivities.undo_revert, step))
        self._no_return = "the disk is being overwritten with the snapshot"
        self._enter("overwriting the disk with the snapshot")
        reverted: VolumeInfo = await self._hypervisor(
            HypervisorActivities.revert_volume_to_snapshot,
            order.work,
            order.task_queue,
            "overwrite the disk from the backup",
        )
        saga.forget()
        return await self._control(
            SnapshotOperationActivities.complete_revert,
            step.model_copy(update={"size_bytes": reverted.size_bytes}),
            "record the volume reverted",
            retry=UNDO_RETRY,
        )


@workflow.defn(name="CreateVolumeFromSnapshot")
class CreateVolumeFromSnapshot(SnapshotJob[VolumeFromSnapshotRequest, VolumeFromSnapshot]):
    """A new data volume made at once on primary storage from the snapshot's backup."""

    @workflow.run
    async def run(self, request: VolumeFromSnapshotRequest) -> VolumeFromSnapshot:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[VolumeFromSnapshotRequest], saga: Saga
    ) -> VolumeFromSnapshot:
        self._enter("checking the snapshot, choosing a pool")
        order: VolumeFromSnapshotOrder = await self._control(
            SnapshotOperationActivities.begin_volume, given, "check, reserve the pool's bytes"
        )
        step = self._snapshot_step(given.request, pool_id=order.pool_id)
        work = order.work
        assert work.pool is not None
        saga.add("books", self._undo(SnapshotOperationActivities.undo_volume, step))
        saga.add(
            "disk",
            self._hypervisor_undo(
                HypervisorActivities.delete_volume, order.removal, order.task_queue
            ),
        )
        self._enter(f"making the disk on {work.pool.name}")
        made: VolumeInfo = await self._hypervisor(
            HypervisorActivities.create_volume_from_snapshot,
            work,
            order.task_queue,
            f"make the disk on {work.pool.name} from the backup",
        )
        self._no_return = "the volume is made; delete it instead"
        result = await self._control(
            SnapshotOperationActivities.complete_volume,
            step.model_copy(update={"path": made.path, "size_bytes": made.size_bytes}),
            "record the volume Ready",
        )
        saga.forget()
        return result


@workflow.defn(name="CreateTemplateFromSnapshot")
class CreateTemplateFromSnapshot(SnapshotJob[TemplateFromSnapshotRequest, TemplateFromSnapshot]):
    """A private template on secondary storage from the snapshot's backup."""

    @workflow.run
    async def run(self, request: TemplateFromSnapshotRequest) -> TemplateFromSnapshot:
        return await self._execute_volume(request)

    async def perform_volume(
        self, given: VolumeJobInput[TemplateFromSnapshotRequest], saga: Saga
    ) -> TemplateFromSnapshot:
        request = given.request
        self._enter("checking the snapshot")
        order: TemplateOrder = await self._control(
            SnapshotOperationActivities.begin_template, given, "check, hold secondary storage"
        )
        step = self._snapshot_step(
            request,
            secondary_storage_id=order.secondary_storage_id,
            template_id=request.template_id,
        )
        saga.add("books", self._undo(SnapshotOperationActivities.undo_template, step))
        saga.add(
            "image",
            self._hypervisor_undo(
                HypervisorActivities.delete_template, order.work, order.task_queue
            ),
        )
        self._no_return = "the template image is being made"
        self._enter("making the template image")
        image: TemplateRef = await self._hypervisor(
            HypervisorActivities.create_template_from_snapshot,
            order.work,
            order.task_queue,
            "make the template image from the backup",
        )
        result = await self._control(
            SnapshotOperationActivities.complete_template,
            TemplateRecord(
                request=request,
                url=image.url,
                image_format=image.format,
                size_bytes=image.size_bytes,
            ),
            "register the template",
        )
        saga.forget()
        return result


SNAPSHOT_OPERATION_WORKFLOWS: tuple[type, ...] = (
    CreateSnapshot,
    DeleteSnapshot,
    RevertSnapshot,
    CreateVolumeFromSnapshot,
    CreateTemplateFromSnapshot,
)
