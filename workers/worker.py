"""The Temporal worker: workflows, control-plane activities and, for clusters without an agent
queue of their own, the hypervisor activities with their drivers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.alerts import alert_activities
from activities.deployment import DeploymentActivities
from activities.drivers.hypervisor import HypervisorDriver
from activities.drivers.out_of_band import BmcLogins, IpmiPowerControl
from activities.drivers.simulator import SimulatorDriver
from activities.host_ha import host_ha_activities
from activities.host_maintenance import host_maintenance_activities
from activities.hypervisor import DriverRegistry, HypervisorActivities
from activities.infrastructure import infrastructure_activities
from activities.job_records import JobRecordActivities
from activities.out_of_band import bmc_activities, out_of_band_activities
from activities.simulator_configuration import SimulatorConfigurationActivities, faults_from
from activities.snapshot_operations import SnapshotOperationActivities
from activities.snapshot_policies import snapshot_policy_activities
from activities.vm_operations import VmOperationActivities
from activities.volume_operations import VolumeOperationActivities
from domain.cloud import Cloud
from workflows.alerts import ALERT_WORKFLOWS
from workflows.configure_simulator import ConfigureSimulator
from workflows.deploy_virtual_machine import DeployVirtualMachine
from workflows.host_ha import HOST_HA_WORKFLOWS
from workflows.host_maintenance import HOST_MAINTENANCE_WORKFLOWS
from workflows.infrastructure import AddCluster, AddHost, AddStoragePool
from workflows.out_of_band import OUT_OF_BAND_WORKFLOWS
from workflows.power_state_sync import PowerStateSync
from workflows.snapshot_operations import SNAPSHOT_OPERATION_WORKFLOWS
from workflows.snapshot_policies import SNAPSHOT_POLICY_WORKFLOWS
from workflows.vm_operations import VM_OPERATION_WORKFLOWS
from workflows.vm_queue import VirtualMachineQueue
from workflows.volume_operations import VOLUME_OPERATION_WORKFLOWS

WORKFLOWS: Sequence[type] = (
    DeployVirtualMachine,
    ConfigureSimulator,
    VirtualMachineQueue,
    *VM_OPERATION_WORKFLOWS,
    AddCluster,
    AddHost,
    AddStoragePool,
    PowerStateSync,
    *VOLUME_OPERATION_WORKFLOWS,
    *SNAPSHOT_OPERATION_WORKFLOWS,
    *SNAPSHOT_POLICY_WORKFLOWS,
    *HOST_MAINTENANCE_WORKFLOWS,
    *OUT_OF_BAND_WORKFLOWS,
    *HOST_HA_WORKFLOWS,
    *ALERT_WORKFLOWS,
)


def default_drivers(cloud: Cloud) -> dict[str, HypervisorDriver]:
    """The drivers a worker holds by default: the simulator, with faults from the event store."""
    return {SimulatorDriver.hypervisor: SimulatorDriver(lambda: faults_from(cloud))}


def control_plane_activities(
    cloud: Cloud,
    drivers: Mapping[str, HypervisorDriver],
    client: Client | None = None,
    power_control: IpmiPowerControl | None = None,
) -> list[Any]:
    """`client`: the Temporal client the snapshot policy activities manage schedules and
    submit jobs with (default: the client of the worker that runs them). `power_control`: the
    BMC logins of hosts whose cluster has no agent (default: none, so their power actions
    fail saying the login is missing)."""
    deployment = DeploymentActivities(cloud)
    hypervisor = HypervisorActivities(DriverRegistry(dict(drivers)))
    simulator = SimulatorConfigurationActivities(cloud)
    jobs = JobRecordActivities(cloud)
    return [
        jobs.refuse,
        jobs.end_as_joined,
        jobs.withdraw,
        deployment.register,
        deployment.plan,
        deployment.reserve_capacity,
        deployment.release_capacity,
        deployment.begin_root_volume,
        deployment.complete_root_volume,
        deployment.abandon_root_volume,
        deployment.expunge_root_volume,
        deployment.root_volume_removal,
        deployment.allocate_nic,
        deployment.release_nic,
        deployment.prepare_launch,
        deployment.complete,
        deployment.fail,
        hypervisor.create_volume,
        hypervisor.delete_volume,
        hypervisor.launch_vm,
        hypervisor.destroy_vm,
        simulator.change_fault,
        *vm_operation_activities(cloud, hypervisor),
        hypervisor.host_capacity,
        hypervisor.report_power_states,
        hypervisor.check_host_health,
        hypervisor.check_vm_activity,
        *infrastructure_activities(cloud),
        *volume_operation_activities(cloud, hypervisor),
        *snapshot_policy_activities(cloud, client),
        *host_maintenance_activities(cloud, client),
        *host_ha_activities(cloud, client),
        *alert_activities(cloud),
        *out_of_band_activities(cloud),
        *bmc_activities(power_control or IpmiPowerControl(BmcLogins())),
    ]


def vm_operation_activities(cloud: Cloud, hypervisor: HypervisorActivities) -> list[Any]:
    """Start, stop, reboot, destroy, recover, expunge, migrate and VM snapshots (and their
    hypervisor calls)."""
    vm = VmOperationActivities(cloud)
    return [
        vm.begin,
        vm.record_queued_cancelled,
        vm.fail,
        vm.plan_start,
        vm.reserve_capacity,
        vm.release_capacity,
        vm.prepare_launch,
        vm.launch_spec,
        vm.complete_start,
        vm.complete_stop,
        vm.complete_reboot,
        vm.complete_destroy,
        vm.recover,
        vm.begin_expunge,
        vm.finish_expunge,
        vm.plan_migration,
        vm.reserve_storage,
        vm.release_storage,
        vm.complete_migration,
        vm.begin_snapshot,
        vm.complete_snapshot,
        vm.begin_revert,
        vm.complete_revert,
        vm.begin_delete_snapshot,
        vm.complete_delete_snapshot,
        vm.change_service_offering,
        vm.begin_restore_volume,
        vm.complete_restore_volume,
        vm.restore_volume_removal,
        vm.abandon_restore_volume,
        vm.swap_root_volume,
        vm.unswap_root_volume,
        vm.complete_restore,
        vm.finish_restore,
        hypervisor.stop_vm,
        hypervisor.start_vm,
        hypervisor.reboot_vm,
        hypervisor.migrate_vm,
        hypervisor.migrate_vm_with_storage,
        hypervisor.create_snapshot,
        hypervisor.revert_snapshot,
        hypervisor.delete_snapshot,
    ]


def volume_operation_activities(cloud: Cloud, hypervisor: HypervisorActivities) -> list[Any]:
    """Create, attach, detach, resize, migrate and delete volumes (and their hypervisor calls)."""
    volume = VolumeOperationActivities(cloud)
    return [
        volume.record_queued_cancelled,
        volume.fail,
        volume.succeed,
        volume.create,
        volume.begin_attach,
        volume.undo_attach,
        volume.complete_attach,
        volume.begin_detach,
        volume.complete_detach,
        volume.detach_from_removed_vm,
        volume.begin_resize,
        volume.undo_resize,
        volume.complete_resize,
        volume.begin_migrate,
        volume.undo_migrate,
        volume.complete_migrate,
        volume.begin_delete,
        volume.finish_delete,
        hypervisor.attach_volume,
        hypervisor.detach_volume,
        hypervisor.resize_volume,
        hypervisor.copy_volume,
        *snapshot_operation_activities(cloud, hypervisor),
    ]


def snapshot_operation_activities(cloud: Cloud, hypervisor: HypervisorActivities) -> list[Any]:
    """Take, delete and revert volume snapshots, make volumes and templates from them (and
    their hypervisor calls)."""
    snapshot = SnapshotOperationActivities(cloud)
    return [
        snapshot.begin,
        snapshot.undo,
        snapshot.record_on_primary,
        snapshot.record_backed_up,
        snapshot.record_primary_copy_removed,
        snapshot.complete,
        snapshot.begin_pruning,
        snapshot.keep_after_failed_removal,
        snapshot.finish_removal,
        snapshot.begin_delete,
        snapshot.undo_delete,
        snapshot.complete_delete,
        snapshot.begin_revert,
        snapshot.undo_revert,
        snapshot.complete_revert,
        snapshot.begin_volume,
        snapshot.undo_volume,
        snapshot.complete_volume,
        snapshot.begin_template,
        snapshot.undo_template,
        snapshot.complete_template,
        hypervisor.snapshot_volume,
        hypervisor.backup_volume_snapshot,
        hypervisor.delete_volume_snapshot,
        hypervisor.delete_snapshot_backup,
        hypervisor.revert_volume_to_snapshot,
        hypervisor.create_volume_from_snapshot,
        hypervisor.create_template_from_snapshot,
        hypervisor.delete_template,
    ]


def build_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Any],
    *,
    threads: int = 32,
    workflows: Sequence[type] = WORKFLOWS,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),
        activity_executor=ThreadPoolExecutor(max_workers=threads, thread_name_prefix="activity"),
        max_concurrent_activities=threads,
    )
