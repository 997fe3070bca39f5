"""Volume operation activities on the control plane: decisions over the event store, no
hypervisor. Each is a thin call into `domain.volume_operations`, idempotent by command id,
translating the aggregates into what the workflow and the hypervisor worker need next."""

from __future__ import annotations

from uuid import UUID

from temporalio import activity

from activities.deployment_models import VolumeOrder, VolumeRemoval
from activities.drivers.hypervisor import VolumeInfo, VolumeSpec
from activities.errors import reports_cloud_errors
from activities.refs import host_ref, pool_ref
from activities.volume_operation_models import (
    AttachOrder,
    AttachStep,
    DeleteOrder,
    DetachOrder,
    DiskCopy,
    MigrateOrder,
    MigrateStep,
    RemovedVm,
    ResizeOrder,
    ResizeStep,
    VolumeJobInput,
    VolumeJobOutcome,
    VolumePlug,
    VolumeStep,
)
from domain import volume_operations
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.host import Host
from domain.job_results import DeletedVolume, VolumeJobResult
from domain.virtual_machine import VirtualMachine
from domain.volume import Volume
from domain.volume_requests import (
    AttachVolumeRequest,
    CreateVolumeRequest,
    DeleteVolumeRequest,
    DetachVolumeRequest,
    MigrateVolumeRequest,
    ResizeVolumeRequest,
)


class VolumeOperationActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    # -- every job -------------------------------------------------------------------------
    @activity.defn(name="volume.record_queued_cancelled")
    @reports_cloud_errors
    def record_queued_cancelled(self, outcome: VolumeJobOutcome) -> None:
        volume_operations.record_queued_job_cancelled(
            self.cloud, outcome.request, outcome.submitted_at, outcome.error_text
        )

    @activity.defn(name="volume.fail")
    @reports_cloud_errors
    def fail(self, outcome: VolumeJobOutcome) -> str | None:
        return volume_operations.fail(
            self.cloud,
            outcome.request,
            outcome.submitted_at,
            outcome.error_code,
            outcome.error_text,
            cancelled=outcome.cancelled,
        )

    @activity.defn(name="volume.succeed")
    @reports_cloud_errors
    def succeed(self, step: VolumeStep) -> VolumeJobResult:
        return volume_operations.succeed(self.cloud, step.job_id, step.volume_id)

    # -- create ----------------------------------------------------------------------------
    @activity.defn(name="volume.create")
    @reports_cloud_errors
    def create(self, given: VolumeJobInput[CreateVolumeRequest]) -> VolumeJobResult:
        return volume_operations.create(self.cloud, given.request, given.submitted_at)

    # -- attach ----------------------------------------------------------------------------
    @activity.defn(name="volume.begin_attach")
    @reports_cloud_errors
    def begin_attach(self, given: VolumeJobInput[AttachVolumeRequest]) -> AttachOrder:
        plan = volume_operations.begin_attach(self.cloud, given.request, given.submitted_at)
        volume = self.cloud.load(Volume, given.request.volume_id)
        vm = self.cloud.load(VirtualMachine, plan.vm_id)
        order = AttachOrder(
            device_id=plan.device_id, pool_id=plan.pool_id, hypervisor=vm.hypervisor
        )
        if plan.creates_disk and plan.create_host_id is not None:
            order.create = VolumeOrder(
                host=host_ref(self.cloud, plan.create_host_id),
                pool=pool_ref(self.cloud, plan.pool_id),
                spec=VolumeSpec(
                    volume_id=str(volume.id), name=volume.name, size_bytes=volume.size_bytes
                ),
            )
            order.create_task_queue = self._task_queue(plan.create_host_id)
        if plan.vm_host_id is not None:
            order.plug = VolumePlug(
                host=host_ref(self.cloud, plan.vm_host_id),
                vm_id=str(vm.id),
                volume=self._volume_info(volume, plan.pool_id),
                device_id=plan.device_id,
                task_queue=self._task_queue(plan.vm_host_id),
            )
        return order

    @activity.defn(name="volume.undo_attach")
    @reports_cloud_errors
    def undo_attach(self, step: AttachStep) -> None:
        volume_operations.undo_attach(
            self.cloud, step.job_id, step.volume_id, step.vm_id, step.pool_id
        )

    @activity.defn(name="volume.complete_attach")
    @reports_cloud_errors
    def complete_attach(self, step: AttachStep) -> VolumeJobResult:
        created = (
            (step.pool_id, step.created.path, step.created.size_bytes, step.hypervisor)
            if step.created is not None
            else None
        )
        return volume_operations.complete_attach(
            self.cloud, step.job_id, step.volume_id, step.vm_id, step.device_id, created
        )

    # -- detach ----------------------------------------------------------------------------
    @activity.defn(name="volume.begin_detach")
    @reports_cloud_errors
    def begin_detach(self, given: VolumeJobInput[DetachVolumeRequest]) -> DetachOrder:
        plan = volume_operations.begin_detach(self.cloud, given.request, given.submitted_at)
        volume = self.cloud.load(Volume, given.request.volume_id)
        if plan.vm_host_id is None or volume.pool_id is None:
            return DetachOrder()
        return DetachOrder(
            unplug=VolumePlug(
                host=host_ref(self.cloud, plan.vm_host_id),
                vm_id=str(plan.vm_id),
                volume=self._volume_info(volume, volume.pool_id),
                device_id=plan.device_id or 0,
                task_queue=self._task_queue(plan.vm_host_id),
            )
        )

    @activity.defn(name="volume.complete_detach")
    @reports_cloud_errors
    def complete_detach(self, step: VolumeStep) -> VolumeJobResult:
        return volume_operations.complete_detach(self.cloud, step.job_id, step.volume_id)

    @activity.defn(name="volume.detach_from_removed_vm")
    @reports_cloud_errors
    def detach_from_removed_vm(self, removed: RemovedVm) -> list[str]:
        return volume_operations.detach_from_removed_vm(
            self.cloud, removed.vm_id, f"{removed.job_id}/data-volumes"
        )

    # -- resize ----------------------------------------------------------------------------
    @activity.defn(name="volume.begin_resize")
    @reports_cloud_errors
    def begin_resize(self, given: VolumeJobInput[ResizeVolumeRequest]) -> ResizeOrder:
        plan = volume_operations.begin_resize(self.cloud, given.request, given.submitted_at)
        if plan.pool_id is None or plan.host_id is None:
            return ResizeOrder(new_size_bytes=plan.new_size_bytes)
        return ResizeOrder(
            new_size_bytes=plan.new_size_bytes,
            host=host_ref(self.cloud, plan.host_id),
            pool=pool_ref(self.cloud, plan.pool_id),
            task_queue=self._task_queue(plan.host_id),
        )

    @activity.defn(name="volume.undo_resize")
    @reports_cloud_errors
    def undo_resize(self, step: ResizeStep) -> None:
        volume_operations.undo_resize(
            self.cloud, step.job_id, step.volume_id, grown_to=step.disk_size_bytes
        )

    @activity.defn(name="volume.complete_resize")
    @reports_cloud_errors
    def complete_resize(self, step: ResizeStep) -> VolumeJobResult:
        return volume_operations.complete_resize(
            self.cloud, step.job_id, step.volume_id, step.new_size_bytes
        )

    # -- migrate ---------------------------------------------------------------------------
    @activity.defn(name="volume.begin_migrate")
    @reports_cloud_errors
    def begin_migrate(self, given: VolumeJobInput[MigrateVolumeRequest]) -> MigrateOrder:
        plan = volume_operations.begin_migrate(self.cloud, given.request, given.submitted_at)
        host = host_ref(self.cloud, plan.host_id)
        source = pool_ref(self.cloud, plan.source_pool_id)
        target = pool_ref(self.cloud, plan.target_pool_id)
        volume_id = str(given.request.volume_id)
        return MigrateOrder(
            copy_order=DiskCopy(
                host=host, source_pool=source, target_pool=target, volume_id=volume_id
            ),
            task_queue=self._task_queue(plan.host_id),
            target_removal=VolumeRemoval(host=host, pool=target, volume_id=volume_id),
            source_removal=VolumeRemoval(host=host, pool=source, volume_id=volume_id),
        )

    @activity.defn(name="volume.undo_migrate")
    @reports_cloud_errors
    def undo_migrate(self, step: MigrateStep) -> None:
        volume_operations.undo_migrate(self.cloud, step.job_id, step.volume_id, step.target_pool_id)

    @activity.defn(name="volume.complete_migrate")
    @reports_cloud_errors
    def complete_migrate(self, step: MigrateStep) -> None:
        volume_operations.complete_migrate(
            self.cloud, step.job_id, step.volume_id, step.target_pool_id, step.path
        )

    # -- delete ----------------------------------------------------------------------------
    @activity.defn(name="volume.begin_delete")
    @reports_cloud_errors
    def begin_delete(self, given: VolumeJobInput[DeleteVolumeRequest]) -> DeleteOrder:
        plan = volume_operations.begin_delete(self.cloud, given.request, given.submitted_at)
        if plan.pool_id is None or plan.host_id is None:
            return DeleteOrder()
        return DeleteOrder(
            removal=VolumeRemoval(
                host=host_ref(self.cloud, plan.host_id),
                pool=pool_ref(self.cloud, plan.pool_id),
                volume_id=str(given.request.volume_id),
            ),
            task_queue=self._task_queue(plan.host_id),
        )

    @activity.defn(name="volume.finish_delete")
    @reports_cloud_errors
    def finish_delete(self, step: VolumeStep) -> DeletedVolume:
        return volume_operations.finish_delete(self.cloud, step.job_id, step.volume_id)

    # -- views of the aggregates for the hypervisor worker ---------------------------------
    def _task_queue(self, host_id: UUID) -> str | None:
        host = self.cloud.load(Host, host_id)
        return self.cloud.load(Cluster, host.cluster_id).agent_task_queue

    @staticmethod
    def _volume_info(volume: Volume, pool_id: UUID) -> VolumeInfo:
        return VolumeInfo(
            volume_id=str(volume.id),
            path=volume.path or "",
            size_bytes=volume.size_bytes,
            pool_id=str(pool_id),
        )
