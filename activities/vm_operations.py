"""VM operation activities on the control plane: decisions over the event store, no hypervisor.

Each is a thin call into `domain.vm_operations`, idempotent by command id, translating the
aggregates into what the workflow and the hypervisor worker need next.
"""

from __future__ import annotations

from uuid import UUID

from temporalio import activity

from activities.deployment_models import (
    Placement,
    VmLaunch,
    VmRemoval,
    VolumeOrder,
    VolumeRemoval,
)
from activities.drivers.hypervisor import (
    TemplateRef,
    VolumeMove,
    VolumeSpec,
)
from activities.errors import reports_cloud_errors
from activities.refs import host_ref, pool_ref
from activities.vm_launch import vm_launch
from activities.vm_operation_models import (
    Begun,
    DestroyRecorded,
    DestroyStep,
    DiskMove,
    ExpungeOrder,
    HostStep,
    HypervisorSnapshot,
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
    StorageStep,
    VmMigration,
    VmOnHost,
    VmStorageMigration,
    VolumeCleanup,
)
from domain import storage_migration, vm_operations, vm_snapshot_operations
from domain.catalog import Template
from domain.cloud import Cloud
from domain.cluster import Cluster
from domain.errors import IllegalStateTransition
from domain.host import Host
from domain.job_results import (
    ExpungedVm,
    MigratedVm,
    ServiceOfferingChanged,
    VmJobResult,
    VmRestored,
    VmSnapshotJobResult,
    VmSnapshotTaken,
)
from domain.placement import AvoidSet
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine
from domain.vm_requests import SnapshotVmRequest, VmOperationRequest, stops_forcibly
from domain.volume import Volume, VolumeState


class VmOperationActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @activity.defn(name="vm.begin")
    @reports_cloud_errors
    def begin(self, given: OperationInput[VmOperationRequest]) -> Begun:
        request = given.request
        found = vm_operations.begin(self.cloud, request, given.submitted_at)
        on_host = (
            self._on_host(found.host_id, request.vm_id, forced=stops_forcibly(request))
            if found.host_id is not None
            else None
        )
        return Begun(state=found.state.value, on_host=on_host)

    @activity.defn(name="vm.record_queued_cancelled")
    @reports_cloud_errors
    def record_queued_cancelled(self, outcome: OperationOutcome) -> None:
        vm_operations.record_queued_job_cancelled(
            self.cloud, outcome.request, outcome.submitted_at, outcome.error_text
        )

    @activity.defn(name="vm.fail")
    @reports_cloud_errors
    def fail(self, outcome: OperationOutcome) -> str | None:
        return vm_operations.fail(
            self.cloud,
            outcome.request,
            outcome.submitted_at,
            outcome.error_code,
            outcome.error_text,
            cancelled=outcome.cancelled,
        )

    # -- start ---------------------------------------------------------------------------------
    @activity.defn(name="vm.plan_start")
    @reports_cloud_errors
    def plan_start(self, given: PlanStartInput) -> Placement:
        plan = vm_operations.plan_start(
            self.cloud,
            given.job_id,
            given.vm_id,
            AvoidSet(frozenset(given.avoid_host_ids)),
            given.attempt,
            ha_restart=given.ha_restart,
        )
        cluster = self.cloud.load(Cluster, plan.cluster_id)
        return Placement(
            host_id=plan.host_id,
            host_name=self.cloud.load(Host, plan.host_id).name,
            cluster_id=plan.cluster_id,
            pod_id=plan.pod_id,
            pool_id=plan.pool_id,
            hypervisor_task_queue=cluster.agent_task_queue,
        )

    @activity.defn(name="vm.reserve_capacity")
    @reports_cloud_errors
    def reserve_capacity(self, step: HostStep) -> None:
        vm_operations.reserve_capacity(
            self.cloud, step.job_id, step.vm_id, step.host_id, step.attempt
        )

    @activity.defn(name="vm.release_capacity")
    @reports_cloud_errors
    def release_capacity(self, step: HostStep) -> None:
        vm_operations.release_capacity(
            self.cloud, step.job_id, step.vm_id, step.host_id, step.attempt
        )

    @activity.defn(name="vm.prepare_launch")
    @reports_cloud_errors
    def prepare_launch(self, step: HostStep) -> VmLaunch:
        vm_operations.record_starting_on(
            self.cloud, step.job_id, step.vm_id, step.host_id, step.attempt
        )
        return vm_launch(self.cloud, step.vm_id, step.host_id)

    @activity.defn(name="vm.launch_spec")
    @reports_cloud_errors
    def launch_spec(self, step: HostStep) -> VmLaunch:
        """The VM's full definition on a host, to define it there again (undo of a stop)."""
        return vm_launch(self.cloud, step.vm_id, step.host_id)

    @activity.defn(name="vm.complete_start")
    @reports_cloud_errors
    def complete_start(self, step: HostStep) -> VmJobResult:
        return vm_operations.complete_start(self.cloud, step.job_id, step.vm_id, step.host_id)

    # -- stop, reboot, destroy, recover --------------------------------------------------------
    @activity.defn(name="vm.complete_stop")
    @reports_cloud_errors
    def complete_stop(self, step: JobVm) -> VmJobResult:
        return vm_operations.complete_stop(self.cloud, step.job_id, step.vm_id)

    @activity.defn(name="vm.complete_reboot")
    @reports_cloud_errors
    def complete_reboot(self, step: JobVm) -> VmJobResult:
        return vm_operations.complete_reboot(self.cloud, step.job_id, step.vm_id)

    @activity.defn(name="vm.complete_destroy")
    @reports_cloud_errors
    def complete_destroy(self, step: DestroyStep) -> DestroyRecorded:
        return DestroyRecorded(
            result=vm_operations.complete_destroy(
                self.cloud,
                step.job_id,
                step.vm_id,
                expunge=step.expunge,
                expunge_delay_seconds=step.expunge_delay_seconds,
            )
        )

    @activity.defn(name="vm.recover")
    @reports_cloud_errors
    def recover(self, step: JobVm) -> VmJobResult:
        return vm_operations.recover(self.cloud, step.job_id, step.vm_id)

    # -- migrate -------------------------------------------------------------------------------
    @activity.defn(name="vm.plan_migration")
    @reports_cloud_errors
    def plan_migration(self, given: MigrationRequest) -> MigrationPlan:
        plan = vm_operations.plan_migration(self.cloud, given.job_id, given.vm_id, given.host_id)
        vm = self.cloud.load(VirtualMachine, given.vm_id)
        if vm.host_id is None:  # plan_migration refused that already; a type guard here
            raise IllegalStateTransition(f"virtual machine {vm.name} is on no host")
        source, target = host_ref(self.cloud, vm.host_id), host_ref(self.cloud, plan.host_id)
        migration = MigrationPlan(
            source_host_id=vm.host_id,
            target_host_id=plan.host_id,
            target_host_name=target.name,
            there=VmMigration(source=source, target=target, vm_id=str(vm.id)),
            back=VmMigration(source=target, target=source, vm_id=str(vm.id)),
            task_queue=self._task_queue(vm.host_id),
        )
        if source.cluster_id == target.cluster_id:
            return migration
        moves = storage_migration.plan_disk_moves(self.cloud, vm, plan.cluster_id)
        if not moves:  # every disk on zone-wide storage: a plain live migration
            return migration
        disks = [
            DiskMove(
                volume_id=m.volume_id,
                source_pool_id=m.source_pool_id,
                target_pool_id=m.target_pool_id,
                target_pool_name=self.cloud.load(PrimaryStorage, m.target_pool_id).name,
            )
            for m in moves
        ]
        there = [
            VolumeMove(
                str(m.volume_id),
                pool_ref(self.cloud, m.source_pool_id),
                pool_ref(self.cloud, m.target_pool_id),
            )
            for m in moves
        ]
        back = [VolumeMove(m.volume_id, m.target, m.source) for m in there]
        return migration.model_copy(
            update={
                "disk_moves": disks,
                "storage_there": VmStorageMigration(
                    source=source, target=target, vm_id=str(vm.id), moves=there
                ),
                "storage_back": VmStorageMigration(
                    source=target, target=source, vm_id=str(vm.id), moves=back
                ),
            }
        )

    @activity.defn(name="vm.reserve_storage")
    @reports_cloud_errors
    def reserve_storage(self, step: StorageStep) -> None:
        storage_migration.reserve_storage(self.cloud, step.job_id, _plans(step.disk_moves))

    @activity.defn(name="vm.release_storage")
    @reports_cloud_errors
    def release_storage(self, step: StorageStep) -> None:
        storage_migration.release_storage(self.cloud, step.job_id, _plans(step.disk_moves))

    @activity.defn(name="vm.complete_migration")
    @reports_cloud_errors
    def complete_migration(self, step: MigrationStep) -> MigratedVm:
        return vm_operations.complete_migration(
            self.cloud,
            step.job_id,
            step.vm_id,
            step.source_host_id,
            step.target_host_id,
            _plans(step.disk_moves),
            step.paths,
        )

    # -- VM snapshots --------------------------------------------------------------------------
    @activity.defn(name="vm.begin_snapshot")
    @reports_cloud_errors
    def begin_snapshot(self, given: OperationInput[SnapshotVmRequest]) -> SnapshotOrder:
        place = vm_snapshot_operations.begin_create(self.cloud, given.request)
        return self._snapshot_order(given.request.vm_id, given.request.snapshot_id, place)

    @activity.defn(name="vm.complete_snapshot")
    @reports_cloud_errors
    def complete_snapshot(self, step: SnapshotStep) -> VmSnapshotTaken:
        return vm_snapshot_operations.complete_create(
            self.cloud, step.job_id, step.vm_id, step.snapshot_id, step.memory
        )

    @activity.defn(name="vm.begin_revert")
    @reports_cloud_errors
    def begin_revert(self, step: SnapshotStep) -> SnapshotOrder:
        place = vm_snapshot_operations.begin_revert(
            self.cloud, step.job_id, step.vm_id, step.snapshot_id
        )
        return self._snapshot_order(step.vm_id, step.snapshot_id, place)

    @activity.defn(name="vm.complete_revert")
    @reports_cloud_errors
    def complete_revert(self, step: SnapshotStep) -> VmSnapshotJobResult:
        return vm_snapshot_operations.complete_revert(
            self.cloud, step.job_id, step.vm_id, step.snapshot_id
        )

    @activity.defn(name="vm.begin_delete_snapshot")
    @reports_cloud_errors
    def begin_delete_snapshot(self, step: SnapshotStep) -> SnapshotOrder:
        place = vm_snapshot_operations.begin_delete(
            self.cloud, step.job_id, step.vm_id, step.snapshot_id
        )
        return self._snapshot_order(step.vm_id, step.snapshot_id, place)

    @activity.defn(name="vm.complete_delete_snapshot")
    @reports_cloud_errors
    def complete_delete_snapshot(self, step: SnapshotStep) -> VmSnapshotJobResult:
        return vm_snapshot_operations.complete_delete(
            self.cloud, step.job_id, step.vm_id, step.snapshot_id
        )

    def _snapshot_order(
        self, vm_id: UUID, snapshot_id: UUID, place: vm_snapshot_operations.SnapshotPlace
    ) -> SnapshotOrder:
        on_host = self._on_host(place.host_id, vm_id)
        return SnapshotOrder(
            snapshot=HypervisorSnapshot(
                host=on_host.host,
                vm_id=str(vm_id),
                snapshot_id=str(snapshot_id),
                memory=place.memory,
            ),
            on_host=on_host,
            memory=place.memory,
        )

    # -- expunge -------------------------------------------------------------------------------
    @activity.defn(name="vm.begin_expunge")
    @reports_cloud_errors
    def begin_expunge(self, step: JobVm) -> ExpungeOrder:
        plan = vm_operations.begin_expunge(self.cloud, step.job_id, step.vm_id)
        order = ExpungeOrder()
        if plan.vm_host_id is not None:
            order.vm = VmRemoval(host=host_ref(self.cloud, plan.vm_host_id), vm_id=str(step.vm_id))
            order.vm_task_queue = self._task_queue(plan.vm_host_id)
        if plan.pool_id is not None and plan.volume_host_id is not None:
            order.volume = VolumeRemoval(
                host=host_ref(self.cloud, plan.volume_host_id),
                pool=pool_ref(self.cloud, plan.pool_id),
                volume_id=str(plan.volume_id),
            )
            order.volume_task_queue = self._task_queue(plan.volume_host_id)
        return order

    @activity.defn(name="vm.finish_expunge")
    @reports_cloud_errors
    def finish_expunge(self, step: JobVm) -> ExpungedVm:
        return vm_operations.finish_expunge(self.cloud, step.job_id, step.vm_id)

    # -- change the service offering ----------------------------------------------------------
    @activity.defn(name="vm.change_service_offering")
    @reports_cloud_errors
    def change_service_offering(self, change: OfferingChange) -> ServiceOfferingChanged:
        return vm_operations.change_service_offering(
            self.cloud, change.job_id, change.vm_id, change.service_offering_id
        )

    # -- restore -------------------------------------------------------------------------------
    @activity.defn(name="vm.begin_restore_volume")
    @reports_cloud_errors
    def begin_restore_volume(self, given: RestoreRequest) -> RestoreOrder:
        plan = vm_operations.begin_restore_volume(
            self.cloud, given.job_id, given.vm_id, given.template_id
        )
        volume = self.cloud.load(Volume, plan.new_volume_id)
        template = self.cloud.load(Template, plan.template_id)
        return RestoreOrder(
            volume=VolumeOrder(
                host=host_ref(self.cloud, plan.host_id),
                pool=pool_ref(self.cloud, plan.pool_id),
                spec=VolumeSpec(
                    volume_id=str(volume.id),
                    name=volume.name,
                    size_bytes=volume.size_bytes,
                    template=TemplateRef(
                        template_id=str(template.id),
                        name=template.name,
                        url=template.url,
                        format=template.format,
                        size_bytes=template.size_bytes,
                    ),
                ),
            ),
            task_queue=self._task_queue(plan.host_id),
            new_volume_id=plan.new_volume_id,
            old_volume_id=plan.old_volume_id,
            old_template_id=plan.old_template_id,
            template_id=plan.template_id,
            pool_id=plan.pool_id,
        )

    @activity.defn(name="vm.complete_restore_volume")
    @reports_cloud_errors
    def complete_restore_volume(self, step: RestoreStep) -> None:
        if step.pool_id is None:
            raise IllegalStateTransition("the new root volume's pool is unknown")
        vm_operations.complete_restore_volume(
            self.cloud, step.job_id, step.pool_id, step.path, step.size_bytes
        )

    @activity.defn(name="vm.restore_volume_removal")
    @reports_cloud_errors
    def restore_volume_removal(self, step: RestoreStep) -> VolumeCleanup:
        """Where the new root volume's disk would be, for the undo to delete it (nothing when
        it was never booked)."""
        volume = self.cloud.find(Volume, vm_operations.restored_root_volume_id_for(step.job_id))
        if volume is None or volume.state is VolumeState.EXPUNGED:
            return VolumeCleanup()
        vm = self.cloud.load(VirtualMachine, step.vm_id)
        pool_id = volume.pool_id or self.cloud.load(Volume, vm.root_volume_id).pool_id
        return self._cleanup(volume.id, pool_id, vm)

    @activity.defn(name="vm.abandon_restore_volume")
    @reports_cloud_errors
    def abandon_restore_volume(self, step: RestoreStep) -> None:
        vm_operations.abandon_restore_volume(self.cloud, step.job_id, step.vm_id)

    @activity.defn(name="vm.swap_root_volume")
    @reports_cloud_errors
    def swap_root_volume(self, step: RestoreStep) -> None:
        self._swap(step, undo=False)

    @activity.defn(name="vm.unswap_root_volume")
    @reports_cloud_errors
    def unswap_root_volume(self, step: RestoreStep) -> None:
        self._swap(step, undo=True)

    def _swap(self, step: RestoreStep, *, undo: bool) -> None:
        if step.template_id is None:
            raise IllegalStateTransition("a root volume swap needs its template")
        vm_operations.swap_root_volume(
            self.cloud, step.job_id, step.vm_id, step.volume_id, step.template_id, undo=undo
        )

    @activity.defn(name="vm.complete_restore")
    @reports_cloud_errors
    def complete_restore(self, step: RestoreStep) -> VolumeCleanup:
        """Past the point of no return: the VM recorded as it stays, the old root volume
        Expunging; where its disk is, to delete it."""
        vm_operations.complete_restore(self.cloud, step.job_id, step.vm_id, step.volume_id)
        old = self.cloud.load(Volume, step.volume_id)
        vm = self.cloud.load(VirtualMachine, step.vm_id)
        if old.state is VolumeState.EXPUNGED:
            return VolumeCleanup()
        return self._cleanup(old.id, old.pool_id, vm)

    @activity.defn(name="vm.finish_restore")
    @reports_cloud_errors
    def finish_restore(self, step: RestoreStep) -> VmRestored:
        return vm_operations.finish_restore(self.cloud, step.job_id, step.vm_id, step.volume_id)

    def _cleanup(self, volume_id: UUID, pool_id: UUID | None, vm: VirtualMachine) -> VolumeCleanup:
        host_id = vm.host_id or vm.last_host_id
        if pool_id is None or host_id is None:
            return VolumeCleanup()
        return VolumeCleanup(
            removal=VolumeRemoval(
                host=host_ref(self.cloud, host_id),
                pool=pool_ref(self.cloud, pool_id),
                volume_id=str(volume_id),
            ),
            task_queue=self._task_queue(host_id),
        )

    # -- views of the aggregates for the hypervisor worker -------------------------------------
    def _on_host(self, host_id: UUID, vm_id: UUID, *, forced: bool = False) -> VmOnHost:
        return VmOnHost(
            host=host_ref(self.cloud, host_id),
            vm_id=str(vm_id),
            task_queue=self._task_queue(host_id),
            forced=forced,
        )

    def _task_queue(self, host_id: UUID) -> str | None:
        host = self.cloud.load(Host, host_id)
        return self.cloud.load(Cluster, host.cluster_id).agent_task_queue


def _plans(moves: list[DiskMove]) -> list[storage_migration.DiskMovePlan]:
    return [
        storage_migration.DiskMovePlan(m.volume_id, m.source_pool_id, m.target_pool_id)
        for m in moves
    ]
