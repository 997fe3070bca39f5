"""The driver contract against govmomi's vCenter simulator (vcsim), spoken to by pyVmomi."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pyVmomi import vim

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    NicSpec,
    ResourceUnavailableError,
    SecondaryStorageRef,
    StoragePoolRef,
    TemplateRef,
    UnsupportedOperationError,
    VolumeInfo,
    VolumeSpec,
)
from activities.drivers.vsphere import (
    COPYING_SUFFIX,
    VOLUME_SNAPSHOT_MARK,
    VCenterEndpoint,
    VSphereDriver,
    secondary_datastore_name,
    translate_fault,
)
from tests.integration.drivers.contract import (
    MIB,
    Backend,
    Cleanup,
    HypervisorContract,
    new_id,
)


def host(name: str, cluster: str = "DC0_C0") -> HostRef:
    return HostRef(f"host-{name}", name, "", cluster, "VMware")


def nfs_secondary(export: Path) -> SecondaryStorageRef:
    """Secondary storage exported over NFS from this machine: tests/vcsim mounts a loopback
    export as a datastore, as ESXi mounts one from an NFS server."""
    store_id = f"store-{uuid.uuid4().hex[:8]}"
    return SecondaryStorageRef(store_id, "secondary", f"nfs://127.0.0.1{export}", str(export))


def scratch_of(path: str) -> str:
    return path.removesuffix(".vmdk") + COPYING_SUFFIX


def test_a_locked_file_is_a_retryable_busy_fault() -> None:
    """A delete of a scratch copy an earlier attempt's CopyVirtualDisk_Task still writes fails
    with FileLocked; vcsim locks no file, so the mapping is checked on its own."""
    error = translate_fault(vim.fault.FileLocked(file="[ds] v-copying.vmdk"), "copy")
    assert isinstance(error, ResourceUnavailableError)
    assert error.code == 534 and error.retryable


class TestVSphereContract(HypervisorContract):
    unsupported = {
        "resize": "govmomi's simulator does not implement ExtendVirtualDisk_Task",
        "migrate_with_storage": "not implemented for vSphere yet (RelocateVM_Task disk locators)",
    }

    @pytest.fixture(scope="class")
    @classmethod
    def vsphere_backend(
        cls, vcsim_url: str, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Backend]:
        url = urlparse(vcsim_url)
        endpoint = VCenterEndpoint(
            host="127.0.0.1",
            port=url.port or 80,
            user=url.username or "user",
            password=url.password or "pass",
            protocol="http",
        )
        dead = VCenterEndpoint(host="127.0.0.1", port=1, user="u", password="p", protocol="http")
        driver = VSphereDriver(
            {"DC0_C0": endpoint, "gone": dead}, shutdown_timeout=1.0, task_timeout=60.0
        )
        yield Backend(
            driver=driver,
            host=host("DC0_C0_H0"),
            target_host=host("DC0_C0_H1"),
            unreachable_host=host("esx-gone", cluster="gone"),
            pool=StoragePoolRef("pool-1", "LocalDS_0", "/"),
            template=TemplateRef("tpl-1", "DC0_C0_RP0_VM0", "", "OVA", 16 * MIB),
            nics=(NicSpec("00:50:56:00:00:01", "10.1.1.10", "guest-net", vlan=120),),
            secondary=nfs_secondary(tmp_path_factory.mktemp("nfs-export")),
        )
        driver.close()

    @pytest.fixture
    def backend(self, vsphere_backend: Backend) -> Backend:
        return vsphere_backend

    # -- what is particular to vSphere ------------------------------------------------------
    def test_a_disk_that_cannot_be_grown_leaves_no_copy_behind(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        snapshot_id = self.backed_up_snapshot(backend, cleanup, secondary, volume)
        volume_id = new_id()
        cleanup.volumes.append(volume_id)
        spec = VolumeSpec(volume_id, "bigger", 2 * volume.size_bytes)
        for _ in range(2):
            with pytest.raises(UnsupportedOperationError) as refused:
                backend.driver.create_volume_from_snapshot(
                    backend.host, backend.pool, spec, secondary, snapshot_id
                )
            assert "ExtendVirtualDisk_Task" in str(refused.value)
        # Neither a volume nor a scratch copy: creating it afresh makes a blank disk.
        fresh = backend.driver.create_volume(
            backend.host, backend.pool, VolumeSpec(volume_id, "fresh", 3 * volume.size_bytes)
        )
        assert fresh.size_bytes == 3 * volume.size_bytes

    def test_secondary_storage_is_mounted_once_as_an_nfs_datastore(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        first = self.backed_up_snapshot(backend, cleanup, secondary, volume)
        second = self.backed_up_snapshot(backend, cleanup, secondary, volume)
        assert first != second
        driver: VSphereDriver = backend.driver
        system = driver._host_system(driver._content(backend.host), backend.host)
        name = secondary_datastore_name(secondary)
        mounted = [ds for ds in system.datastore if ds.name == name]
        assert len(mounted) == 1
        nas = mounted[0].info.nas
        assert (nas.remoteHost, nas.remotePath) == ("127.0.0.1", secondary.path)

    def test_a_retried_backup_makes_no_second_copy(
        self, backend: Backend, cleanup: Cleanup, secondary: SecondaryStorageRef
    ) -> None:
        volume = self.volume(backend, cleanup)
        snapshot_id, _ = self.volume_snapshot(backend, cleanup, volume)
        driver, host, pool = backend.driver, backend.host, backend.pool
        first = driver.backup_volume_snapshot(host, pool, volume.volume_id, snapshot_id, secondary)
        assert (
            first.path
            == f"[{secondary_datastore_name(secondary)}] snapshots/snapshot-{snapshot_id}.vmdk"
        )
        assert (
            driver.backup_volume_snapshot(host, pool, volume.volume_id, snapshot_id, secondary)
            == first
        )
        export = Path(secondary.path) / "snapshots"
        made = sorted(p.name for p in export.iterdir() if snapshot_id in p.name)
        assert made == [f"snapshot-{snapshot_id}-flat.vmdk", f"snapshot-{snapshot_id}.vmdk"]

    def test_a_live_volume_snapshot_leaves_no_vm_snapshot_behind(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        spec = self.running_vm(backend, cleanup)
        _, snapshot = self.volume_snapshot(backend, cleanup, spec.root_volume)
        assert snapshot.size_bytes == spec.root_volume.size_bytes
        assert backend.driver.list_snapshots(backend.host, spec.vm_id) == []
        driver: VSphereDriver = backend.driver
        vm = driver._vm(driver._content(backend.host), backend.host, spec.vm_id)
        assert driver._snapshots(vm) == []

    def test_a_secondary_storage_that_is_not_nfs_is_refused_without_retry(
        self, backend: Backend, cleanup: Cleanup, tmp_path: Path
    ) -> None:
        volume = self.volume(backend, cleanup)
        snapshot_id, _ = self.volume_snapshot(backend, cleanup, volume)
        local = SecondaryStorageRef("store-local", "local", tmp_path.as_uri(), str(tmp_path))
        with pytest.raises(DriverError) as refused:
            backend.driver.backup_volume_snapshot(
                backend.host, backend.pool, volume.volume_id, snapshot_id, local
            )
        assert not refused.value.retryable and "NFS" in str(refused.value)

    # -- failures and leftovers of interrupted attempts -------------------------------------
    @staticmethod
    def wait(task: object) -> None:
        """Wait for a vCenter task (the driver's own wait needs no session of its own)."""
        VSphereDriver({})._wait(task, "test")

    @staticmethod
    def vm_object(backend: Backend, vm_id: str) -> object:
        driver: VSphereDriver = backend.driver
        return driver._vm(driver._content(backend.host), backend.host, vm_id)

    def leave_vm_snapshot(self, backend: Backend, vm_id: str, name: str) -> None:
        """The disk-only VM snapshot a live copy makes, as a crashed attempt leaves it."""
        vm: Any = self.vm_object(backend, vm_id)
        self.wait(
            vm.CreateSnapshot_Task(
                name=name, description=VOLUME_SNAPSHOT_MARK, memory=False, quiesce=False
            )
        )

    def put_disk_on_delta(self, backend: Backend, vm_id: str, volume: VolumeInfo) -> str:
        """Point the VM's disk `volume` at a delta disk whose parent is the volume, as ESXi
        does on a VM snapshot (vcsim makes no delta disks itself); the delta's path."""
        driver: VSphereDriver = backend.driver
        content = driver._content(backend.host)
        datacenter = driver._datacenter(content, backend.host)
        delta = volume.path.removesuffix(".vmdk") + "-000001.vmdk"
        spec = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
            diskType="thin", adapterType="lsiLogic", capacityKb=volume.size_bytes // 1024
        )
        self.wait(
            content.virtualDiskManager.CreateVirtualDisk_Task(
                name=delta, datacenter=datacenter, spec=spec
            )
        )
        self.set_backing(backend, vm_id, volume, delta)
        return delta

    def set_backing(self, backend: Backend, vm_id: str, volume: VolumeInfo, file_name: str) -> None:
        vm: Any = self.vm_object(backend, vm_id)
        driver: VSphereDriver = backend.driver
        disk = next(d for d in driver._disks(vm) if volume.volume_id in d.backing.fileName)
        parent = None
        if file_name != volume.path:
            parent = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=volume.path, diskMode="persistent"
            )
        disk.backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=file_name, diskMode="persistent", thinProvisioned=True, parent=parent
        )
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
        self.wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))

    def disk_exists(self, backend: Backend, path: str) -> bool:
        driver: VSphereDriver = backend.driver
        content = driver._content(backend.host)
        return driver._disk_exists(content, driver._datacenter(content, backend.host), path)

    def local_file(self, backend: Backend, path: str) -> Path:
        """Where vcsim keeps the datastore file `path` (its datastores are local folders)."""
        driver: VSphereDriver = backend.driver
        datastore, _, relative = path.partition("] ")
        for ds in driver._objects(driver._content(backend.host), vim.Datastore):
            if ds.name == datastore.lstrip("["):
                return Path(ds.info.url) / relative
        raise AssertionError(f"no datastore for {path}")

    def test_a_disk_under_a_vm_snapshot_is_still_listed_as_its_volume(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        """On ESXi a disk under a VM snapshot writes to `<volume>-000001.vmdk`: listing, and
        finding the disk to detach, go by the base file, not the delta's name."""
        spec = self.running_vm(backend, cleanup)
        root = spec.root_volume
        delta = self.put_disk_on_delta(backend, spec.vm_id, root)
        driver: VSphereDriver = backend.driver
        try:
            listed = driver.list_volume_attachments(backend.host, spec.vm_id)
            assert root.volume_id in [a.volume_id for a in listed]
            assert not any(a.volume_id.endswith("-000001") for a in listed)
        finally:
            self.set_backing(backend, spec.vm_id, root, root.path)
            content = driver._content(backend.host)
            driver._delete_disk(content, driver._datacenter(content, backend.host), delta, "test")

    def test_a_retried_live_snapshot_removes_the_vm_snapshot_left_after_the_copy(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        """The attempt that made the copy died before its RemoveSnapshot_Task: the retry finds
        the copy made and must still remove the VM snapshot (its delta would grow for ever)."""
        spec = self.running_vm(backend, cleanup)
        snapshot_id, first = self.volume_snapshot(backend, cleanup, spec.root_volume)
        self.leave_vm_snapshot(backend, spec.vm_id, f"stratus-volume-snapshot-{snapshot_id}")
        driver: VSphereDriver = backend.driver
        again = driver.snapshot_volume(
            backend.host, backend.pool, spec.root_volume.volume_id, snapshot_id
        )
        assert again == first
        assert driver._snapshots(self.vm_object(backend, spec.vm_id)) == []

    def test_a_retried_live_snapshot_removes_a_left_vm_snapshot_before_the_delta_check(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        """The attempt died with its VM snapshot made and no copy: on ESXi the disk's backing is
        that VM snapshot's delta, which the old driver refused for good, keeping the VM snapshot.
        vcsim folds no delta back when the VM snapshot goes, so the test puts the backing back
        where ESXi would have, and the retry after that makes the copy."""
        spec = self.running_vm(backend, cleanup)
        root = spec.root_volume
        snapshot_id = new_id()
        cleanup.volume_snapshots.append((root.volume_id, snapshot_id))
        self.leave_vm_snapshot(backend, spec.vm_id, f"stratus-volume-snapshot-{snapshot_id}")
        delta = self.put_disk_on_delta(backend, spec.vm_id, root)
        driver: VSphereDriver = backend.driver
        host, pool = backend.host, backend.pool
        try:
            with pytest.raises(DriverError):  # vcsim kept the delta: "under VM snapshots"
                driver.snapshot_volume(host, pool, root.volume_id, snapshot_id)
            assert driver._snapshots(self.vm_object(backend, spec.vm_id)) == []
            self.set_backing(backend, spec.vm_id, root, root.path)  # ESXi's consolidation
            snapshot = driver.snapshot_volume(host, pool, root.volume_id, snapshot_id)
            assert snapshot.size_bytes == root.size_bytes
            assert driver._snapshots(self.vm_object(backend, spec.vm_id)) == []
        finally:
            self.set_backing(backend, spec.vm_id, root, root.path)
            content = driver._content(host)
            driver._delete_disk(content, driver._datacenter(content, host), delta, "test")

    def test_a_disk_under_another_volume_snapshots_vm_snapshot_is_retryable(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        """Another volume snapshot copies a disk of this VM under its VM snapshot: that clears
        when its copy is done, so 534; the VM's own VM snapshots stay, so final."""
        spec = self.running_vm(backend, cleanup)
        root = spec.root_volume
        other = new_id()
        self.leave_vm_snapshot(backend, spec.vm_id, f"stratus-volume-snapshot-{other}")
        delta = self.put_disk_on_delta(backend, spec.vm_id, root)
        driver: VSphereDriver = backend.driver
        host, pool = backend.host, backend.pool
        snapshot_id = new_id()
        cleanup.volume_snapshots.append((root.volume_id, snapshot_id))
        cleanup.volume_snapshots.append((root.volume_id, other))
        try:
            with pytest.raises(ResourceUnavailableError) as busy:
                driver.snapshot_volume(host, pool, root.volume_id, snapshot_id)
            assert busy.value.code == 534 and busy.value.retryable
            # The other job's VM snapshot is not ours to remove.
            names = [t.name for t in driver._snapshots(self.vm_object(backend, spec.vm_id))]
            assert names == [f"stratus-volume-snapshot-{other}"]
            driver.create_snapshot(host, spec.vm_id, new_id(), memory=False)
            with pytest.raises(DriverError) as refused:
                driver.snapshot_volume(host, pool, root.volume_id, snapshot_id)
            assert not refused.value.retryable
            assert not self.disk_exists(backend, driver._snapshot_path(pool, snapshot_id))
        finally:
            self.set_backing(backend, spec.vm_id, root, root.path)
            content = driver._content(host)
            driver._delete_disk(content, driver._datacenter(content, host), delta, "test")

    def test_deleting_a_volume_snapshot_removes_the_vm_snapshot_its_live_copy_left(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        """The saga's undo of a live snapshot whose RemoveSnapshot_Task failed."""
        spec = self.running_vm(backend, cleanup)
        snapshot_id, _ = self.volume_snapshot(backend, cleanup, spec.root_volume)
        self.leave_vm_snapshot(backend, spec.vm_id, f"stratus-volume-snapshot-{snapshot_id}")
        driver: VSphereDriver = backend.driver
        for _ in range(2):
            driver.delete_volume_snapshot(
                backend.host, backend.pool, spec.root_volume.volume_id, snapshot_id
            )
        assert driver._snapshots(self.vm_object(backend, spec.vm_id)) == []

    def test_a_revert_whose_rename_fails_keeps_the_volume_and_is_retryable(
        self,
        backend: Backend,
        cleanup: Cleanup,
        secondary: SecondaryStorageRef,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """vcsim's renames do not fail; the test fails one, as a lost lock on ESXi would."""
        volume = self.volume(backend, cleanup)
        snapshot_id = self.backed_up_snapshot(backend, cleanup, secondary, volume)

        def fail(self: object, **kwargs: object) -> None:
            raise vim.fault.CannotAccessFile(file=str(kwargs["destName"]), msg="injected")

        monkeypatch.setattr(vim.VirtualDiskManager, "MoveVirtualDisk_Task", fail)
        driver, host, pool = backend.driver, backend.host, backend.pool
        with pytest.raises(DriverError) as failed:
            driver.revert_volume_to_snapshot(host, pool, volume.volume_id, secondary, snapshot_id)
        assert failed.value.code == 534 and failed.value.retryable
        assert self.disk_exists(backend, volume.path)
        assert not self.disk_exists(backend, scratch_of(volume.path))
        monkeypatch.undo()
        reverted = driver.revert_volume_to_snapshot(
            host, pool, volume.volume_id, secondary, snapshot_id
        )
        assert reverted == volume
        assert not self.disk_exists(backend, scratch_of(volume.path))

    def test_deleting_a_volume_removes_the_scratch_copy_an_interrupted_copy_left(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        """A create from a template or a snapshot crashed mid-copy; the saga undoes it."""
        driver: VSphereDriver = backend.driver
        host, pool = backend.host, backend.pool
        volume_id = new_id()
        cleanup.volumes.append(volume_id)
        scratch = scratch_of(driver._volume_path(pool, volume_id))
        content = driver._content(host)
        spec = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
            diskType="thin", adapterType="lsiLogic", capacityKb=1024
        )
        self.wait(
            content.virtualDiskManager.CreateVirtualDisk_Task(
                name=scratch, datacenter=driver._datacenter(content, host), spec=spec
            )
        )
        assert self.disk_exists(backend, scratch)
        driver.delete_volume(host, pool, volume_id)
        assert not self.disk_exists(backend, scratch)
        driver.delete_volume(host, pool, volume_id)

    def test_deletes_on_a_store_that_is_not_nfs_find_nothing_to_delete(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        """Nothing was ever made on a store the driver cannot mount: the undo succeeds."""
        local = SecondaryStorageRef("store-local", "local", tmp_path.as_uri(), str(tmp_path))
        for _ in range(2):
            backend.driver.delete_snapshot_backup(backend.host, local, new_id())
            backend.driver.delete_template(backend.host, local, new_id())

    def test_an_nfs_server_that_cannot_be_mounted_is_retryable(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        gone = SecondaryStorageRef(
            f"store-{new_id()[:8]}", "gone", "nfs://192.0.2.1/export", "/export"
        )
        volume = self.volume(backend, cleanup)
        snapshot_id, _ = self.volume_snapshot(backend, cleanup, volume)
        driver, host, pool = backend.driver, backend.host, backend.pool
        attempts: list[Callable[[], object]] = [
            lambda: driver.delete_snapshot_backup(host, gone, snapshot_id),
            lambda: driver.delete_template(host, gone, new_id()),
            lambda: driver.backup_volume_snapshot(host, pool, volume.volume_id, snapshot_id, gone),
        ]
        for attempt in attempts:
            with pytest.raises(ResourceUnavailableError) as unreachable:
                attempt()
            assert unreachable.value.code == 534 and unreachable.value.retryable

    def test_a_disk_whose_descriptor_cannot_be_read_has_no_made_up_size(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        volume = self.volume(backend, cleanup)
        snapshot_id, snapshot = self.volume_snapshot(backend, cleanup, volume)
        driver, host, pool = backend.driver, backend.host, backend.pool
        self.local_file(backend, snapshot.path).write_text("not a descriptor\n")
        with pytest.raises(ResourceUnavailableError) as unreadable:
            driver.snapshot_volume(host, pool, volume.volume_id, snapshot_id)
        assert unreadable.value.retryable and snapshot.path in str(unreadable.value)
        self.local_file(backend, volume.path).write_text("")  # a retried create finds it
        with pytest.raises(ResourceUnavailableError):
            driver.create_volume(host, pool, VolumeSpec(volume.volume_id, "x", 1))

    def test_reading_a_disk_after_close_is_retryable(
        self, backend: Backend, cleanup: Cleanup
    ) -> None:
        """close() ran between an operation's login and its read of a descriptor."""
        volume = self.volume(backend, cleanup)
        driver = VSphereDriver(backend.driver._vcenters)
        content = driver._content(backend.host)
        datacenter = driver._datacenter(content, backend.host)
        driver.close()
        with pytest.raises(ResourceUnavailableError) as closed:
            driver._disk_size(backend.host, datacenter, volume.path)
        assert closed.value.retryable
