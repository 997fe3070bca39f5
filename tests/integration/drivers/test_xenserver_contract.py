"""The driver contract against a two-host XenServer pool, spoken to over XAPI by `XenAPI`.

The pool master is `xapi_server.py` on loopback (no XenServer simulator exists); the tests after
the contract cover what only XenServer has: dead pool members, expired sessions, XAPI tasks that
never finish, error codes mapped to Stratus errors, and for volume snapshots the secondary storage
SR (made once, found again, plugged again) and retries after lost answers or crashes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostRef,
    InsufficientHostCapacityError,
    NicSpec,
    PowerState,
    ResourceUnavailableError,
    SecondaryStorageRef,
    StoragePoolRef,
    TemplateRef,
    UnsupportedOperationError,
    VirtualMachineSpec,
    VolumeSpec,
)
from activities.drivers.xenserver import (
    BACKUP_KEY,
    COPY_KEY,
    PENDING_PREFIX,
    REPLACED_KEY,
    REVERT_KEY,
    SECONDARY_PREFIX,
    VM_ID_KEY,
    VOLUME_ID_KEY,
    XenServerDriver,
    XenServerPool,
    _PoolSession,
    translate_failure,
)
from tests.integration.drivers.contract import MIB, Backend, HypervisorContract
from tests.integration.drivers.xapi_server import (
    GIB,
    NULL,
    HostSpec,
    Record,
    XapiServer,
    start_xapi_server,
)

USER, PASSWORD = "root", "xen-s3cret-pw"
CLUSTER = "xen-cluster"
TEMPLATE = "tiny-template"


def host(name: str, cluster: str = CLUSTER) -> HostRef:
    return HostRef(f"host-{name}", name, "", cluster, "XenServer")


@pytest.fixture(scope="module")
def xapi() -> Iterator[XapiServer]:
    server = start_xapi_server(
        [
            HostSpec("xen-a", "127.0.1.11", memory_bytes=4 * GIB),
            HostSpec("xen-b", "127.0.1.12", memory_bytes=4 * GIB),
            HostSpec("xen-c", "127.0.1.13"),
        ],
        username=USER,
        password=PASSWORD,
        task_delay=0.01,
    )
    server.pool.add_template_vm(TEMPLATE, 24 * MIB)
    server.pool.set_host_live("xen-c", False)
    yield server
    server.stop()


def make_driver(server: XapiServer, **options: float) -> XenServerDriver:
    pools = {
        CLUSTER: XenServerPool(server.url, USER, PASSWORD),
        "gone": XenServerPool("http://127.0.0.1:1/", USER, PASSWORD),
    }
    settings = {"shutdown_timeout": 1.0, "task_timeout": 30.0, "poll_interval": 0.01}
    settings.update(options)
    return XenServerDriver(pools, **settings)  # type: ignore[arg-type]


class XapiDiskContent:
    """What a guest would read on the pool's disks, found by the paths the driver reports:
    `<SR>/<volume id>` for a volume, `<SR>/<VDI uuid>` for a snapshot, `.../<VDI uuid>.vhd` for an
    image on secondary storage."""

    def __init__(self, server: XapiServer) -> None:
        self.pool = server.pool

    def vdi(self, path: str) -> str:
        name = path.rsplit("/", 1)[-1].removesuffix(".vhd")
        with self.pool.lock:
            vdis = self.pool.db["VDI"]
            for ref, record in vdis.items():
                if (
                    record["other_config"].get(VOLUME_ID_KEY) == name
                    and not record["is_a_snapshot"]
                ):
                    return ref
            for ref, record in vdis.items():
                if record["uuid"] == name:
                    return ref
        raise AssertionError(f"no disk at {path}")

    def write(self, path: str, pattern: int) -> None:
        self.pool.write_disk(self.vdi(path), pattern)

    def holds(self, path: str, pattern: int) -> bool:
        return self.pool.disk_pattern(self.vdi(path)) == pattern


def make_backend(driver: XenServerDriver, server: XapiServer | None = None) -> Backend:
    return Backend(
        driver=driver,
        host=host("xen-a"),
        target_host=host("xen-b"),
        unreachable_host=host("xen-gone", cluster="gone"),
        pool=StoragePoolRef("pool-1", "Local storage", "/"),
        template=TemplateRef("tpl-1", TEMPLATE, "", "VHD", 24 * MIB),
        nics=(NicSpec("02:00:00:00:00:01", "10.1.1.10", "guest-net", vlan=130),),
        memory_mib=128,
        disk_content=None if server is None else XapiDiskContent(server),
    )


class TestXenServerContract(HypervisorContract):
    unsupported = {
        "migrate_with_storage": "not implemented for XenServer yet (VM.migrate_send)",
    }

    @pytest.fixture(scope="class")
    @classmethod
    def xen_backend(cls, xapi: XapiServer) -> Iterator[Backend]:
        driver = make_driver(xapi)
        yield make_backend(driver, xapi)
        driver.close()

    @pytest.fixture
    def backend(self, xen_backend: Backend) -> Backend:
        return xen_backend


# -- what only XenServer has ------------------------------------------------------------------


@pytest.fixture
def driver(xapi: XapiServer) -> Iterator[XenServerDriver]:
    made = make_driver(xapi)
    yield made
    made.close()


@pytest.fixture
def backend(driver: XenServerDriver) -> Backend:
    return make_backend(driver)


def new_vm(backend: Backend, memory_mib: int = 128) -> VirtualMachineSpec:
    vm_id = str(uuid.uuid4())
    root = backend.driver.create_volume(
        backend.host,
        backend.pool,
        VolumeSpec(str(uuid.uuid4()), "root", 16 * MIB, backend.template),
    )
    return VirtualMachineSpec(vm_id, f"i-{vm_id[:8]}", 2, 1000, memory_mib, root, backend.nics)


def xapi_vm(server: XapiServer, vm_id: str) -> Record:
    matches = [
        vm
        for vm in server.pool.db["VM"].values()
        if vm["other_config"].get(VM_ID_KEY) == vm_id and not vm["is_a_snapshot"]
    ]
    assert len(matches) == 1
    return matches[0]


def test_a_defined_vm_is_what_xapi_expects(xapi: XapiServer, backend: Backend) -> None:
    spec = new_vm(backend)
    backend.driver.define_vm(backend.host, spec)
    record = xapi_vm(xapi, spec.vm_id)
    assert record["name_label"] == spec.name and not record["is_a_template"]
    assert record["memory_static_max"] == str(128 * MIB)
    assert record["VCPUs_max"] == record["VCPUs_at_startup"] == "2"
    assert "disks" not in record["other_config"]  # the template's own disk spec is not used
    vbds = [xapi.pool.db["VBD"][vbd] for vbd in record["VBDs"]]
    assert [(v["userdevice"], v["bootable"]) for v in vbds] == [("0", True)]
    vifs = [xapi.pool.db["VIF"][vif] for vif in record["VIFs"]]
    assert [(v["device"], v["MAC"]) for v in vifs] == [("0", "02:00:00:00:00:01")]
    assert "Async.VM.clone" in xapi.pool.calls and "Async.VM.provision" in xapi.pool.calls
    backend.driver.destroy_vm(backend.host, spec.vm_id)


def test_an_interrupted_define_is_finished_by_the_retry(xapi: XapiServer, backend: Backend) -> None:
    spec = new_vm(backend)
    with xapi.pool.lock:  # the first attempt died right after XAPI made the clone
        template = xapi.pool.db["VM"]
        base = next(r for r, v in template.items() if v["name_label"] == "Other install media")
        xapi.pool.VM_clone(base, PENDING_PREFIX + spec.vm_id)
    assert backend.driver.find_vm(backend.host, spec.vm_id) is None
    info = backend.driver.define_vm(backend.host, spec)
    assert info.vm_id == spec.vm_id and info.power_state == PowerState.POWERED_OFF
    xapi_vm(xapi, spec.vm_id)  # exactly one
    pending = [v for v in xapi.pool.db["VM"].values() if v["name_label"].startswith(PENDING_PREFIX)]
    assert pending == []
    backend.driver.destroy_vm(backend.host, spec.vm_id)


def test_a_dead_pool_member_is_unavailable_and_retryable(backend: Backend) -> None:
    dead = host("xen-c")
    for call in (
        lambda: backend.driver.list_vms(dead),
        lambda: backend.driver.host_capacity(dead),
        lambda: backend.driver.define_vm(dead, new_vm(backend)),
    ):
        with pytest.raises(ResourceUnavailableError) as error:
            call()
        assert error.value.code == 534 and error.value.retryable
        assert "xen-c" in str(error.value)


def test_a_host_outside_the_pool_is_unavailable(backend: Backend) -> None:
    with pytest.raises(ResourceUnavailableError):
        backend.driver.list_vms(host("not-a-member"))


def test_an_expired_session_is_renewed_without_the_caller_noticing(
    xapi: XapiServer, backend: Backend
) -> None:
    backend.driver.list_vms(backend.host)
    logins = xapi.pool.calls.count("session.login_with_password")
    xapi.pool.expire_sessions()
    backend.driver.list_vms(backend.host)
    assert xapi.pool.calls.count("session.login_with_password") == logins + 1


def test_a_refused_login_fails_without_retry_and_without_the_password(xapi: XapiServer) -> None:
    driver = XenServerDriver({CLUSTER: XenServerPool(xapi.url, USER, "wrong-password")})
    with pytest.raises(DriverError) as error:
        driver.list_vms(host("xen-a"))
    assert not error.value.retryable
    assert "SESSION_AUTHENTICATION_FAILED" in str(error.value)
    assert "wrong-password" not in str(error.value)
    assert "wrong-password" not in repr(driver._pools[CLUSTER])


def test_credentials_are_refused_in_the_pool_url() -> None:
    with pytest.raises(ValueError):
        XenServerPool("http://root:pw@127.0.0.1/", USER, PASSWORD)


def test_a_guest_ignoring_clean_shutdown_is_powered_off_after_the_timeout(
    xapi: XapiServer, xen_driver_fast_shutdown: XenServerDriver
) -> None:
    backend = make_backend(xen_driver_fast_shutdown)
    spec = new_vm(backend)
    backend.driver.define_vm(backend.host, spec)
    backend.driver.start_vm(backend.host, spec.vm_id)
    with xapi.stall("VM.clean_shutdown"):
        stopped = backend.driver.stop_vm(backend.host, spec.vm_id)
    assert stopped.power_state == PowerState.POWERED_OFF
    assert xapi_vm(xapi, spec.vm_id)["power_state"] == "Halted"
    assert "Async.VM.hard_shutdown" in xapi.pool.calls
    backend.driver.destroy_vm(backend.host, spec.vm_id)


@pytest.fixture
def xen_driver_fast_shutdown(xapi: XapiServer) -> Iterator[XenServerDriver]:
    made = make_driver(xapi, shutdown_timeout=0.2)
    yield made
    made.close()


def test_a_task_that_never_ends_is_a_timeout_with_unknown_outcome(xapi: XapiServer) -> None:
    driver = make_driver(xapi, task_timeout=0.3)
    backend = make_backend(driver)
    spec = new_vm(backend)
    backend.driver.define_vm(backend.host, spec)
    with xapi.stall("VM.start_on"), pytest.raises(DriverTimeoutError) as error:
        backend.driver.start_vm(backend.host, spec.vm_id)
    assert error.value.retryable and "unknown" in str(error.value)
    # The caller asks the backend before retrying: the VM is there, still halted.
    found = backend.driver.find_vm(backend.host, spec.vm_id)
    assert found is not None and found.power_state == PowerState.POWERED_OFF
    assert backend.driver.start_vm(backend.host, spec.vm_id).power_state == PowerState.POWERED_ON
    backend.driver.destroy_vm(backend.host, spec.vm_id)
    driver.close()


def test_a_host_without_free_memory_is_insufficient_capacity(backend: Backend) -> None:
    spec = new_vm(backend, memory_mib=6 * 1024)  # the hosts have 4 GiB
    backend.driver.define_vm(backend.host, spec)
    with pytest.raises(InsufficientHostCapacityError) as error:
        backend.driver.start_vm(backend.host, spec.vm_id)
    assert error.value.code == 533 and "HOST_NOT_ENOUGH_FREE_MEMORY" in str(error.value)
    backend.driver.destroy_vm(backend.host, spec.vm_id)


def test_migration_between_pools_is_unsupported(backend: Backend) -> None:
    with pytest.raises(UnsupportedOperationError):
        backend.driver.migrate_vm(backend.host, host("elsewhere", "other-pool"), "vm-1")


@pytest.mark.parametrize(
    ("details", "kind", "retryable"),
    [
        (["HOST_OFFLINE", "OpaqueRef:1"], ResourceUnavailableError, True),
        (["HOST_NOT_ENOUGH_FREE_MEMORY", "1", "0"], InsufficientHostCapacityError, False),
        (["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"], UnsupportedOperationError, False),
        (["VM_BAD_POWER_STATE", "OpaqueRef:2", "halted", "running"], DriverError, True),
        (["HANDLE_INVALID", "VM", "OpaqueRef:3"], DriverError, True),
        (["VDI_TOO_SMALL", "OpaqueRef:4", "1"], DriverError, False),
        (["SR_FULL", "1", "0"], InsufficientHostCapacityError, False),
        (
            ["SR_BACKEND_FAILURE_44", "", "There is insufficient space", ""],
            InsufficientHostCapacityError,
            False,
        ),
        (["PBD_EXISTS", "OpaqueRef:5", "OpaqueRef:6"], DriverError, True),
        ([], DriverError, False),
    ],
)
def test_xapi_error_codes_map_to_stratus_errors(
    details: list[str], kind: type[DriverError], retryable: bool
) -> None:
    error = translate_failure(details, "do it")
    assert type(error) is kind and error.retryable is retryable
    assert all(part in str(error) for part in details)


# -- volume snapshots: what only XenServer has --------------------------------------------------


def store(tmp_path: Path, url: str | None = None) -> SecondaryStorageRef:
    path = tmp_path / "secondary"
    path.mkdir(exist_ok=True)
    return SecondaryStorageRef(
        f"store-{uuid.uuid4().hex[:8]}", "secondary", url or path.as_uri(), str(path)
    )


def store_srs(server: XapiServer, secondary: SecondaryStorageRef) -> list[dict[str, Any]]:
    with server.pool.lock:
        return [
            sr
            for sr in server.pool.db["SR"].values()
            if sr["name_label"] == SECONDARY_PREFIX + secondary.store_id
        ]


def vdis(server: XapiServer) -> list[str]:
    """Every VDI of the pool, whatever it wears."""
    with server.pool.lock:
        return list(server.pool.db["VDI"])


def lose_answer_of(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """The next XAPI task `method` runs to its end, and its answer never reaches the driver (the
    connection dropped, or the worker died and the job is retried): a timeout, outcome unknown."""
    real_task = XenServerDriver._task
    lost = [True]

    def task(self: XenServerDriver, xapi: Any, action: str, called: str, *args: Any) -> Any:
        result = real_task(self, xapi, action, called, *args)
        if called == method and lost:
            lost.pop()
            raise TimeoutError(f"the answer of {method} was lost")
        return result

    monkeypatch.setattr(XenServerDriver, "_task", task)


def store_sr_refs(server: XapiServer, secondary: SecondaryStorageRef) -> list[str]:
    with server.pool.lock:
        return [
            ref
            for ref, sr in server.pool.db["SR"].items()
            if sr["name_label"] == SECONDARY_PREFIX + secondary.store_id
        ]


def tagged(server: XapiServer, key: str, value: str) -> list[str]:
    with server.pool.lock:
        return [
            ref
            for ref, vdi in server.pool.db["VDI"].items()
            if vdi["other_config"].get(key) == value
        ]


def new_volume(backend: Backend) -> str:
    volume_id = str(uuid.uuid4())
    backend.driver.create_volume(
        backend.host, backend.pool, VolumeSpec(volume_id, "data", 16 * MIB)
    )
    return volume_id


def backed_up(backend: Backend, volume_id: str, secondary: SecondaryStorageRef) -> str:
    snapshot_id = str(uuid.uuid4())
    driver, host, pool = backend.driver, backend.host, backend.pool
    driver.snapshot_volume(host, pool, volume_id, snapshot_id)
    driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary)
    driver.delete_volume_snapshot(host, pool, volume_id, snapshot_id)
    return snapshot_id


def test_the_secondary_storage_sr_is_made_once_and_found_again(
    xapi: XapiServer, backend: Backend, tmp_path: Path
) -> None:
    secondary = store(tmp_path)
    volume_id = new_volume(backend)
    creates = xapi.pool.calls.count("Async.SR.create")
    backed_up(backend, volume_id, secondary)
    backed_up(backend, volume_id, secondary)
    other_worker = make_driver(xapi)  # a second worker finds the SR by its name too
    backed_up(make_backend(other_worker), volume_id, secondary)
    other_worker.close()
    assert xapi.pool.calls.count("Async.SR.create") == creates + 1
    (sr,) = store_srs(xapi, secondary)
    assert sr["type"] == "file" and sr["shared"] and len(sr["VDIs"]) == 3
    pbds = [xapi.pool.db["PBD"][pbd] for pbd in sr["PBDs"]]
    assert {pbd["device_config"]["location"] for pbd in pbds} == {secondary.path}


def test_an_nfs_store_is_an_nfs_sr_and_images_lie_in_its_folder(
    xapi: XapiServer, backend: Backend, tmp_path: Path
) -> None:
    secondary = store(tmp_path, "nfs://10.9.8.7/export/secondary")
    volume_id = new_volume(backend)
    snapshot_id = str(uuid.uuid4())
    driver, host, pool = backend.driver, backend.host, backend.pool
    driver.snapshot_volume(host, pool, volume_id, snapshot_id)
    backup = driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary)
    template = driver.create_template_from_snapshot(host, secondary, snapshot_id, "tpl-nfs")
    (sr,) = store_srs(xapi, secondary)
    config = xapi.pool.db["PBD"][sr["PBDs"][0]]["device_config"]
    assert sr["type"] == "nfs"
    assert config == {"server": "10.9.8.7", "serverpath": "/export/secondary"}
    assert backup.path.startswith(f"{secondary.path}/{sr['uuid']}/")
    assert backup.path.endswith(".vhd")
    assert template.url.startswith(f"nfs://10.9.8.7/export/secondary/{sr['uuid']}/")
    assert template.format == "VHD"
    driver.delete_template(host, secondary, "tpl-nfs")
    driver.delete_template(host, secondary, "tpl-nfs")
    driver.delete_snapshot_backup(host, secondary, snapshot_id)
    assert store_srs(xapi, secondary)[0]["VDIs"] == []


def test_an_unplugged_secondary_sr_is_plugged_again(
    xapi: XapiServer, backend: Backend, tmp_path: Path
) -> None:
    secondary = store(tmp_path)
    volume_id = new_volume(backend)
    first = backed_up(backend, volume_id, secondary)
    (sr,) = store_srs(xapi, secondary)
    sr_ref = next(ref for ref, record in xapi.pool.db["SR"].items() if record is sr)
    xapi.pool.unplug_sr(sr_ref)
    # Reading needs no SR plugged; copying into it does, and the driver plugs it first.
    plugs = xapi.pool.calls.count("Async.PBD.plug")
    snapshot_id = backed_up(backend, volume_id, secondary)
    assert xapi.pool.calls.count("Async.PBD.plug") == plugs + 1
    assert tagged(xapi, BACKUP_KEY, snapshot_id) and tagged(xapi, BACKUP_KEY, first)


def test_a_retry_after_a_lost_answer_makes_no_second_copy(
    xapi: XapiServer, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secondary = store(tmp_path)
    volume_id = new_volume(backend)
    driver, host, pool = backend.driver, backend.host, backend.pool
    snapshot_id = str(uuid.uuid4())
    snapshot = driver.snapshot_volume(host, pool, volume_id, snapshot_id)
    snapshots = xapi.pool.calls.count("Async.VDI.snapshot")
    assert driver.snapshot_volume(host, pool, volume_id, snapshot_id) == snapshot
    assert xapi.pool.calls.count("Async.VDI.snapshot") == snapshots

    # XAPI makes the backup copy, and its answer is lost on its way back: the retry copies
    # again, into the same VDI.
    known = set(vdis(xapi))
    lose_answer_of(monkeypatch, "VDI.copy")
    with pytest.raises(DriverTimeoutError):
        driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary)
    backup = driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary)
    copies = xapi.pool.calls.count("Async.VDI.copy")
    assert driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary) == backup
    assert xapi.pool.calls.count("Async.VDI.copy") == copies
    (made,) = set(vdis(xapi)) - known
    assert tagged(xapi, BACKUP_KEY, snapshot_id) == [made]
    assert backup.size_bytes == snapshot.size_bytes

    spec = VolumeSpec(str(uuid.uuid4()), "restored", 16 * MIB)
    made = driver.create_volume_from_snapshot(host, pool, spec, secondary, snapshot_id)
    template = driver.create_template_from_snapshot(host, secondary, snapshot_id, "tpl-retry")
    copies = xapi.pool.calls.count("Async.VDI.copy")
    assert driver.create_volume_from_snapshot(host, pool, spec, secondary, snapshot_id) == made
    assert driver.create_template_from_snapshot(host, secondary, snapshot_id, "tpl-retry") == (
        template
    )
    assert xapi.pool.calls.count("Async.VDI.copy") == copies
    assert len(tagged(xapi, VOLUME_ID_KEY, spec.volume_id)) == 1
    driver.delete_template(host, secondary, "tpl-retry")


def test_a_copy_of_a_backup_wears_its_tags_but_is_never_taken_for_it(
    xapi: XapiServer, backend: Backend, tmp_path: Path
) -> None:
    """XAPI's VDI.copy into an SR carries other_config over: such a copy of the backup (as an
    earlier version of the driver left behind when a copy's answer was lost) looks like the
    backup. It is never taken for it, and deleting the backup deletes it too; the driver's own
    copies go into VDIs it made, so they never wear the backup's tags."""
    secondary = store(tmp_path)
    volume_id = new_volume(backend)
    driver, host, pool = backend.driver, backend.host, backend.pool
    snapshot_id = str(uuid.uuid4())
    driver.snapshot_volume(host, pool, volume_id, snapshot_id)
    backup = driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary)
    (original,) = tagged(xapi, BACKUP_KEY, snapshot_id)
    driver.create_template_from_snapshot(host, secondary, snapshot_id, "tpl-copy")
    spec = VolumeSpec(str(uuid.uuid4()), "restored", 16 * MIB)
    driver.create_volume_from_snapshot(host, pool, spec, secondary, snapshot_id)
    assert tagged(xapi, BACKUP_KEY, snapshot_id) == [original]
    with xapi.pool.lock:
        sr = xapi.pool.db["VDI"][original]["SR"]
        stray = xapi.pool.VDI_copy(original, sr)
    assert set(tagged(xapi, BACKUP_KEY, snapshot_id)) == {original, stray}
    assert driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary) == backup
    driver.delete_snapshot_backup(host, secondary, snapshot_id)
    assert tagged(xapi, BACKUP_KEY, snapshot_id) == []
    with pytest.raises(DriverError, match=snapshot_id):
        driver.create_template_from_snapshot(host, secondary, snapshot_id, "tpl-stray")
    driver.delete_template(host, secondary, "tpl-copy")
    driver.delete_volume(host, pool, spec.volume_id)
    driver.delete_volume_snapshot(host, pool, volume_id, snapshot_id)
    driver.delete_volume(host, pool, volume_id)
    assert store_srs(xapi, secondary)[0]["VDIs"] == []


def test_a_revert_interrupted_midway_is_finished_by_the_retry(
    xapi: XapiServer, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root disk of a stopped VM: the crash comes after its plug was moved off the old disk
    and before it was made on the copy; the retry plugs the copy and ends the swap."""
    secondary = store(tmp_path)
    content = XapiDiskContent(xapi)
    spec = new_vm(backend)
    backend.driver.define_vm(backend.host, spec)
    root = spec.root_volume
    driver, host, pool = backend.driver, backend.host, backend.pool
    content.write(root.path, 0x5A)
    snapshot_id = backed_up(backend, root.volume_id, secondary)
    content.write(root.path, 0x6B)
    driver.resize_volume(host, pool, root.volume_id, 2 * root.size_bytes)

    real_create_vbd = XenServerDriver._create_vbd
    crash = [True]

    def crash_once(*args: Any) -> str:
        if crash.pop() if crash else False:
            raise TimeoutError("the worker lost the pool master")
        return real_create_vbd(*args)

    monkeypatch.setattr(XenServerDriver, "_create_vbd", staticmethod(crash_once))
    with pytest.raises(DriverTimeoutError):
        driver.revert_volume_to_snapshot(host, pool, root.volume_id, secondary, snapshot_id)
    vm = xapi_vm(xapi, spec.vm_id)
    assert vm["VBDs"] == []  # the crash left the VM without its root disk
    assert len(tagged(xapi, REVERT_KEY, root.volume_id)) == 1

    reverted = driver.revert_volume_to_snapshot(host, pool, root.volume_id, secondary, snapshot_id)
    assert reverted == root  # the snapshot's size again, same id and path
    (disk,) = tagged(xapi, VOLUME_ID_KEY, root.volume_id)
    assert tagged(xapi, REVERT_KEY, root.volume_id) == []
    assert tagged(xapi, REPLACED_KEY, root.volume_id) == []
    vbds = [xapi.pool.db["VBD"][vbd] for vbd in xapi_vm(xapi, spec.vm_id)["VBDs"]]
    assert [(v["VDI"], v["userdevice"], v["bootable"]) for v in vbds] == [(disk, "0", True)]
    assert content.holds(root.path, 0x5A)
    assert driver.list_volume_attachments(host, spec.vm_id)[0].volume_id == root.volume_id
    assert driver.start_vm(host, spec.vm_id).power_state == PowerState.POWERED_ON
    driver.destroy_vm(host, spec.vm_id)


def test_a_revert_found_half_swapped_is_finished_before_anything_else(
    xapi: XapiServer, backend: Backend, tmp_path: Path
) -> None:
    """The crash came after the old disk was marked replaced: no disk carries the volume's tag,
    and the retry (here to another snapshot) first finishes that swap, then reverts."""
    secondary = store(tmp_path)
    content = XapiDiskContent(xapi)
    volume_id = new_volume(backend)
    driver, host, pool = backend.driver, backend.host, backend.pool
    path = f"{pool.name}/{volume_id}"
    content.write(path, 0x11)
    first = backed_up(backend, volume_id, secondary)
    content.write(path, 0x22)
    second = backed_up(backend, volume_id, secondary)
    with xapi.pool.lock:  # what the interrupted revert to `first` left behind
        (old,) = tagged(xapi, VOLUME_ID_KEY, volume_id)
        (backup,) = tagged(xapi, BACKUP_KEY, first)
        fresh = xapi.pool.VDI_copy(backup, xapi.pool.sr)
        xapi.pool.db["VDI"][fresh]["other_config"] = {
            REVERT_KEY: volume_id,
            "stratus_revert_snapshot_id": first,
            "stratus_revert_plugs": "[]",
        }
        xapi.pool.db["VDI"][old]["other_config"] = {REPLACED_KEY: volume_id}
    driver.revert_volume_to_snapshot(host, pool, volume_id, secondary, second)
    (disk,) = tagged(xapi, VOLUME_ID_KEY, volume_id)
    assert old not in xapi.pool.db["VDI"] and fresh not in xapi.pool.db["VDI"]
    assert xapi.pool.db["VDI"][disk]["snapshot_of"] == NULL
    assert content.holds(path, 0x22)
    driver.delete_volume(host, pool, volume_id)


def test_secondary_storage_a_pool_cannot_mount_is_refused_with_432(
    backend: Backend, tmp_path: Path
) -> None:
    secondary = store(tmp_path, "s3://bucket/secondary")
    volume_id = new_volume(backend)
    snapshot_id = str(uuid.uuid4())
    driver, host, pool = backend.driver, backend.host, backend.pool
    driver.snapshot_volume(host, pool, volume_id, snapshot_id)
    with pytest.raises(UnsupportedOperationError):
        driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary)
    driver.delete_volume_snapshot(host, pool, volume_id, snapshot_id)
    driver.delete_volume(host, pool, volume_id)


def test_a_full_secondary_sr_is_insufficient_capacity(
    xapi: XapiServer, backend: Backend, tmp_path: Path
) -> None:
    secondary = store(tmp_path)
    volume_id = new_volume(backend)
    backed_up(backend, volume_id, secondary)
    with xapi.pool.lock:
        store_srs(xapi, secondary)[0]["physical_size"] = str(20 * MIB)
    with pytest.raises(InsufficientHostCapacityError) as error:
        backed_up(backend, volume_id, secondary)
    # A file SR is full as its SM backend says it: "There is insufficient space".
    assert error.value.code == 533 and "SR_BACKEND_FAILURE_44" in str(error.value)
    assert len(store_srs(xapi, secondary)[0]["VDIs"]) == 1  # nothing half-made left there


# Every driver call that makes a VDI through XAPI (the task whose answer may be lost), with the
# setup it needs and the deletes that undo it and its setup.
_MAKERS = {
    "snapshot": "VDI.snapshot",
    "backup": "VDI.copy",
    "volume from snapshot": "VDI.copy",
    "revert": "VDI.copy",
    "template from snapshot": "VDI.copy",
    "volume from template": "VDI.copy",
    "volume from snapshot template": "VDI.copy",
}


def maker(
    name: str, backend: Backend, secondary: SecondaryStorageRef
) -> tuple[Callable[[], object], Callable[[], None]]:
    """(the driver call `name`, the deletes that remove everything it and its setup made)."""
    driver, host, pool = backend.driver, backend.host, backend.pool
    volume_id = new_volume(backend)
    snapshot_id = str(uuid.uuid4())
    made = str(uuid.uuid4())  # the id of the volume or template made
    if name != "snapshot":
        driver.snapshot_volume(host, pool, volume_id, snapshot_id)
    if name not in ("snapshot", "backup"):
        driver.backup_volume_snapshot(host, pool, volume_id, snapshot_id, secondary)
    template = backend.template
    if name == "volume from snapshot template":
        template = driver.create_template_from_snapshot(host, secondary, snapshot_id, made)
    calls: dict[str, Callable[[], object]] = {
        "snapshot": lambda: driver.snapshot_volume(host, pool, volume_id, snapshot_id),
        "backup": lambda: driver.backup_volume_snapshot(
            host, pool, volume_id, snapshot_id, secondary
        ),
        "volume from snapshot": lambda: driver.create_volume_from_snapshot(
            host, pool, VolumeSpec(made, "restored", 32 * MIB), secondary, snapshot_id
        ),
        "revert": lambda: driver.revert_volume_to_snapshot(
            host, pool, volume_id, secondary, snapshot_id
        ),
        "template from snapshot": lambda: driver.create_template_from_snapshot(
            host, secondary, snapshot_id, made
        ),
        "volume from template": lambda: driver.create_volume(
            host, pool, VolumeSpec(made, "root", 32 * MIB, template)
        ),
    }
    calls["volume from snapshot template"] = calls["volume from template"]

    def delete_all() -> None:
        driver.delete_volume(host, pool, made)
        driver.delete_template(host, secondary, made)
        driver.delete_snapshot_backup(host, secondary, snapshot_id)
        driver.delete_volume_snapshot(host, pool, volume_id, snapshot_id)
        driver.delete_volume(host, pool, volume_id)

    return calls[name], delete_all


@pytest.mark.parametrize("name", list(_MAKERS))
def test_a_retry_after_a_lost_answer_leaves_no_second_disk(
    xapi: XapiServer,
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """XAPI made the disk (a snapshot, a full copy) and the answer was lost: the retry finds
    what it made, and once everything is deleted through the driver, nothing is left."""
    secondary = store(tmp_path)
    before = set(vdis(xapi))
    call, delete_all = maker(name, backend, secondary)
    ready = set(vdis(xapi))
    lose_answer_of(monkeypatch, _MAKERS[name])
    with pytest.raises(DriverTimeoutError):
        call()
    result = call()
    assert call() == result
    # One disk more (a revert puts one in the place of another).
    assert len(vdis(xapi)) == len(ready) + (0 if name == "revert" else 1)
    delete_all()
    assert set(vdis(xapi)) == before


@pytest.mark.parametrize("name", list(_MAKERS))
def test_a_job_undone_after_a_lost_answer_leaves_no_disk(
    xapi: XapiServer,
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """The answer was lost and the saga gives up: its deletes find what XAPI made."""
    secondary = store(tmp_path)
    before = set(vdis(xapi))
    call, delete_all = maker(name, backend, secondary)
    lose_answer_of(monkeypatch, _MAKERS[name])
    with pytest.raises(DriverTimeoutError):
        call()
    delete_all()
    assert set(vdis(xapi)) == before


def test_a_copy_past_the_task_timeout_is_finished_by_the_retry(
    xapi: XapiServer, tmp_path: Path
) -> None:
    """The copy task outlives `task_timeout`: the driver gives up (XAPI cancels it) and the
    retry copies into the VDI the first attempt made for it."""
    driver = make_driver(xapi, task_timeout=0.3)
    backend = make_backend(driver)
    secondary = store(tmp_path)
    before = set(vdis(xapi))
    call, delete_all = maker("template from snapshot", backend, secondary)
    ready = set(vdis(xapi))
    with xapi.stall("VDI.copy"), pytest.raises(DriverTimeoutError):
        call()
    (pending,) = set(vdis(xapi)) - ready
    assert COPY_KEY in xapi.pool.db["VDI"][pending]["other_config"]
    template = call()
    assert set(vdis(xapi)) - ready == {pending}
    assert COPY_KEY not in xapi.pool.db["VDI"][pending]["other_config"]
    assert isinstance(template, TemplateRef)
    assert xapi.pool.db["VDI"][pending]["uuid"] in template.url
    delete_all()
    assert set(vdis(xapi)) == before
    driver.close()


@pytest.mark.parametrize(
    "name",
    [
        "volume from snapshot",
        "revert",
        "volume from snapshot template",
        "delete backup",
        "delete template",
    ],
)
def test_restores_and_deletes_plug_the_secondary_sr_again(
    xapi: XapiServer, backend: Backend, tmp_path: Path, name: str
) -> None:
    """After a host reboot without auto-plug the store's SR has no plugged PBD: copying out of
    it and destroying in it need one (SR_NO_PBDS), so the driver plugs it first."""
    secondary = store(tmp_path)
    driver, host, pool = backend.driver, backend.host, backend.pool
    volume_id = new_volume(backend)
    snapshot_id = backed_up(backend, volume_id, secondary)
    template = driver.create_template_from_snapshot(host, secondary, snapshot_id, str(uuid.uuid4()))
    spec = VolumeSpec(str(uuid.uuid4()), "restored", 16 * MIB)
    operations: dict[str, Callable[[], object]] = {
        "volume from snapshot": lambda: driver.create_volume_from_snapshot(
            host, pool, spec, secondary, snapshot_id
        ),
        "revert": lambda: driver.revert_volume_to_snapshot(
            host, pool, volume_id, secondary, snapshot_id
        ),
        "volume from snapshot template": lambda: driver.create_volume(
            host, pool, VolumeSpec(spec.volume_id, "root", 16 * MIB, template)
        ),
        "delete backup": lambda: driver.delete_snapshot_backup(host, secondary, snapshot_id),
        "delete template": lambda: driver.delete_template(host, secondary, template.template_id),
    }
    (sr,) = store_sr_refs(xapi, secondary)
    xapi.pool.unplug_sr(sr)
    operations[name]()
    with xapi.pool.lock:
        pbds = [xapi.pool.db["PBD"][pbd] for pbd in xapi.pool.db["SR"][sr]["PBDs"]]
        xen_a = next(r for r, h in xapi.pool.db["host"].items() if h["name_label"] == "xen-a")
    assert [pbd["currently_attached"] for pbd in pbds if pbd["host"] == xen_a] == [True]
    driver.delete_volume(host, pool, spec.volume_id)
    driver.delete_template(host, secondary, template.template_id)
    driver.delete_snapshot_backup(host, secondary, snapshot_id)
    driver.delete_volume(host, pool, volume_id)
    assert store_srs(xapi, secondary)[0]["VDIs"] == []


def test_deleting_on_a_store_never_used_makes_no_sr(
    xapi: XapiServer, backend: Backend, tmp_path: Path
) -> None:
    """A store whose SR does not exist holds nothing: deleting there succeeds, creating nothing."""
    secondary = store(tmp_path)
    backend.driver.delete_snapshot_backup(backend.host, secondary, str(uuid.uuid4()))
    backend.driver.delete_template(backend.host, secondary, str(uuid.uuid4()))
    assert store_srs(xapi, secondary) == []


def test_a_pbd_made_meanwhile_by_another_worker_is_plugged(
    xapi: XapiServer, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host joined the pool after the store's SR was made, so it has no PBD for it. Another
    worker makes that PBD between this one's look and its PBD.create, and XAPI answers
    PBD_EXISTS: the PBD is there, so it is plugged and used."""
    secondary = store(tmp_path)
    volume_id = new_volume(backend)
    backed_up(backend, volume_id, secondary)
    (sr,) = store_sr_refs(xapi, secondary)
    with xapi.pool.lock:
        xen_a = next(r for r, h in xapi.pool.db["host"].items() if h["name_label"] == "xen-a")
        record = xapi.pool.db["SR"][sr]
        (gone,) = [p for p in record["PBDs"] if xapi.pool.db["PBD"][p]["host"] == xen_a]
        record["PBDs"].remove(gone)
        config = xapi.pool.db["PBD"].pop(gone)["device_config"]

    real_call = _PoolSession.call

    def call(self: _PoolSession, method: str, *args: Any) -> Any:
        if method == "PBD.create":
            with xapi.pool.lock:  # the other worker wins the race
                other = {"host": xen_a, "SR": sr, "device_config": config, "other_config": {}}
                xapi.pool.PBD_create(other)
        return real_call(self, method, *args)

    monkeypatch.setattr(_PoolSession, "call", call)
    snapshot_id = backed_up(backend, volume_id, secondary)
    monkeypatch.undo()
    pbds = [xapi.pool.db["PBD"][p] for p in xapi.pool.db["SR"][sr]["PBDs"]]
    assert [p["currently_attached"] for p in pbds if p["host"] == xen_a] == [True]
    assert tagged(xapi, BACKUP_KEY, snapshot_id)


def test_making_one_store_sr_does_not_hold_up_another_store(
    xapi: XapiServer, backend: Backend, tmp_path: Path
) -> None:
    """SR.create may take up to `task_timeout`; meanwhile jobs on other stores go on."""
    driver = make_driver(xapi, task_timeout=3.0)
    backend = make_backend(driver)
    ready, new = store(tmp_path), store(tmp_path)
    volume_id = new_volume(backend)
    backed_up(backend, volume_id, ready)  # its SR exists
    snapshot_id = str(uuid.uuid4())
    driver.snapshot_volume(backend.host, backend.pool, volume_id, snapshot_id)
    failures: list[BaseException] = []

    def back_up_to_a_new_store() -> None:
        try:
            driver.backup_volume_snapshot(backend.host, backend.pool, volume_id, snapshot_id, new)
        except DriverTimeoutError as error:
            failures.append(error)

    creates = xapi.pool.calls.count("Async.SR.create")
    with xapi.stall("SR.create"):
        making = threading.Thread(target=back_up_to_a_new_store)
        making.start()
        while xapi.pool.calls.count("Async.SR.create") == creates and making.is_alive():
            time.sleep(0.01)
        backed_up(backend, volume_id, ready)
        assert making.is_alive()  # still waiting for its SR, and this store's job is done
        making.join()
    assert len(failures) == 1 and store_srs(xapi, new) == []
    driver.delete_volume_snapshot(backend.host, backend.pool, volume_id, snapshot_id)
    driver.close()
