"""Volume snapshot activities on the control plane: decisions over the event store, no
hypervisor. Each is a thin call into `domain.snapshot_operations` or `domain.snapshot_uses`,
idempotent by command id, turning the plans into what the hypervisor worker is told (host,
pool, secondary storage)."""

from __future__ import annotations

from uuid import UUID

from temporalio import activity

from activities.deployment_models import VolumeRemoval
from activities.drivers.hypervisor import VolumeSpec
from activities.errors import reports_cloud_errors
from activities.refs import host_ref, pool_ref, secondary_ref
from activities.snapshot_operation_models import (
    RevertOrder,
    SnapshotOrder,
    SnapshotRemovalOrder,
    SnapshotStep,
    SnapshotWork,
    TemplateOrder,
    TemplateRecord,
    VolumeFromSnapshotOrder,
)
from activities.volume_operation_models import VolumeJobInput
from domain import snapshot_operations, snapshot_uses
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.host import Host
from domain.job_results import (
    SnapshotJobResult,
    SnapshotTaken,
    TemplateFromSnapshot,
    VolumeFromSnapshot,
)
from domain.snapshot import Snapshot
from domain.snapshot_operations import SnapshotRemovalPlan
from domain.volume_requests import (
    DeleteSnapshotRequest,
    RevertSnapshotRequest,
    SnapshotVolumeRequest,
    TemplateFromSnapshotRequest,
    VolumeFromSnapshotRequest,
)


class SnapshotOperationActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    # -- take ------------------------------------------------------------------------------
    @activity.defn(name="snapshot.begin")
    @reports_cloud_errors
    def begin(self, given: VolumeJobInput[SnapshotVolumeRequest]) -> SnapshotOrder:
        plan = snapshot_operations.begin_snapshot(self.cloud, given.request, given.submitted_at)
        return SnapshotOrder(
            work=SnapshotWork(
                host=host_ref(self.cloud, plan.host_id),
                volume_id=str(plan.volume_id),
                snapshot_id=str(plan.snapshot_id),
                pool=pool_ref(self.cloud, plan.pool_id),
                secondary=secondary_ref(self.cloud, plan.secondary_storage_id),
            ),
            task_queue=self._task_queue(plan.host_id),
            pool_id=plan.pool_id,
            secondary_storage_id=plan.secondary_storage_id,
        )

    @activity.defn(name="snapshot.undo")
    @reports_cloud_errors
    def undo(self, step: SnapshotStep) -> None:
        snapshot_operations.undo_snapshot(self.cloud, step.job_id, step.volume_id, step.snapshot_id)

    @activity.defn(name="snapshot.record_on_primary")
    @reports_cloud_errors
    def record_on_primary(self, step: SnapshotStep) -> None:
        assert step.pool_id is not None
        snapshot_operations.record_on_primary(
            self.cloud, step.job_id, step.volume_id, step.snapshot_id, step.pool_id, step.path
        )

    @activity.defn(name="snapshot.record_backed_up")
    @reports_cloud_errors
    def record_backed_up(self, step: SnapshotStep) -> SnapshotJobResult:
        assert step.secondary_storage_id is not None
        return snapshot_operations.record_backed_up(
            self.cloud,
            step.job_id,
            step.snapshot_id,
            step.secondary_storage_id,
            step.path,
            step.size_bytes,
        )

    @activity.defn(name="snapshot.record_primary_copy_removed")
    @reports_cloud_errors
    def record_primary_copy_removed(self, step: SnapshotStep) -> None:
        snapshot_operations.record_primary_copy_removed(self.cloud, step.job_id, step.snapshot_id)

    @activity.defn(name="snapshot.complete")
    @reports_cloud_errors
    def complete(self, step: SnapshotStep) -> SnapshotTaken:
        return snapshot_operations.complete_snapshot(
            self.cloud, step.job_id, step.snapshot_id, step.pruned
        )

    # -- prune, delete -----------------------------------------------------------------------
    @activity.defn(name="snapshot.begin_pruning")
    @reports_cloud_errors
    def begin_pruning(self, step: SnapshotStep) -> list[SnapshotRemovalOrder]:
        assert step.policy_id is not None
        plans = snapshot_operations.begin_pruning(self.cloud, step.job_id, step.policy_id)
        return [self._removal_order(plan) for plan in plans]

    @activity.defn(name="snapshot.keep_after_failed_removal")
    @reports_cloud_errors
    def keep_after_failed_removal(self, step: SnapshotStep) -> None:
        snapshot_operations.keep_snapshot_after_failed_removal(
            self.cloud, step.job_id, step.snapshot_id, step.reason
        )

    @activity.defn(name="snapshot.finish_removal")
    @reports_cloud_errors
    def finish_removal(self, step: SnapshotStep) -> SnapshotJobResult:
        return snapshot_operations.finish_snapshot_removal(
            self.cloud, step.job_id, step.snapshot_id
        )

    @activity.defn(name="snapshot.begin_delete")
    @reports_cloud_errors
    def begin_delete(self, given: VolumeJobInput[DeleteSnapshotRequest]) -> SnapshotRemovalOrder:
        plan = snapshot_operations.begin_delete_snapshot(
            self.cloud, given.request, given.submitted_at
        )
        return self._removal_order(plan)

    @activity.defn(name="snapshot.undo_delete")
    @reports_cloud_errors
    def undo_delete(self, step: SnapshotStep) -> None:
        snapshot_operations.undo_delete_snapshot(self.cloud, step.job_id, step.snapshot_id)

    @activity.defn(name="snapshot.complete_delete")
    @reports_cloud_errors
    def complete_delete(self, step: SnapshotStep) -> SnapshotJobResult:
        return snapshot_operations.complete_delete_snapshot(
            self.cloud, step.job_id, step.snapshot_id
        )

    # -- revert ----------------------------------------------------------------------------
    @activity.defn(name="snapshot.begin_revert")
    @reports_cloud_errors
    def begin_revert(self, given: VolumeJobInput[RevertSnapshotRequest]) -> RevertOrder:
        request = given.request
        plan = snapshot_uses.begin_revert(self.cloud, request, given.submitted_at)
        return RevertOrder(
            work=SnapshotWork(
                host=host_ref(self.cloud, plan.host_id),
                volume_id=str(request.volume_id),
                snapshot_id=str(request.snapshot_id),
                pool=pool_ref(self.cloud, plan.pool_id),
                secondary=secondary_ref(self.cloud, plan.secondary_storage_id),
            ),
            task_queue=self._task_queue(plan.host_id),
        )

    @activity.defn(name="snapshot.undo_revert")
    @reports_cloud_errors
    def undo_revert(self, step: SnapshotStep) -> None:
        snapshot_uses.undo_revert(self.cloud, step.job_id, step.volume_id)

    @activity.defn(name="snapshot.complete_revert")
    @reports_cloud_errors
    def complete_revert(self, step: SnapshotStep) -> VolumeFromSnapshot:
        return snapshot_uses.complete_revert(
            self.cloud, step.job_id, step.volume_id, step.snapshot_id, step.size_bytes
        )

    # -- a volume from a snapshot ----------------------------------------------------------------
    @activity.defn(name="snapshot.begin_volume")
    @reports_cloud_errors
    def begin_volume(
        self, given: VolumeJobInput[VolumeFromSnapshotRequest]
    ) -> VolumeFromSnapshotOrder:
        request = given.request
        plan = snapshot_uses.begin_volume_from_snapshot(self.cloud, request, given.submitted_at)
        host = host_ref(self.cloud, plan.host_id)
        pool = pool_ref(self.cloud, plan.pool_id)
        return VolumeFromSnapshotOrder(
            work=SnapshotWork(
                host=host,
                volume_id=str(request.volume_id),
                snapshot_id=str(request.snapshot_id),
                pool=pool,
                secondary=secondary_ref(self.cloud, plan.secondary_storage_id),
                spec=VolumeSpec(
                    volume_id=str(request.volume_id), name=plan.name, size_bytes=plan.size_bytes
                ),
            ),
            task_queue=self._task_queue(plan.host_id),
            pool_id=plan.pool_id,
            removal=VolumeRemoval(host=host, pool=pool, volume_id=str(request.volume_id)),
        )

    @activity.defn(name="snapshot.undo_volume")
    @reports_cloud_errors
    def undo_volume(self, step: SnapshotStep) -> None:
        assert step.pool_id is not None
        snapshot_uses.undo_volume_from_snapshot(
            self.cloud, step.job_id, step.volume_id, step.pool_id
        )

    @activity.defn(name="snapshot.complete_volume")
    @reports_cloud_errors
    def complete_volume(self, step: SnapshotStep) -> VolumeFromSnapshot:
        assert step.pool_id is not None
        return snapshot_uses.complete_volume_from_snapshot(
            self.cloud,
            step.job_id,
            step.volume_id,
            step.snapshot_id,
            step.pool_id,
            step.path,
            step.size_bytes,
        )

    # -- a template from a snapshot --------------------------------------------------------------
    @activity.defn(name="snapshot.begin_template")
    @reports_cloud_errors
    def begin_template(self, given: VolumeJobInput[TemplateFromSnapshotRequest]) -> TemplateOrder:
        request = given.request
        plan = snapshot_uses.begin_template_from_snapshot(self.cloud, request, given.submitted_at)
        snapshot = self.cloud.load(Snapshot, request.snapshot_id)
        return TemplateOrder(
            work=SnapshotWork(
                host=host_ref(self.cloud, plan.host_id),
                volume_id=str(snapshot.volume_id),
                snapshot_id=str(snapshot.id),
                secondary=secondary_ref(self.cloud, plan.secondary_storage_id),
                template_id=str(request.template_id),
            ),
            task_queue=self._task_queue(plan.host_id),
            secondary_storage_id=plan.secondary_storage_id,
        )

    @activity.defn(name="snapshot.undo_template")
    @reports_cloud_errors
    def undo_template(self, step: SnapshotStep) -> None:
        assert step.secondary_storage_id is not None and step.template_id is not None
        snapshot_uses.undo_template_from_snapshot(
            self.cloud, step.job_id, step.template_id, step.secondary_storage_id
        )

    @activity.defn(name="snapshot.complete_template")
    @reports_cloud_errors
    def complete_template(self, record: TemplateRecord) -> TemplateFromSnapshot:
        return snapshot_uses.complete_template_from_snapshot(
            self.cloud, record.request, record.url, record.image_format, record.size_bytes
        )

    # -- views for the hypervisor worker -----------------------------------------------------
    def _removal_order(self, plan: SnapshotRemovalPlan) -> SnapshotRemovalOrder:
        snapshot = self.cloud.load(Snapshot, plan.snapshot_id)
        work = SnapshotWork(
            host=host_ref(self.cloud, plan.host_id),
            volume_id=str(snapshot.volume_id),
            snapshot_id=str(snapshot.id),
        )
        return SnapshotRemovalOrder(
            snapshot_id=snapshot.id,
            primary=work.model_copy(update={"pool": pool_ref(self.cloud, plan.primary_pool_id)})
            if plan.primary_pool_id is not None
            else None,
            backup=work.model_copy(
                update={"secondary": secondary_ref(self.cloud, plan.secondary_storage_id)}
            )
            if plan.secondary_storage_id is not None
            else None,
            task_queue=self._task_queue(plan.host_id),
        )

    def _task_queue(self, host_id: UUID) -> str | None:
        host = self.cloud.load(Host, host_id)
        return self.cloud.load(Cluster, host.cluster_id).agent_task_queue
