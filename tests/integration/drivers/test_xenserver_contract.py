"""The driver contract against a two-host XenServer pool, spoken to over XAPI by `XenAPI`.

The pool master is `xapi_server.py` on loopback (no XenServer simulator exists); the tests after
the contract cover what only XenServer has: dead pool members, expired sessions, XAPI tasks that
never finish, and error codes mapped to Stratus errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostRef,
    InsufficientHostCapacityError,
    NicSpec,
    PowerState,
    ResourceUnavailableError,
    StoragePoolRef,
    TemplateRef,
    UnsupportedOperationError,
    VirtualMachineSpec,
    VolumeSpec,
)
from activities.drivers.xenserver import (
    PENDING_PREFIX,
    VM_ID_KEY,
    XenServerDriver,
    XenServerPool,
    translate_failure,
)
from tests.integration.drivers.contract import MIB, Backend, HypervisorContract
from tests.integration.drivers.xapi_server import (
    GIB,
    HostSpec,
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


def make_backend(driver: XenServerDriver) -> Backend:
    return Backend(
        driver=driver,
        host=host("xen-a"),
        target_host=host("xen-b"),
        unreachable_host=host("xen-gone", cluster="gone"),
        pool=StoragePoolRef("pool-1", "Local storage", "/"),
        template=TemplateRef("tpl-1", TEMPLATE, "", "VHD", 24 * MIB),
        nics=(NicSpec("02:00:00:00:00:01", "10.1.1.10", "guest-net", vlan=130),),
        memory_mib=128,
    )


class TestXenServerContract(HypervisorContract):
    @pytest.fixture(scope="class")
    @classmethod
    def xen_backend(cls, xapi: XapiServer) -> Iterator[Backend]:
        driver = make_driver(xapi)
        yield make_backend(driver)
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


def xapi_vm(server: XapiServer, vm_id: str) -> dict[str, object]:
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
    vbds = [xapi.pool.db["VBD"][vbd] for vbd in record["VBDs"]]  # type: ignore[attr-defined]
    assert [(v["userdevice"], v["bootable"]) for v in vbds] == [("0", True)]
    vifs = [xapi.pool.db["VIF"][vif] for vif in record["VIFs"]]  # type: ignore[attr-defined]
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
        ([], DriverError, False),
    ],
)
def test_xapi_error_codes_map_to_stratus_errors(
    details: list[str], kind: type[DriverError], retryable: bool
) -> None:
    error = translate_failure(details, "do it")
    assert type(error) is kind and error.retryable is retryable
    assert all(part in str(error) for part in details)
