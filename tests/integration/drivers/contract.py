"""The hypervisor driver contract: one suite every backend passes.

A backend's test module subclasses `HypervisorContract` and provides a `backend` fixture. What a
backend cannot do is declared in `unsupported` with the reason: for those operations the suite
proves the driver says so clearly (UnsupportedOperationError, CloudStack 432) and then reports
the test as skipped with the reason, so nothing unsupported ever passes silently.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    HypervisorDriver,
    NicSpec,
    PowerState,
    ResourceUnavailableError,
    SecondaryStorageRef,
    StoragePoolRef,
    TemplateRef,
    UnsupportedOperationError,
    VirtualMachineInfo,
    VirtualMachineSpec,
    VolumeInfo,
    VolumeMove,
    VolumeSpec,
)

MIB = 1024 * 1024

#: Operation names a backend may list in `HypervisorContract.unsupported`.
OPERATIONS = frozenset(
    {
        "volumes",
        "attach",
        "resize",
        "snapshot",
        "memory_snapshot",
        "migrate",
        "migrate_with_storage",
        "reboot",
        "multiple_vms",
        # Volume snapshots (issue 3): on primary storage, of a running VM's disk, and their
        # backup to secondary storage (every later step starts from a backup).
        "volume_snapshot",
        "live_volume_snapshot",
        "snapshot_backup",
    }
)


class DiskContent(Protocol):
    """How a test reads and writes what a guest would see on a disk, where it can."""

    def write(self, path: str, pattern: int) -> None:
        """Fill the start of the disk at `path` with the byte `pattern`."""

    def holds(self, path: str, pattern: int) -> bool:
        """Whether the start of the disk at `path` is filled with the byte `pattern`."""


@dataclass
class Backend:
    """What one backend's fixture hands the contract."""

    driver: Any  # a HypervisorDriver with the issue-4 methods
    host: HostRef
    pool: StoragePoolRef
    unreachable_host: HostRef
    template: TemplateRef | None = None
    target_host: HostRef | None = None
    #: A pool `target_host` reaches and `host` does not, for migration with storage.
    target_pool: StoragePoolRef | None = None
    memory_mib: int = 64
    nics: tuple[NicSpec, ...] = ()
    volume_size: int = 16 * MIB
    #: Called with each VM spec before define (e.g. bare metal's provisioning callback).
    before_start: Callable[[str], None] = field(default=lambda vm_id: None)
    #: The zone's secondary storage, when the backend needs a particular folder for it.
    secondary: SecondaryStorageRef | None = None
    #: Reads and writes disk content, for backends whose disks a test can open.
    disk_content: DiskContent | None = None


class Cleanup:
    """Destroys what a test made, in reverse, whatever the test's outcome."""

    def __init__(self, backend: Backend, *, volumes: bool, secondary: SecondaryStorageRef) -> None:
        self.backend = backend
        self.has_volumes = volumes
        self.secondary = secondary
        self.vms: list[tuple[HostRef, str]] = []
        self.volumes: list[str] = []
        #: (volume id, snapshot id) of volume snapshots; their backups are removed too.
        self.volume_snapshots: list[tuple[str, str]] = []

    def run(self) -> None:
        driver = self.backend.driver
        for host, vm_id in reversed(self.vms):
            with contextlib.suppress(DriverError):
                driver.destroy_vm(host, vm_id)
        if not self.has_volumes:
            return
        host, pool = self.backend.host, self.backend.pool
        for volume_id, snapshot_id in reversed(self.volume_snapshots):
            with contextlib.suppress(DriverError):
                driver.delete_volume_snapshot(host, pool, volume_id, snapshot_id)
            with contextlib.suppress(DriverError):
                driver.delete_snapshot_backup(host, self.secondary, snapshot_id)
        for volume_id in reversed(self.volumes):
            with contextlib.suppress(DriverError):
                driver.delete_volume(self.backend.host, self.backend.pool, volume_id)


def new_id() -> str:
    return str(uuid.uuid4())


class HypervisorContract:
    """The behaviour every `HypervisorDriver` proves. Subclasses provide the `backend` fixture."""

    #: operation → why this backend cannot do it. A class's own; a backend fixture may replace it
    #: for its test's instance (the QEMU backend without a second daemon cannot migrate).
    unsupported: dict[str, str] = {}

    # -- helpers ---------------------------------------------------------------------------
    @pytest.fixture
    def secondary(self, backend: Backend, tmp_path: Path) -> SecondaryStorageRef:
        """The zone's secondary storage: the backend's own, or a fresh folder per test."""
        if backend.secondary is not None:
            return backend.secondary
        path = tmp_path / "secondary"
        path.mkdir()
        return SecondaryStorageRef(f"store-{new_id()[:8]}", "secondary", path.as_uri(), str(path))

    @pytest.fixture
    def cleanup(self, backend: Backend, secondary: SecondaryStorageRef) -> Iterator[Cleanup]:
        cleanup = Cleanup(backend, volumes="volumes" not in self.unsupported, secondary=secondary)
        yield cleanup
        cleanup.run()

    def supported(self, operation: str, attempt: Callable[[], object]) -> None:
        """Skip the test, after proving the driver refuses with 432, if it cannot do this."""
        assert operation in OPERATIONS
        reason = self.unsupported.get(operation)
        if reason is None:
            return
        with pytest.raises(UnsupportedOperationError) as refused:
            attempt()
        assert refused.value.code == 432 and not refused.value.retryable
        pytest.skip(f"unsupported by this backend, refused with 432 as it must: {reason}")

    def volume(self, backend: Backend, cleanup: Cleanup, *, template: bool = False) -> VolumeInfo:
        volume_id = new_id()
        cleanup.volumes.append(volume_id)
        if "volumes" in self.unsupported:
            # Bare metal: the machine's own disks; the spec only names them.
            return VolumeInfo(volume_id, f"local:{volume_id}", backend.volume_size, "local")
        spec = VolumeSpec(
            volume_id=volume_id,
            name=f"vol-{volume_id[:8]}",
            size_bytes=backend.volume_size,
            template=backend.template if template else None,
        )
        return backend.driver.create_volume(backend.host, backend.pool, spec)

    def vm_spec(self, backend: Backend, cleanup: Cleanup) -> VirtualMachineSpec:
        vm_id = new_id()
        root = self.volume(backend, cleanup, template=backend.template is not None)
        return VirtualMachineSpec(
            vm_id=vm_id,
            name=f"i-{vm_id[:8]}",
            cpu_count=1,
            cpu_speed_mhz=1000,
            memory_mib=backend.memory_mib,
            root_volume=root,
            nics=backend.nics,
        )

    def defined_vm(self, backend: Backend, cleanup: Cleanup) -> VirtualMachineSpec:
        spec = self.vm_spec(backend, cleanup)
        cleanup.vms.append((backend.host, spec.vm_id))
        backend.driver.define_vm(backend.host, spec)
        return spec

    def running_vm(self, backend: Backend, cleanup: Cleanup) -> VirtualMachineSpec:
        spec = self.defined_vm(backend, cleanup)
        backend.before_start(spec.vm_id)
        info = backend.driver.start_vm(backend.host, spec.vm_id)
        assert info.power_state == PowerState.POWERED_ON
        return spec

    @staticmethod
    def ids(vms: list[VirtualMachineInfo]) -> list[str]:
        return [vm.vm_id for vm in vms]

    # -- the contract: host ----------------------------------------------------------------
    def test_satisfies_the_driver_protocol(self, backend: Backend) -> None:
        assert isinstance(backend.driver, HypervisorDriver)
        assert backend.driver.hypervisor

    def test_host_capacity_reports_cpus_memory_and_vm_count(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        before = backend.driver.host_capacity(backend.host)
        assert before.cpu_count > 0 and before.cpu_speed_mhz > 0 and before.memory_mib > 0
        self.running_vm(backend, cleanup)
        after = backend.driver.host_capacity(backend.host)
        assert after.vm_count == before.vm_count + 1

    def test_unreachable_host_is_a_retryable_resource_unavailable_error(
        self, backend: Backend
    ) -> None:
        with pytest.raises(ResourceUnavailableError) as error:
            backend.driver.list_vms(backend.unreachable_host)
        assert error.value.code == 534 and error.value.retryable
        assert str(error.value)

    # -- the contract: VM lifecycle --------------------------------------------------------
    def test_find_vm_returns_none_for_an_unknown_stratus_id(self, backend: Backend) -> None:
        assert backend.driver.find_vm(backend.host, new_id()) is None

    def test_define_twice_with_one_stratus_id_makes_one_stopped_vm(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.vm_spec(backend, cleanup)
        cleanup.vms.append((backend.host, spec.vm_id))
        first = backend.driver.define_vm(backend.host, spec)
        second = backend.driver.define_vm(backend.host, spec)
        assert first == second
        assert first.vm_id == spec.vm_id and first.power_state == PowerState.POWERED_OFF
        assert first.host_id == backend.host.host_id
        assert self.ids(backend.driver.list_vms(backend.host)).count(spec.vm_id) == 1
        assert backend.driver.find_vm(backend.host, spec.vm_id) == first

    def test_start_and_stop_change_power_state_and_repeat_harmlessly(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.running_vm(backend, cleanup)
        again = backend.driver.start_vm(backend.host, spec.vm_id)
        assert again.power_state == PowerState.POWERED_ON
        found = backend.driver.find_vm(backend.host, spec.vm_id)
        assert found is not None and found.power_state == PowerState.POWERED_ON
        stopped = backend.driver.stop_vm(backend.host, spec.vm_id)
        assert stopped.power_state == PowerState.POWERED_OFF
        assert backend.driver.stop_vm(backend.host, spec.vm_id).power_state == (
            PowerState.POWERED_OFF
        )

    def test_forced_stop_powers_a_running_vm_off(self, backend: Backend, cleanup: Cleanup) -> None:
        spec = self.running_vm(backend, cleanup)
        stopped = backend.driver.stop_vm(backend.host, spec.vm_id, forced=True)
        assert stopped.power_state == PowerState.POWERED_OFF

    def test_reboot_leaves_a_running_vm_running(self, backend: Backend, cleanup: Cleanup) -> None:
        spec = self.running_vm(backend, cleanup)
        self.supported("reboot", lambda: backend.driver.reboot_vm(backend.host, spec.vm_id))
        rebooted = backend.driver.reboot_vm(backend.host, spec.vm_id)
        assert rebooted.power_state == PowerState.POWERED_ON

    def test_list_vms_reports_each_vm_with_its_power_state(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        running = self.running_vm(backend, cleanup)
        # Bare metal: a host is one machine and runs one instance.
        self.supported("multiple_vms", lambda: self.defined_vm(backend, cleanup))
        stopped = self.defined_vm(backend, cleanup)
        states = {vm.vm_id: vm.power_state for vm in backend.driver.list_vms(backend.host)}
        assert states[running.vm_id] == PowerState.POWERED_ON
        assert states[stopped.vm_id] == PowerState.POWERED_OFF

    def test_destroy_removes_the_vm_and_a_second_destroy_is_not_an_error(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.running_vm(backend, cleanup)
        backend.driver.destroy_vm(backend.host, spec.vm_id)
        assert backend.driver.find_vm(backend.host, spec.vm_id) is None
        assert spec.vm_id not in self.ids(backend.driver.list_vms(backend.host))
        backend.driver.destroy_vm(backend.host, spec.vm_id)

    def test_operations_on_an_unknown_vm_fail_without_retry(self, backend: Backend) -> None:
        with pytest.raises(DriverError) as error:
            backend.driver.start_vm(backend.host, new_id())
        assert not error.value.retryable
        assert not isinstance(error.value, UnsupportedOperationError)

    # -- the contract: volumes -------------------------------------------------------------
    def test_create_volume_twice_with_one_id_returns_the_same_disk(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        volume_id = new_id()
        cleanup.volumes.append(volume_id)
        spec = VolumeSpec(volume_id, "data", backend.volume_size)
        self.supported(
            "volumes", lambda: backend.driver.create_volume(backend.host, backend.pool, spec)
        )
        first = backend.driver.create_volume(backend.host, backend.pool, spec)
        second = backend.driver.create_volume(backend.host, backend.pool, spec)
        assert first == second
        assert first.volume_id == volume_id and first.pool_id == backend.pool.pool_id
        assert first.size_bytes >= backend.volume_size and first.path

    def test_volume_from_a_template_is_at_least_the_template_size(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        if backend.template is None:
            pytest.skip("this backend's fixture has no template")
        volume = self.volume(backend, cleanup, template=True)
        assert volume.size_bytes >= backend.template.size_bytes

    def test_delete_volume_twice_is_not_an_error(self, backend: Backend, cleanup: Cleanup) -> None:
        self.supported(
            "volumes",
            lambda: backend.driver.delete_volume(backend.host, backend.pool, new_id()),
        )
        volume = self.volume(backend, cleanup)
        backend.driver.delete_volume(backend.host, backend.pool, volume.volume_id)
        backend.driver.delete_volume(backend.host, backend.pool, volume.volume_id)
        # Gone for real: creating it again makes a fresh disk rather than finding the old one.
        again = backend.driver.create_volume(
            backend.host,
            backend.pool,
            VolumeSpec(volume.volume_id, "again", 2 * backend.volume_size),
        )
        assert again.size_bytes == 2 * backend.volume_size

    def test_resize_grows_a_volume_and_refuses_to_shrink_it(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        volume = self.volume(backend, cleanup)
        bigger = 2 * backend.volume_size
        self.supported(
            "resize",
            lambda: backend.driver.resize_volume(
                backend.host, backend.pool, volume.volume_id, bigger
            ),
        )
        grown = backend.driver.resize_volume(backend.host, backend.pool, volume.volume_id, bigger)
        assert grown.size_bytes == bigger and grown.volume_id == volume.volume_id
        same = backend.driver.resize_volume(backend.host, backend.pool, volume.volume_id, bigger)
        assert same.size_bytes == bigger
        with pytest.raises(DriverError) as refused:
            backend.driver.resize_volume(
                backend.host, backend.pool, volume.volume_id, backend.volume_size
            )
        assert not refused.value.retryable

    def test_attach_and_detach_a_data_volume_on_a_running_vm(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.running_vm(backend, cleanup)
        volume = self.volume(backend, cleanup)
        self.supported(
            "attach",
            lambda: backend.driver.attach_volume(backend.host, spec.vm_id, volume, device_id=1),
        )
        attached = backend.driver.attach_volume(backend.host, spec.vm_id, volume, device_id=1)
        assert (attached.vm_id, attached.volume_id, attached.device_id) == (
            spec.vm_id,
            volume.volume_id,
            1,
        )
        again = backend.driver.attach_volume(backend.host, spec.vm_id, volume, device_id=1)
        assert again == attached
        attachments = backend.driver.list_volume_attachments(backend.host, spec.vm_id)
        by_volume = {a.volume_id: a.device_id for a in attachments}
        assert by_volume == {spec.root_volume.volume_id: 0, volume.volume_id: 1}
        backend.driver.detach_volume(backend.host, spec.vm_id, volume.volume_id)
        backend.driver.detach_volume(backend.host, spec.vm_id, volume.volume_id)
        remaining = backend.driver.list_volume_attachments(backend.host, spec.vm_id)
        assert [a.volume_id for a in remaining] == [spec.root_volume.volume_id]

    # -- the contract: snapshots -----------------------------------------------------------
    def test_snapshot_twice_with_one_id_makes_one_snapshot_then_delete_twice(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.defined_vm(backend, cleanup)
        snapshot_id = new_id()
        self.supported(
            "snapshot",
            lambda: backend.driver.create_snapshot(
                backend.host, spec.vm_id, snapshot_id, memory=False
            ),
        )
        first = backend.driver.create_snapshot(backend.host, spec.vm_id, snapshot_id, memory=False)
        second = backend.driver.create_snapshot(backend.host, spec.vm_id, snapshot_id, memory=False)
        assert first == second
        assert (first.snapshot_id, first.vm_id, first.memory) == (snapshot_id, spec.vm_id, False)
        listed = backend.driver.list_snapshots(backend.host, spec.vm_id)
        assert [s.snapshot_id for s in listed] == [snapshot_id]
        backend.driver.delete_snapshot(backend.host, spec.vm_id, snapshot_id)
        backend.driver.delete_snapshot(backend.host, spec.vm_id, snapshot_id)
        assert backend.driver.list_snapshots(backend.host, spec.vm_id) == []

    def test_reverting_a_memory_snapshot_leaves_the_vm_running(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.running_vm(backend, cleanup)
        snapshot_id = new_id()
        self.supported(
            "memory_snapshot",
            lambda: backend.driver.create_snapshot(
                backend.host, spec.vm_id, snapshot_id, memory=True
            ),
        )
        snapshot = backend.driver.create_snapshot(
            backend.host, spec.vm_id, snapshot_id, memory=True
        )
        assert snapshot.memory
        backend.driver.stop_vm(backend.host, spec.vm_id, forced=True)
        reverted = backend.driver.revert_snapshot(backend.host, spec.vm_id, snapshot_id)
        assert reverted.power_state == PowerState.POWERED_ON
        backend.driver.delete_snapshot(backend.host, spec.vm_id, snapshot_id)

    def test_reverting_a_disk_only_snapshot_leaves_the_vm_stopped(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.running_vm(backend, cleanup)
        snapshot_id = new_id()
        self.supported(
            "snapshot",
            lambda: backend.driver.create_snapshot(
                backend.host, spec.vm_id, snapshot_id, memory=False
            ),
        )
        snapshot = backend.driver.create_snapshot(
            backend.host, spec.vm_id, snapshot_id, memory=False
        )
        assert not snapshot.memory
        reverted = backend.driver.revert_snapshot(backend.host, spec.vm_id, snapshot_id)
        assert reverted.power_state == PowerState.POWERED_OFF
        backend.driver.delete_snapshot(backend.host, spec.vm_id, snapshot_id)

    # -- the contract: volume snapshots (issue 3) ------------------------------------------
    def volume_snapshot(
        self, backend: Backend, cleanup: Cleanup, volume: VolumeInfo
    ) -> tuple[str, Any]:
        """Snapshot the volume on primary storage (skipping where the backend cannot)."""
        snapshot_id = new_id()
        cleanup.volume_snapshots.append((volume.volume_id, snapshot_id))
        driver, host, pool = backend.driver, backend.host, backend.pool
        self.supported(
            "volume_snapshot",
            lambda: driver.snapshot_volume(host, pool, volume.volume_id, snapshot_id),
        )
        return snapshot_id, driver.snapshot_volume(host, pool, volume.volume_id, snapshot_id)

    def backed_up_snapshot(
        self,
        backend: Backend,
        cleanup: Cleanup,
        secondary: SecondaryStorageRef,
        volume: VolumeInfo,
    ) -> str:
        """Snapshot, back up to secondary storage and drop the primary copy, as CloudStack does."""
        snapshot_id, _ = self.volume_snapshot(backend, cleanup, volume)
        driver, host, pool = backend.driver, backend.host, backend.pool
        self.supported(
            "snapshot_backup",
            lambda: driver.backup_volume_snapshot(
                host, pool, volume.volume_id, snapshot_id, secondary
            ),
        )
        driver.backup_volume_snapshot(host, pool, volume.volume_id, snapshot_id, secondary)
        driver.delete_volume_snapshot(host, pool, volume.volume_id, snapshot_id)
        return snapshot_id

    def test_volume_snapshot_twice_with_one_id_is_one_copy_of_the_disk_then_delete_twice(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        volume = self.volume(backend, cleanup)
        snapshot_id, first = self.volume_snapshot(backend, cleanup, volume)
        driver, host, pool = backend.driver, backend.host, backend.pool
        second = driver.snapshot_volume(host, pool, volume.volume_id, snapshot_id)
        assert first == second
        assert (first.snapshot_id, first.volume_id) == (snapshot_id, volume.volume_id)
        assert first.size_bytes == volume.size_bytes and first.path != volume.path
        driver.delete_volume_snapshot(host, pool, volume.volume_id, snapshot_id)
        driver.delete_volume_snapshot(host, pool, volume.volume_id, snapshot_id)
        # The disk itself is untouched by its snapshot's removal.
        again = driver.create_volume(host, pool, VolumeSpec(volume.volume_id, "x", 1))
        assert again == volume

    def test_volume_snapshot_of_a_running_vm_disk_is_a_copy_of_it(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.defined_vm(backend, cleanup)
        root = spec.root_volume
        content = backend.disk_content
        if content is not None:
            content.write(root.path, 0xD4)
        backend.before_start(spec.vm_id)
        assert backend.driver.start_vm(backend.host, spec.vm_id).power_state == (
            PowerState.POWERED_ON
        )
        snapshot_id = new_id()
        cleanup.volume_snapshots.append((root.volume_id, snapshot_id))
        driver, host, pool = backend.driver, backend.host, backend.pool
        for operation in ("volume_snapshot", "live_volume_snapshot"):
            self.supported(
                operation, lambda: driver.snapshot_volume(host, pool, root.volume_id, snapshot_id)
            )
        snapshot = driver.snapshot_volume(host, pool, root.volume_id, snapshot_id)
        assert snapshot.size_bytes == root.size_bytes and snapshot.path != root.path
        if content is not None:
            assert content.holds(snapshot.path, 0xD4)
        assert driver.snapshot_volume(host, pool, root.volume_id, snapshot_id) == snapshot
        found = driver.find_vm(host, spec.vm_id)
        assert found is not None and found.power_state == PowerState.POWERED_ON

    def test_backup_twice_is_one_backup_that_outlives_the_primary_copy(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        snapshot_id, primary = self.volume_snapshot(backend, cleanup, volume)
        driver, host, pool = backend.driver, backend.host, backend.pool

        def backup() -> Any:
            return driver.backup_volume_snapshot(
                host, pool, volume.volume_id, snapshot_id, secondary
            )

        self.supported("snapshot_backup", backup)
        first = backup()
        assert first == backup()
        assert (first.snapshot_id, first.volume_id) == (snapshot_id, volume.volume_id)
        assert first.size_bytes == primary.size_bytes and first.path != primary.path
        driver.delete_volume_snapshot(host, pool, volume.volume_id, snapshot_id)
        # A retried backup after the primary copy is gone finds the backup made.
        assert backup() == first

    def test_backing_up_a_missing_primary_snapshot_is_a_clear_driver_error(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        self.volume_snapshot(backend, cleanup, volume)  # skips where there are none
        driver, host, pool = backend.driver, backend.host, backend.pool
        missing = new_id()
        with pytest.raises(DriverError) as error:
            driver.backup_volume_snapshot(host, pool, volume.volume_id, missing, secondary)
        assert not isinstance(error.value, UnsupportedOperationError)
        assert not error.value.retryable and missing in str(error.value)

    def test_revert_restores_the_snapshotted_disk_from_its_backup_and_repeats_harmlessly(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        driver, host, pool, content = (
            backend.driver,
            backend.host,
            backend.pool,
            backend.disk_content,
        )
        if content is not None:
            content.write(volume.path, 0xA1)
        snapshot_id = self.backed_up_snapshot(backend, cleanup, secondary, volume)
        # The disk changes after the snapshot: new content, and grown where it can grow.
        if content is not None:
            content.write(volume.path, 0xB2)
            assert not content.holds(volume.path, 0xA1)
        if "resize" not in self.unsupported:
            grown = driver.resize_volume(host, pool, volume.volume_id, 2 * volume.size_bytes)
            assert grown.size_bytes == 2 * volume.size_bytes
        reverted = driver.revert_volume_to_snapshot(
            host, pool, volume.volume_id, secondary, snapshot_id
        )
        assert reverted == volume  # same id, pool, path, and the snapshot's size
        if content is not None:
            assert content.holds(volume.path, 0xA1)
        again = driver.revert_volume_to_snapshot(
            host, pool, volume.volume_id, secondary, snapshot_id
        )
        assert again == reverted
        if content is not None:
            assert content.holds(volume.path, 0xA1)

    def test_revert_of_a_running_vm_disk_is_refused_without_retry(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        spec = self.defined_vm(backend, cleanup)
        snapshot_id = self.backed_up_snapshot(backend, cleanup, secondary, spec.root_volume)
        backend.before_start(spec.vm_id)
        backend.driver.start_vm(backend.host, spec.vm_id)
        with pytest.raises(DriverError) as refused:
            backend.driver.revert_volume_to_snapshot(
                backend.host, backend.pool, spec.root_volume.volume_id, secondary, snapshot_id
            )
        assert not refused.value.retryable
        assert not isinstance(refused.value, UnsupportedOperationError)
        found = backend.driver.find_vm(backend.host, spec.vm_id)
        assert found is not None and found.power_state == PowerState.POWERED_ON

    def test_volume_from_a_snapshot_is_a_new_disk_of_at_least_the_spec_size_made_once(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        content = backend.disk_content
        if content is not None:
            content.write(volume.path, 0xC3)
        snapshot_id = self.backed_up_snapshot(backend, cleanup, secondary, volume)
        driver, host, pool = backend.driver, backend.host, backend.pool
        for size in (volume.size_bytes, 2 * volume.size_bytes):
            volume_id = new_id()
            cleanup.volumes.append(volume_id)
            spec = VolumeSpec(volume_id, f"from-{snapshot_id[:8]}", size)
            if size > volume.size_bytes:  # a bigger volume needs the backend to grow a disk
                self.supported(
                    "resize",
                    lambda spec=spec: driver.create_volume_from_snapshot(  # type: ignore[misc]
                        host, pool, spec, secondary, snapshot_id
                    ),
                )
            first = driver.create_volume_from_snapshot(host, pool, spec, secondary, snapshot_id)
            second = driver.create_volume_from_snapshot(host, pool, spec, secondary, snapshot_id)
            assert first == second
            assert (first.volume_id, first.pool_id) == (volume_id, pool.pool_id)
            assert first.size_bytes >= size and first.path != volume.path
            if content is not None:
                assert content.holds(first.path, 0xC3)
        # The source disk is untouched.
        assert driver.create_volume(host, pool, VolumeSpec(volume.volume_id, "x", 1)) == volume

    def test_template_from_a_snapshot_is_made_once_and_volumes_deploy_from_it(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        snapshot_id = self.backed_up_snapshot(backend, cleanup, secondary, volume)
        driver, host = backend.driver, backend.host
        template_id = new_id()
        first = driver.create_template_from_snapshot(host, secondary, snapshot_id, template_id)
        assert first == driver.create_template_from_snapshot(
            host, secondary, snapshot_id, template_id
        )
        assert first.template_id == template_id and first.url and first.format
        assert first.size_bytes >= volume.size_bytes
        # The template outlives the snapshot's backup, and deployments copy it.
        driver.delete_snapshot_backup(host, secondary, snapshot_id)
        deployed_id = new_id()
        cleanup.volumes.append(deployed_id)
        spec = VolumeSpec(deployed_id, "deployed", backend.volume_size, template=first)
        deployed = driver.create_volume(host, backend.pool, spec)
        assert deployed.size_bytes >= first.size_bytes

    def test_delete_backup_twice_then_every_use_of_it_is_a_clear_driver_error(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        snapshot_id = self.backed_up_snapshot(backend, cleanup, secondary, volume)
        driver, host, pool = backend.driver, backend.host, backend.pool
        driver.delete_snapshot_backup(host, secondary, snapshot_id)
        driver.delete_snapshot_backup(host, secondary, snapshot_id)
        never_made = new_id()
        cleanup.volumes.append(never_made)
        attempts: list[Callable[[], object]] = [
            lambda: driver.revert_volume_to_snapshot(
                host, pool, volume.volume_id, secondary, snapshot_id
            ),
            lambda: driver.create_volume_from_snapshot(
                host,
                pool,
                VolumeSpec(never_made, "never", volume.size_bytes),
                secondary,
                snapshot_id,
            ),
            lambda: driver.create_template_from_snapshot(host, secondary, snapshot_id, new_id()),
        ]
        for attempt in attempts:
            with pytest.raises(DriverError) as error:
                attempt()
            assert not isinstance(error.value, UnsupportedOperationError)
            assert not error.value.retryable and snapshot_id in str(error.value)
        # A failed revert leaves the disk as it was.
        assert driver.create_volume(host, pool, VolumeSpec(volume.volume_id, "x", 1)) == volume

    # -- the contract: migration -----------------------------------------------------------
    def test_migrate_moves_a_running_vm_to_the_target_host(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.running_vm(backend, cleanup)
        target = backend.target_host or backend.host
        self.supported(
            "migrate", lambda: backend.driver.migrate_vm(backend.host, target, spec.vm_id)
        )
        assert backend.target_host is not None, "a backend that migrates needs a target host"
        cleanup.vms.append((target, spec.vm_id))
        moved = backend.driver.migrate_vm(backend.host, target, spec.vm_id)
        assert moved.host_id == target.host_id and moved.power_state == PowerState.POWERED_ON
        assert backend.driver.find_vm(backend.host, spec.vm_id) is None
        found = backend.driver.find_vm(target, spec.vm_id)
        assert found is not None and found.power_state == PowerState.POWERED_ON
        # A retried migration (the first answer was lost) finds the VM already there.
        assert backend.driver.migrate_vm(backend.host, target, spec.vm_id) == moved

    def test_migrate_with_storage_moves_the_vm_and_its_disk_and_back(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.running_vm(backend, cleanup)
        target = backend.target_host or backend.host
        target_pool = backend.target_pool or backend.pool
        root = spec.root_volume.volume_id
        there = [VolumeMove(root, backend.pool, target_pool)]
        self.supported(
            "migrate_with_storage",
            lambda: backend.driver.migrate_vm_with_storage(backend.host, target, spec.vm_id, there),
        )
        assert backend.target_host is not None and backend.target_pool is not None
        cleanup.vms.append((target, spec.vm_id))
        moved = backend.driver.migrate_vm_with_storage(backend.host, target, spec.vm_id, there)
        assert [(d.volume_id, d.pool_id) for d in moved] == [(root, target_pool.pool_id)]
        assert backend.driver.find_vm(backend.host, spec.vm_id) is None
        found = backend.driver.find_vm(target, spec.vm_id)
        assert found is not None and found.power_state == PowerState.POWERED_ON
        # A retry (the first answer was lost) answers the same; the way back is the same call.
        again = backend.driver.migrate_vm_with_storage(backend.host, target, spec.vm_id, there)
        assert again == moved
        back = [VolumeMove(root, target_pool, backend.pool)]
        returned = backend.driver.migrate_vm_with_storage(target, backend.host, spec.vm_id, back)
        assert [(d.volume_id, d.pool_id) for d in returned] == [(root, backend.pool.pool_id)]
        assert backend.driver.find_vm(target, spec.vm_id) is None
