"""The driver contract against libvirt: its in-process test driver and real QEMU daemons."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt
import pytest

from activities.drivers.hypervisor import (
    HostRef,
    NicSpec,
    SecondaryStorageRef,
    StoragePoolRef,
    TemplateRef,
    VolumeSpec,
)
from activities.drivers.libvirt_kvm import LibvirtKvmDriver
from tests.integration.drivers.contract import MIB, Backend, HypervisorContract
from tests.integration.drivers.libvirt_daemons import SecondDaemon, kvm_usable

MIGRATION_NOTES = "activities/drivers/NOTES-migration.md"


def host(name: str, address: str = "127.0.0.1") -> HostRef:
    return HostRef(
        host_id=f"host-{name}", name=name, address=address, cluster_id="c1", hypervisor="KVM"
    )


class QemuIoContent:
    """Guest-visible disk content of qcow2 files, read and written with `qemu-io`."""

    length = "64k"

    @staticmethod
    def _io(path: str, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", command, path],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def write(self, path: str, pattern: int) -> None:
        done = self._io(path, f"write -P {pattern} 0 {self.length}")
        assert done.returncode == 0 and "wrote" in done.stdout, done.stdout + done.stderr

    def holds(self, path: str, pattern: int) -> bool:
        """qemu-io exits 1 and says "Pattern verification failed" on other content."""
        done = self._io(path, f"read -P {pattern} 0 {self.length}")
        output = done.stdout + done.stderr
        assert "Could not open" not in output, output
        return done.returncode == 0 and "Pattern verification failed" not in output


class TestLibvirtTestDriverContract(HypervisorContract):
    """libvirt's `test:///default`: fast, in-process, but with no migration nor hotplug."""

    unsupported = {
        "attach": "libvirt's test driver does not implement attachDevice",
        "migrate": "libvirt's test driver does not implement migration",
        "migrate_with_storage": "not implemented for KVM yet (VIR_MIGRATE_NON_SHARED_DISK)",
        "resize": "libvirt's test driver does not implement virStorageVolResize",
        "live_volume_snapshot": "libvirt's test driver has no disk images to copy while running",
        "snapshot_backup": "libvirt's test driver clones a volume only within its own pool",
    }

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        driver = LibvirtKvmDriver(
            {"host-test": "test:///default", "host-gone": "qemu+tcp://127.0.0.1:1/system"},
            domain_type="test",
            shutdown_timeout=1.0,
            call_timeout=60.0,
        )
        yield Backend(
            driver=driver,
            host=host("test"),
            unreachable_host=host("gone"),
            pool=StoragePoolRef("pool-1", "default-pool", "/default-pool"),
            template=TemplateRef(
                "tpl-1", "tiny", "file:///default-pool/tpl.qcow2", "QCOW2", 32 * MIB
            ),
            nics=(NicSpec("52:54:00:00:00:01", "10.1.1.10", "default", vlan=100),),
        )
        driver.close()


class TestLibvirtQemuContract(HypervisorContract):
    """A real libvirtd with real QEMU (TCG) guests, and a second daemon to migrate to."""

    unsupported = {
        "migrate_with_storage": "not implemented for KVM yet (VIR_MIGRATE_NON_SHARED_DISK)",
    }

    @pytest.fixture(scope="class")
    @classmethod
    def qemu_backend(
        cls,
        libvirt_system_daemon: str,
        libvirt_second_daemon: SecondDaemon | str,
        shared_storage_dir: Path,
        qcow2_template: Path,
    ) -> Iterator[Backend]:
        uris = {"host-a": libvirt_system_daemon, "host-gone": "qemu+tcp://127.0.0.1:1/system"}
        if isinstance(libvirt_second_daemon, SecondDaemon):
            uris["host-b"] = libvirt_second_daemon.uri
        driver = LibvirtKvmDriver(
            uris,
            domain_type="kvm" if kvm_usable() else "qemu",
            unsafe_migration=True,
            shutdown_timeout=0.5,
            migration_uri="tcp://127.0.0.1",
            call_timeout=120.0,
        )
        pool_dir = shared_storage_dir / "pool"
        pool = StoragePoolRef("pool-1", f"stratus-test-{uuid.uuid4().hex[:8]}", str(pool_dir))
        secondary_dir = shared_storage_dir / "secondary"
        secondary = SecondaryStorageRef(
            f"store-{uuid.uuid4().hex[:8]}", "secondary", secondary_dir.as_uri(), str(secondary_dir)
        )
        backend = Backend(
            driver=driver,
            host=host("a"),
            unreachable_host=host("gone"),
            pool=pool,
            template=TemplateRef("tpl-1", "tiny", qcow2_template.as_uri(), "QCOW2", 24 * MIB),
            target_host=host("b") if "host-b" in uris else None,
            secondary=secondary,
            disk_content=QemuIoContent(),
        )
        yield backend
        for uri in uris.values():
            if uri.startswith("qemu+tcp://127.0.0.1:1/"):
                continue
            conn = libvirt.open(uri)
            names = [pool.name]
            names += [
                f"stratus-{folder}-{secondary.store_id}" for folder in ("snapshots", "templates")
            ]
            for name in names:
                try:
                    conn.storagePoolLookupByName(name).destroy()
                    conn.storagePoolLookupByName(name).undefine()
                except libvirt.libvirtError:
                    pass
            conn.close()
        driver.close()

    @pytest.fixture
    def backend(self, qemu_backend: Backend, libvirt_second_daemon: SecondDaemon | str) -> Backend:
        if isinstance(libvirt_second_daemon, str):
            self.unsupported = {
                **type(self).unsupported,
                "migrate": f"see {MIGRATION_NOTES}: {libvirt_second_daemon}",
            }
        return qemu_backend


def test_volumes_made_at_once_in_a_pool_not_defined_yet_are_all_made(
    libvirt_system_daemon: str, shared_storage_dir: Path
) -> None:
    """Two deploys on one host at once both find the pool missing; the second used to fail
    defining it ("pool ... already exists")."""
    driver = LibvirtKvmDriver({"host-a": libvirt_system_daemon}, call_timeout=60.0)
    name = f"stratus-race-{uuid.uuid4().hex[:8]}"
    pool = StoragePoolRef("pool-race", name, str(shared_storage_dir / name))
    try:
        with ThreadPoolExecutor(max_workers=4) as threads:
            made = list(
                threads.map(
                    lambda i: driver.create_volume(
                        host("a"), pool, VolumeSpec(f"vol-{i}-{name}", f"v{i}", 4 * MIB)
                    ),
                    range(4),
                )
            )
        assert len({volume.path for volume in made}) == 4
    finally:
        conn = libvirt.open(libvirt_system_daemon)
        try:
            storage = conn.storagePoolLookupByName(name)
            for volume in storage.listAllVolumes():
                volume.delete(0)
            storage.destroy()
            storage.undefine()
        except libvirt.libvirtError:
            pass
        conn.close()
        driver.close()
