"""Hypervisor activities: the side effects, and nothing else.

They run on the task queue of the cluster's hypervisor worker (the agent model), which holds
the drivers and their credentials; they append no events. Each is idempotent by Stratus id, and
a call whose outcome is unknown asks the backend for the truth before anyone retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from temporalio import activity

from activities.deployment_models import (
    LaunchedVm,
    VmLaunch,
    VmRemoval,
    VolumeOrder,
    VolumeRemoval,
)
from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostRef,
    HypervisorDriver,
    PowerState,
    TemplateRef,
    VirtualMachineInfo,
    VolumeInfo,
    VolumeSnapshotInfo,
)
from activities.errors import reports_cloud_errors
from activities.heartbeat import heartbeating
from activities.host_ha_models import ActivityProbe, HealthProbe, HealthReport
from activities.infrastructure_models import (
    ClusterHosts,
    HostPowerReport,
    HostProbe,
    PowerReports,
    ReportedCapacity,
    VmPower,
)
from activities.snapshot_operation_models import SnapshotWork
from activities.vm_operation_models import (
    HypervisorSnapshot,
    MovedDisks,
    VmMigration,
    VmOnHost,
    VmStorageMigration,
)
from activities.volume_operation_models import DiskCopy, DiskResize, VolumePlug
from domain.errors import UnsupportedAction


class DriverRegistry:
    """The drivers a worker holds, by hypervisor type. Built by the composition root."""

    def __init__(self, drivers: dict[str, HypervisorDriver]) -> None:
        self._drivers = dict(drivers)

    def for_hypervisor(self, hypervisor: str) -> HypervisorDriver:
        try:
            return self._drivers[hypervisor]
        except KeyError:
            raise UnsupportedAction(
                f"this worker has no driver for hypervisor {hypervisor}"
            ) from None


class HypervisorActivities:
    def __init__(self, drivers: DriverRegistry) -> None:
        self.drivers = drivers

    @activity.defn(name="hypervisor.create_volume")
    @reports_cloud_errors
    def create_volume(self, order: VolumeOrder) -> VolumeInfo:
        driver = self.drivers.for_hypervisor(order.host.hypervisor)
        with heartbeating(f"creating volume {order.spec.volume_id}"):
            return driver.create_volume(order.host, order.pool, order.spec)

    @activity.defn(name="hypervisor.delete_volume")
    @reports_cloud_errors
    def delete_volume(self, removal: VolumeRemoval) -> None:
        driver = self.drivers.for_hypervisor(removal.host.hypervisor)
        with heartbeating(f"deleting volume {removal.volume_id}"):
            driver.delete_volume(removal.host, removal.pool, removal.volume_id)

    @activity.defn(name="hypervisor.launch_vm")
    @reports_cloud_errors
    def launch_vm(self, launch: VmLaunch) -> LaunchedVm:
        """Define and power on; after a timeout, a VM found running counts as launched."""
        driver = self.drivers.for_hypervisor(launch.host.hypervisor)
        try:
            with heartbeating(f"launching VM {launch.spec.vm_id}"):
                driver.define_vm(launch.host, launch.spec)
                return launched(driver.start_vm(launch.host, launch.spec.vm_id))
        except DriverTimeoutError:
            found = driver.find_vm(launch.host, launch.spec.vm_id)
            if found is not None and found.power_state is PowerState.POWERED_ON:
                return launched(found)
            raise

    @activity.defn(name="hypervisor.destroy_vm")
    @reports_cloud_errors
    def destroy_vm(self, removal: VmRemoval) -> None:
        driver = self.drivers.for_hypervisor(removal.host.hypervisor)
        with heartbeating(f"destroying VM {removal.vm_id}"):
            driver.destroy_vm(removal.host, removal.vm_id)

    @activity.defn(name="hypervisor.stop_vm")
    @reports_cloud_errors
    def stop_vm(self, target: VmOnHost) -> str:
        """Power off (a VM already off, or already gone, is stopped)."""
        driver = self.drivers.for_hypervisor(target.host.hypervisor)
        with heartbeating(f"stopping VM {target.vm_id}"):
            if driver.find_vm(target.host, target.vm_id) is None:
                return PowerState.POWERED_OFF.value
            return driver.stop_vm(target.host, target.vm_id, forced=target.forced).power_state.value

    @activity.defn(name="hypervisor.start_vm")
    @reports_cloud_errors
    def start_vm(self, target: VmOnHost) -> str:
        """Power on a VM defined on the host (one already running is success)."""
        driver = self.drivers.for_hypervisor(target.host.hypervisor)
        with heartbeating(f"starting VM {target.vm_id}"):
            return driver.start_vm(target.host, target.vm_id).power_state.value

    @activity.defn(name="hypervisor.reboot_vm")
    @reports_cloud_errors
    def reboot_vm(self, target: VmOnHost) -> str:
        driver = self.drivers.for_hypervisor(target.host.hypervisor)
        with heartbeating(f"rebooting VM {target.vm_id}"):
            return driver.reboot_vm(target.host, target.vm_id).power_state.value

    @activity.defn(name="hypervisor.migrate_vm")
    @reports_cloud_errors
    def migrate_vm(self, move: VmMigration) -> LaunchedVm:
        """Live-migrate the VM to the target (already there is success: the undo moves it back
        the same way). After a timeout the backend is asked where the VM is: found running on
        the target, the move is done; anywhere else the timeout stands and Temporal retries."""
        driver = self.drivers.for_hypervisor(move.source.hypervisor)
        try:
            with heartbeating(
                f"migrating VM {move.vm_id} from {move.source.name} to {move.target.name}"
            ):
                return launched(driver.migrate_vm(move.source, move.target, move.vm_id))
        except DriverTimeoutError:
            found = driver.find_vm(move.target, move.vm_id)
            if found is not None and found.power_state is PowerState.POWERED_ON:
                return launched(found)
            raise

    @activity.defn(name="hypervisor.migrate_vm_with_storage")
    @reports_cloud_errors
    def migrate_vm_with_storage(self, move: VmStorageMigration) -> MovedDisks:
        """Live-migrate the VM to another cluster's host, its disks to their target pools
        (already there is success: the undo moves it all back the same way)."""
        driver = self.drivers.for_hypervisor(move.source.hypervisor)
        with heartbeating(
            f"migrating VM {move.vm_id} with {len(move.moves)} disks from {move.source.name} "
            f"to {move.target.name}"
        ):
            moved = driver.migrate_vm_with_storage(move.source, move.target, move.vm_id, move.moves)
        return MovedDisks(paths={disk.volume_id: disk.path for disk in moved})

    # -- VM snapshots --------------------------------------------------------------------------
    @activity.defn(name="hypervisor.create_snapshot")
    @reports_cloud_errors
    def create_snapshot(self, order: HypervisorSnapshot) -> bool:
        """Snapshot the VM (made already under this id is success); whether memory was
        captured. After a timeout the backend's list tells whether it was made."""
        driver = self.drivers.for_hypervisor(order.host.hypervisor)
        try:
            with heartbeating(f"snapshotting VM {order.vm_id} as {order.snapshot_id}"):
                made = driver.create_snapshot(
                    order.host, order.vm_id, order.snapshot_id, memory=order.memory
                )
                return made.memory
        except DriverTimeoutError:
            for found in driver.list_snapshots(order.host, order.vm_id):
                if found.snapshot_id == order.snapshot_id:
                    return found.memory
            raise

    @activity.defn(name="hypervisor.revert_snapshot")
    @reports_cloud_errors
    def revert_snapshot(self, order: HypervisorSnapshot) -> str:
        """Bring the VM back to the snapshot (reverting twice gives the same VM); its power
        state after, which follows whether the snapshot holds memory."""
        driver = self.drivers.for_hypervisor(order.host.hypervisor)
        with heartbeating(f"reverting VM {order.vm_id} to {order.snapshot_id}"):
            reverted = driver.revert_snapshot(order.host, order.vm_id, order.snapshot_id)
        return reverted.power_state.value

    @activity.defn(name="hypervisor.delete_snapshot")
    @reports_cloud_errors
    def delete_snapshot(self, order: HypervisorSnapshot) -> None:
        """Remove the snapshot (one already gone is success: the undo of a create)."""
        driver = self.drivers.for_hypervisor(order.host.hypervisor)
        with heartbeating(f"deleting snapshot {order.snapshot_id} of VM {order.vm_id}"):
            driver.delete_snapshot(order.host, order.vm_id, order.snapshot_id)

    # -- inventory and reconciliation (driver-only, like the rest) ----------------------------
    @activity.defn(name="hypervisor.host_capacity")
    @reports_cloud_errors
    def host_capacity(self, probe: HostProbe) -> ReportedCapacity:
        """What the host has, as its hypervisor reports it (the agent's connect report)."""
        driver = self.drivers.for_hypervisor(probe.host.hypervisor)
        with heartbeating(f"asking host {probe.host.name} for its capacity"):
            capacity = driver.host_capacity(probe.host)
        return ReportedCapacity(
            cpu_count=capacity.cpu_count,
            cpu_speed_mhz=capacity.cpu_speed_mhz,
            memory_mib=capacity.memory_mib,
            vm_count=capacity.vm_count,
            extra=dict(capacity.extra),
        )

    @activity.defn(name="hypervisor.report_power_states")
    @reports_cloud_errors
    def report_power_states(self, cluster: ClusterHosts) -> PowerReports:
        """Every VM on every host of the cluster with its power state.

        A host that cannot be listed is reported with its error rather than failing the whole
        listing: the reconciliation skips it, and never takes its VMs for gone.
        """
        driver = self.drivers.for_hypervisor(cluster.hypervisor)
        reports: list[HostPowerReport] = []
        with heartbeating(f"listing VMs of cluster {cluster.cluster_name}"):
            for host in cluster.hosts:
                try:
                    vms = driver.list_vms(host)
                except DriverError as error:
                    reports.append(
                        HostPowerReport(host_id=host.host_id, host_name=host.name, error=str(error))
                    )
                    continue
                reports.append(
                    HostPowerReport(
                        host_id=host.host_id,
                        host_name=host.name,
                        vms=[VmPower(vm_id=v.vm_id, power_state=v.power_state.value) for v in vms],
                    )
                )
        return PowerReports(reports=reports)

    # -- host HA probes --------------------------------------------------------------------
    @activity.defn(name="hypervisor.check_host_health")
    def check_host_health(self, probe: HealthProbe) -> HealthReport:
        """Each host asked about itself (its capacity, as on connect), all at once: healthy
        when it answers within the timeout. A host that hangs is left to its thread."""
        return HealthReport(
            healthy=_answered_within(
                probe.hosts,
                lambda host: self.drivers.for_hypervisor(host.hypervisor).host_capacity(host),
                probe.timeout_seconds,
            )
        )

    @activity.defn(name="hypervisor.check_vm_activity")
    def check_vm_activity(self, probe: ActivityProbe) -> bool:
        """Whether anything on the host still shows life: a VM its hypervisor reports powered
        on there, through a path other than the health check's. No answer in time is none."""
        driver = self.drivers.for_hypervisor(probe.host.hypervisor)

        def running(host: HostRef) -> bool:
            return any(v.power_state is PowerState.POWERED_ON for v in driver.list_vms(host))

        answers = _answered_within([probe.host], running, probe.timeout_seconds, keep=True)
        return answers[probe.host.host_id]

    # -- data volumes: plug in and out, grow, copy between pools ----------------------------
    @activity.defn(name="hypervisor.attach_volume")
    @reports_cloud_errors
    def attach_volume(self, plug: VolumePlug) -> int:
        """Plug the disk into the running VM (already plugged in is success); the device id."""
        driver = self.drivers.for_hypervisor(plug.host.hypervisor)
        with heartbeating(f"attaching volume {plug.volume.volume_id} to VM {plug.vm_id}"):
            attached = driver.attach_volume(
                plug.host, plug.vm_id, plug.volume, device_id=plug.device_id
            )
        return attached.device_id

    @activity.defn(name="hypervisor.detach_volume")
    @reports_cloud_errors
    def detach_volume(self, plug: VolumePlug) -> None:
        """Unplug the disk from the VM (not attached, or the VM gone, is success)."""
        driver = self.drivers.for_hypervisor(plug.host.hypervisor)
        with heartbeating(f"detaching volume {plug.volume.volume_id} from VM {plug.vm_id}"):
            if driver.find_vm(plug.host, plug.vm_id) is None:
                return
            driver.detach_volume(plug.host, plug.vm_id, plug.volume.volume_id)

    @activity.defn(name="hypervisor.resize_volume")
    @reports_cloud_errors
    def resize_volume(self, resize: DiskResize) -> VolumeInfo:
        driver = self.drivers.for_hypervisor(resize.host.hypervisor)
        with heartbeating(f"resizing volume {resize.volume_id} to {resize.size_bytes} bytes"):
            return driver.resize_volume(
                resize.host, resize.pool, resize.volume_id, resize.size_bytes
            )

    @activity.defn(name="hypervisor.copy_volume")
    @reports_cloud_errors
    def copy_volume(self, copy: DiskCopy) -> VolumeInfo:
        driver = self.drivers.for_hypervisor(copy.host.hypervisor)
        with heartbeating(
            f"copying volume {copy.volume_id} from {copy.source_pool.name} "
            f"to {copy.target_pool.name}"
        ):
            return driver.copy_volume(copy.host, copy.source_pool, copy.target_pool, copy.volume_id)

    # -- volume snapshots: on primary storage, backed up to secondary storage ----------------
    @activity.defn(name="hypervisor.snapshot_volume")
    @reports_cloud_errors
    def snapshot_volume(self, work: SnapshotWork) -> VolumeSnapshotInfo:
        driver = self.drivers.for_hypervisor(work.host.hypervisor)
        assert work.pool is not None
        with heartbeating(f"snapshotting volume {work.volume_id}"):
            return driver.snapshot_volume(work.host, work.pool, work.volume_id, work.snapshot_id)

    @activity.defn(name="hypervisor.backup_volume_snapshot")
    @reports_cloud_errors
    def backup_volume_snapshot(self, work: SnapshotWork) -> VolumeSnapshotInfo:
        driver = self.drivers.for_hypervisor(work.host.hypervisor)
        assert work.pool is not None and work.secondary is not None
        with heartbeating(f"backing up snapshot {work.snapshot_id} to {work.secondary.name}"):
            return driver.backup_volume_snapshot(
                work.host, work.pool, work.volume_id, work.snapshot_id, work.secondary
            )

    @activity.defn(name="hypervisor.delete_volume_snapshot")
    @reports_cloud_errors
    def delete_volume_snapshot(self, work: SnapshotWork) -> None:
        driver = self.drivers.for_hypervisor(work.host.hypervisor)
        assert work.pool is not None
        with heartbeating(f"deleting snapshot {work.snapshot_id} on primary storage"):
            driver.delete_volume_snapshot(work.host, work.pool, work.volume_id, work.snapshot_id)

    @activity.defn(name="hypervisor.delete_snapshot_backup")
    @reports_cloud_errors
    def delete_snapshot_backup(self, work: SnapshotWork) -> None:
        driver = self.drivers.for_hypervisor(work.host.hypervisor)
        assert work.secondary is not None
        with heartbeating(f"deleting snapshot {work.snapshot_id} on {work.secondary.name}"):
            driver.delete_snapshot_backup(work.host, work.secondary, work.snapshot_id)

    @activity.defn(name="hypervisor.revert_volume_to_snapshot")
    @reports_cloud_errors
    def revert_volume_to_snapshot(self, work: SnapshotWork) -> VolumeInfo:
        driver = self.drivers.for_hypervisor(work.host.hypervisor)
        assert work.pool is not None and work.secondary is not None
        with heartbeating(f"reverting volume {work.volume_id} to snapshot {work.snapshot_id}"):
            return driver.revert_volume_to_snapshot(
                work.host, work.pool, work.volume_id, work.secondary, work.snapshot_id
            )

    @activity.defn(name="hypervisor.create_volume_from_snapshot")
    @reports_cloud_errors
    def create_volume_from_snapshot(self, work: SnapshotWork) -> VolumeInfo:
        driver = self.drivers.for_hypervisor(work.host.hypervisor)
        assert work.pool is not None and work.secondary is not None and work.spec is not None
        with heartbeating(f"making volume {work.spec.volume_id} from snapshot {work.snapshot_id}"):
            return driver.create_volume_from_snapshot(
                work.host, work.pool, work.spec, work.secondary, work.snapshot_id
            )

    @activity.defn(name="hypervisor.create_template_from_snapshot")
    @reports_cloud_errors
    def create_template_from_snapshot(self, work: SnapshotWork) -> TemplateRef:
        driver = self.drivers.for_hypervisor(work.host.hypervisor)
        assert work.secondary is not None and work.template_id is not None
        with heartbeating(f"making template {work.template_id} from snapshot {work.snapshot_id}"):
            return driver.create_template_from_snapshot(
                work.host, work.secondary, work.snapshot_id, work.template_id
            )

    @activity.defn(name="hypervisor.delete_template")
    @reports_cloud_errors
    def delete_template(self, work: SnapshotWork) -> None:
        driver = self.drivers.for_hypervisor(work.host.hypervisor)
        assert work.secondary is not None and work.template_id is not None
        with heartbeating(f"deleting template {work.template_id}"):
            driver.delete_template(work.host, work.secondary, work.template_id)


def launched(info: VirtualMachineInfo) -> LaunchedVm:
    return LaunchedVm(vm_id=info.vm_id, power_state=info.power_state.value, host_id=info.host_id)


def _answered_within(
    hosts: list[HostRef],
    ask: Callable[[HostRef], object],
    timeout_seconds: float,
    *,
    keep: bool = False,
) -> dict[str, bool]:
    """host id → whether `ask` returned within the timeout (with `keep`, what it returned,
    taken as a truth value); an error is a no. The calls run side by side."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts))))
    try:
        futures = {host.host_id: pool.submit(ask, host) for host in hosts}
        deadline = time.monotonic() + timeout_seconds
        answers: dict[str, bool] = {}
        for host_id, future in futures.items():
            try:
                value = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # a timeout, a driver error: no answer
                answers[host_id] = False
                continue
            answers[host_id] = bool(value) if keep else True
        return answers
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
