"""The simulator hypervisor: an in-process backend for development, tests and benchmarks.

Like CloudStack's simulator it keeps VMs per host in memory and can be told to fail or delay a
given operation on a given host. The faults come from a `FaultSource` (the composition root
reads them from the event store), so an admin sets them through the API while this driver runs
in a worker process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from activities.drivers.hypervisor import (
    DriverError,
    HostCapacity,
    HostRef,
    PowerState,
    ResourceUnavailableError,
    SecondaryStorageRef,
    SnapshotInfo,
    StoragePoolRef,
    TemplateRef,
    VirtualMachineInfo,
    VirtualMachineSpec,
    VolumeAttachment,
    VolumeInfo,
    VolumeMove,
    VolumeSnapshotInfo,
    VolumeSpec,
)

#: Returns the faults in force: dicts with operation, action, host_id, delay_seconds,
#: error_code and message (see domain.simulator_fault).
FaultSource = Callable[[], Iterable[Mapping[str, Any]]]


def no_faults() -> list[Mapping[str, Any]]:
    return []


def pause(seconds: float, slice_seconds: float = 0.1) -> None:
    """Sleep in short slices: an activity's cancellation is raised into its thread between
    Python instructions, so a simulated delay can be cut short the way a real driver call can
    be aborted, instead of running to its end inside one C-level sleep."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(slice_seconds, left))


@dataclass(frozen=True)
class SimulatedVm:
    spec: VirtualMachineSpec
    power_state: PowerState
    host_id: str


class SimulatorDriver:
    hypervisor = "Simulator"

    def __init__(
        self,
        faults: FaultSource = no_faults,
        *,
        cpu_count: int = 16,
        cpu_speed_mhz: int = 2400,
        memory_mib: int = 65536,
    ) -> None:
        self._faults = faults
        self._capacity = HostCapacity(cpu_count, cpu_speed_mhz, memory_mib)
        self._lock = threading.Lock()
        self._vms: dict[str, dict[str, SimulatedVm]] = {}
        self._volumes: dict[str, dict[str, VolumeInfo]] = {}
        #: Volume snapshots on primary storage: pool id → snapshot id → snapshot.
        self._volume_snapshots: dict[str, dict[str, VolumeSnapshotInfo]] = {}
        #: Their backups on secondary storage: store id → snapshot id → backup.
        self._snapshot_backups: dict[str, dict[str, VolumeSnapshotInfo]] = {}
        #: Template images made from backups: store id → template id → template.
        self._templates: dict[str, dict[str, TemplateRef]] = {}

    # -- fault injection -------------------------------------------------------------------
    def _simulate(self, operation: str, host: HostRef) -> None:
        """Apply the faults configured for this operation on this host, delays first."""
        matching = [
            f
            for f in self._faults()
            if f["operation"] in (operation, "*") and f.get("host_id") in (None, host.host_id)
        ]
        for fault in sorted(matching, key=lambda f: f["action"] != "delay"):
            if fault["action"] == "delay":
                pause(float(fault["delay_seconds"]))
            elif fault["action"] == "fail":
                message = fault.get("message") or (
                    f"simulated failure of {operation} on host {host.name}"
                )
                if int(fault.get("error_code", 534)) == 534:
                    raise ResourceUnavailableError(message)
                raise DriverError(message)

    # -- host ------------------------------------------------------------------------------
    def host_capacity(self, host: HostRef) -> HostCapacity:
        self._simulate("host_capacity", host)
        with self._lock:
            return replace(self._capacity, vm_count=len(self._vms.get(host.host_id, {})))

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        self._simulate("list_vms", host)
        with self._lock:
            return [self._info(vm) for vm in self._vms.get(host.host_id, {}).values()]

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        self._simulate("find_vm", host)
        with self._lock:
            vm = self._vms.get(host.host_id, {}).get(vm_id)
            return self._info(vm) if vm else None

    # -- volumes ---------------------------------------------------------------------------
    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        self._simulate("create_volume", host)
        with self._lock:
            volumes = self._volumes.setdefault(pool.pool_id, {})
            existing = volumes.get(spec.volume_id)
            if existing is not None:
                return existing
            info = VolumeInfo(
                volume_id=spec.volume_id,
                path=f"{pool.path.rstrip('/')}/{spec.volume_id}",
                size_bytes=spec.size_bytes,
                pool_id=pool.pool_id,
            )
            volumes[spec.volume_id] = info
            return info

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        self._simulate("delete_volume", host)
        with self._lock:
            self._volumes.get(pool.pool_id, {}).pop(volume_id, None)

    def volumes_on(self, pool_id: str) -> list[VolumeInfo]:
        """What the simulator holds on a pool: how tests check that nothing leaked."""
        with self._lock:
            return list(self._volumes.get(pool_id, {}).values())

    # -- virtual machines ------------------------------------------------------------------
    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        self._simulate("define_vm", host)
        with self._lock:
            vms = self._vms.setdefault(host.host_id, {})
            vm = vms.get(spec.vm_id)
            if vm is None:
                vm = SimulatedVm(spec, PowerState.POWERED_OFF, host.host_id)
                vms[spec.vm_id] = vm
            return self._info(vm)

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        self._simulate("start_vm", host)
        return self._set_power(host, vm_id, PowerState.POWERED_ON)

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        self._simulate("stop_vm", host)
        return self._set_power(host, vm_id, PowerState.POWERED_OFF)

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        self._simulate("reboot_vm", host)
        return self._set_power(host, vm_id, PowerState.POWERED_ON)

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        self._simulate("destroy_vm", host)
        with self._lock:
            self._vms.get(host.host_id, {}).pop(vm_id, None)
            # Hot-plugged disks belong to the definition: undefined, the VM has none plugged.
            self._extra("_attachments").pop(vm_id, None)

    def power_off_host(self, host_id: str) -> list[str]:
        """The machine lost power (its BMC turned it off or cycled it): every VM that ran on it
        is gone, as a KVM host's transient domains are. Answers which. (For tests that tie a
        simulated host to a BMC's power.)"""
        with self._lock:
            return list(self._vms.pop(host_id, {}))

    def vms_on(self, host_id: str) -> list[VirtualMachineInfo]:
        """Every VM the simulator holds on a host, without fault injection (for tests)."""
        with self._lock:
            return [self._info(vm) for vm in self._vms.get(host_id, {}).values()]

    def _set_power(self, host: HostRef, vm_id: str, state: PowerState) -> VirtualMachineInfo:
        with self._lock:
            vm = self._vms.get(host.host_id, {}).get(vm_id)
            if vm is None:
                raise DriverError(f"VM {vm_id} is not defined on host {host.name}")
            vm = replace(vm, power_state=state)
            self._vms[host.host_id][vm_id] = vm
            return self._info(vm)

    @staticmethod
    def _info(vm: SimulatedVm) -> VirtualMachineInfo:
        return VirtualMachineInfo(vm.spec.vm_id, vm.spec.name, vm.power_state, vm.host_id)

    # -- issue 4: snapshots, attachment, resize, migration -----------------------------------
    # State for these lives in attributes made on first use, so the constructor stays as it is.
    def _extra(self, name: str) -> dict[Any, Any]:
        extra: dict[Any, Any] = self.__dict__.setdefault(name, {})
        return extra

    def _vm_or_fail(self, host: HostRef, vm_id: str) -> SimulatedVm:
        vm = self._vms.get(host.host_id, {}).get(vm_id)
        if vm is None:
            raise DriverError(f"VM {vm_id} is not defined on host {host.name}")
        return vm

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        self._simulate("create_snapshot", host)
        with self._lock:
            vm = self._vm_or_fail(host, vm_id)
            snapshots = self._extra("_snapshots").setdefault(vm_id, {})
            if snapshot_id not in snapshots:
                captured = memory and vm.power_state == PowerState.POWERED_ON
                snapshots[snapshot_id] = SnapshotInfo(snapshot_id, vm_id, captured)
            return snapshots[snapshot_id]  # type: ignore[no-any-return]

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        self._simulate("list_snapshots", host)
        with self._lock:
            self._vm_or_fail(host, vm_id)
            return list(self._extra("_snapshots").get(vm_id, {}).values())

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        self._simulate("revert_snapshot", host)
        with self._lock:
            self._vm_or_fail(host, vm_id)
            snapshot = self._extra("_snapshots").get(vm_id, {}).get(snapshot_id)
            if snapshot is None:
                raise DriverError(f"VM {vm_id} has no snapshot {snapshot_id}")
        state = PowerState.POWERED_ON if snapshot.memory else PowerState.POWERED_OFF
        return self._set_power(host, vm_id, state)

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        self._simulate("delete_snapshot", host)
        with self._lock:
            self._extra("_snapshots").get(vm_id, {}).pop(snapshot_id, None)

    def snapshots_of(self, vm_id: str) -> list[SnapshotInfo]:
        """Every snapshot the simulator holds of a VM, without fault injection (for tests)."""
        with self._lock:
            return list(self._extra("_snapshots").get(vm_id, {}).values())

    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        self._simulate("list_volume_attachments", host)
        with self._lock:
            vm = self._vm_or_fail(host, vm_id)
            volumes = (vm.spec.root_volume, *vm.spec.data_volumes)
            base = [VolumeAttachment(vm_id, v.volume_id, i) for i, v in enumerate(volumes)]
            return base + list(self._extra("_attachments").get(vm_id, {}).values())

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        self._simulate("attach_volume", host)
        with self._lock:
            self._vm_or_fail(host, vm_id)
            attached = self._extra("_attachments").setdefault(vm_id, {})
            if volume.volume_id not in attached:
                if any(a.device_id == device_id for a in attached.values()):
                    raise DriverError(f"device {device_id} of VM {vm_id} is in use")
                attached[volume.volume_id] = VolumeAttachment(vm_id, volume.volume_id, device_id)
            return attached[volume.volume_id]  # type: ignore[no-any-return]

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        self._simulate("detach_volume", host)
        with self._lock:
            self._vm_or_fail(host, vm_id)
            self._extra("_attachments").get(vm_id, {}).pop(volume_id, None)

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        self._simulate("resize_volume", host)
        with self._lock:
            volume = self._volumes.get(pool.pool_id, {}).get(volume_id)
            if volume is None:
                raise DriverError(f"volume {volume_id} is not in pool {pool.name}")
            if size_bytes < volume.size_bytes:
                raise DriverError(f"shrinking volume {volume_id} is refused")
            volume = replace(volume, size_bytes=size_bytes)
            self._volumes[pool.pool_id][volume_id] = volume
            return volume

    def copy_volume(
        self,
        host: HostRef,
        source_pool: StoragePoolRef,
        target_pool: StoragePoolRef,
        volume_id: str,
    ) -> VolumeInfo:
        self._simulate("copy_volume", host)
        with self._lock:
            targets = self._volumes.setdefault(target_pool.pool_id, {})
            existing = targets.get(volume_id)
            if existing is not None:
                return existing
            source = self._volumes.get(source_pool.pool_id, {}).get(volume_id)
            if source is None:
                raise DriverError(f"volume {volume_id} is not in pool {source_pool.name}")
            copy = replace(
                source,
                path=f"{target_pool.path.rstrip('/')}/{volume_id}",
                pool_id=target_pool.pool_id,
            )
            targets[volume_id] = copy
            return copy

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        self._simulate("migrate_vm", source_host)
        with self._lock:
            arrived = self._vms.get(target_host.host_id, {}).get(vm_id)
            if arrived is not None:
                return self._info(arrived)
            vm = self._vm_or_fail(source_host, vm_id)
            del self._vms[source_host.host_id][vm_id]
            moved = replace(vm, host_id=target_host.host_id)
            self._vms.setdefault(target_host.host_id, {})[vm_id] = moved
            return self._info(moved)

    def migrate_vm_with_storage(
        self,
        source_host: HostRef,
        target_host: HostRef,
        vm_id: str,
        moves: Sequence[VolumeMove],
    ) -> list[VolumeInfo]:
        """The VM and its disks switch over together, as a storage live migration's last step
        does: nothing has moved when a fault fires."""
        self._simulate("migrate_vm_with_storage", source_host)
        with self._lock:
            arrived = self._vms.get(target_host.host_id, {}).get(vm_id)
            vm = arrived or self._vm_or_fail(source_host, vm_id)
            for move in moves:
                held = self._volumes.get(move.source.pool_id, {})
                there = self._volumes.get(move.target.pool_id, {})
                if move.volume_id not in held and move.volume_id not in there:
                    raise DriverError(f"volume {move.volume_id} is not in pool {move.source.name}")
            moved: list[VolumeInfo] = []
            for move in moves:
                targets = self._volumes.setdefault(move.target.pool_id, {})
                source = self._volumes.get(move.source.pool_id, {}).pop(move.volume_id, None)
                if source is not None and move.volume_id not in targets:
                    targets[move.volume_id] = replace(
                        source,
                        path=f"{move.target.path.rstrip('/')}/{move.volume_id}",
                        pool_id=move.target.pool_id,
                    )
                moved.append(targets[move.volume_id])
            if arrived is None:
                del self._vms[source_host.host_id][vm_id]
                self._vms.setdefault(target_host.host_id, {})[vm_id] = replace(
                    vm, host_id=target_host.host_id
                )
            return moved

    # -- issue 3: volume snapshots -----------------------------------------------------------
    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        self._simulate("snapshot_volume", host)
        with self._lock:
            snapshots = self._volume_snapshots.setdefault(pool.pool_id, {})
            existing = snapshots.get(snapshot_id)
            if existing is not None:
                return existing
            volume = self._volumes.get(pool.pool_id, {}).get(volume_id)
            if volume is None:
                raise DriverError(f"volume {volume_id} is not in pool {pool.name}")
            snapshot = VolumeSnapshotInfo(
                snapshot_id=snapshot_id,
                volume_id=volume_id,
                path=f"{pool.path.rstrip('/')}/snapshots/{volume_id}/{snapshot_id}",
                size_bytes=volume.size_bytes,
            )
            snapshots[snapshot_id] = snapshot
            return snapshot

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        self._simulate("backup_volume_snapshot", host)
        with self._lock:
            backups = self._snapshot_backups.setdefault(secondary.store_id, {})
            existing = backups.get(snapshot_id)
            if existing is not None:
                return existing
            snapshot = self._volume_snapshots.get(pool.pool_id, {}).get(snapshot_id)
            if snapshot is None or snapshot.volume_id != volume_id:
                raise DriverError(
                    f"snapshot {snapshot_id} of volume {volume_id} is not on primary storage "
                    f"{pool.name}; nothing to back up"
                )
            backup = replace(snapshot, path=f"{secondary.path.rstrip('/')}/snapshots/{snapshot_id}")
            backups[snapshot_id] = backup
            return backup

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        self._simulate("delete_volume_snapshot", host)
        with self._lock:
            self._volume_snapshots.get(pool.pool_id, {}).pop(snapshot_id, None)

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        self._simulate("delete_snapshot_backup", host)
        with self._lock:
            self._snapshot_backups.get(secondary.store_id, {}).pop(snapshot_id, None)

    def _backup_or_fail(
        self, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        backup = self._snapshot_backups.get(secondary.store_id, {}).get(snapshot_id)
        if backup is None:
            raise DriverError(
                f"snapshot {snapshot_id} has no backup on secondary storage {secondary.name}"
            )
        return backup

    def _running_user_of(self, volume_id: str) -> str | None:
        """The id of a running VM that has the volume plugged in, if any."""
        for vms in self._vms.values():
            for vm_id, vm in vms.items():
                if vm.power_state != PowerState.POWERED_ON:
                    continue
                plugged = {v.volume_id for v in (vm.spec.root_volume, *vm.spec.data_volumes)}
                plugged |= set(self._extra("_attachments").get(vm_id, {}))
                if volume_id in plugged:
                    return vm_id
        return None

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        self._simulate("revert_volume_to_snapshot", host)
        with self._lock:
            backup = self._backup_or_fail(secondary, snapshot_id)
            volume = self._volumes.get(pool.pool_id, {}).get(volume_id)
            if volume is None:
                raise DriverError(f"volume {volume_id} is not in pool {pool.name}")
            user = self._running_user_of(volume_id)
            if user is not None:
                raise DriverError(
                    f"volume {volume_id} is in use by running VM {user}; stop it or detach "
                    "the volume before reverting"
                )
            # The disk becomes the snapshot again, size included (as CloudStack records it).
            volume = replace(volume, size_bytes=backup.size_bytes)
            self._volumes[pool.pool_id][volume_id] = volume
            return volume

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        self._simulate("create_volume_from_snapshot", host)
        with self._lock:
            volumes = self._volumes.setdefault(pool.pool_id, {})
            existing = volumes.get(spec.volume_id)
            if existing is not None:
                return existing
            backup = self._backup_or_fail(secondary, snapshot_id)
            info = VolumeInfo(
                volume_id=spec.volume_id,
                path=f"{pool.path.rstrip('/')}/{spec.volume_id}",
                size_bytes=max(spec.size_bytes, backup.size_bytes),
                pool_id=pool.pool_id,
            )
            volumes[spec.volume_id] = info
            return info

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        self._simulate("create_template_from_snapshot", host)
        with self._lock:
            templates = self._templates.setdefault(secondary.store_id, {})
            existing = templates.get(template_id)
            if existing is not None:
                return existing
            backup = self._backup_or_fail(secondary, snapshot_id)
            template = TemplateRef(
                template_id=template_id,
                name=f"from-snapshot-{snapshot_id}",
                url=f"{secondary.url.rstrip('/')}/templates/{template_id}.qcow2",
                format="QCOW2",
                size_bytes=backup.size_bytes,
            )
            templates[template_id] = template
            return template

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        self._simulate("delete_template", host)
        with self._lock:
            self._templates.get(secondary.store_id, {}).pop(template_id, None)

    def volume_snapshots_on(self, pool_id: str) -> list[VolumeSnapshotInfo]:
        """The volume snapshots held on a primary pool, without fault injection (for tests)."""
        with self._lock:
            return list(self._volume_snapshots.get(pool_id, {}).values())

    def snapshot_backups_on(self, store_id: str) -> list[VolumeSnapshotInfo]:
        """The snapshot backups held on a secondary store, without fault injection (for tests)."""
        with self._lock:
            return list(self._snapshot_backups.get(store_id, {}).values())
