"""The driver contract against machines behind pyghmi BMCs, spoken to over IPMI on loopback.

The BMCs run in their own process (`bmc_server.py`) and report what each machine really did
(boot device set, powered on from the network, soft off ignored...), so the tests check the
machine, not the driver's word. A fake PXE installer calls the provisioning callback when, and
only when, a machine boots from the network for the VM it expects.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from activities.drivers.baremetal import BareMetalDriver, BareMetalMachine, ProvisioningCallbacks
from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostRef,
    PowerState,
    ResourceUnavailableError,
    StoragePoolRef,
    VirtualMachineSpec,
    VolumeInfo,
)
from tests.integration.drivers.contract import MIB, Backend, HypervisorContract

ROOT = Path(__file__).resolve().parents[3]
USER, PASSWORD = "admin", "bmc-s3cret"
BOOTS = ("power_on", "reset", "cycle")


class Listener(Protocol):
    """Told of each thing a machine did (`EVENT <port> ...`), as it happens."""

    def saw(self, port: int, event: tuple[str, ...]) -> None: ...


class BmcProcess:
    """The BMC process: its machines' ports, what they did, and commands to them."""

    def __init__(self, count: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.drivers.bmc_server",
                str(count),
                USER,
                PASSWORD,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().split()
        assert ready and ready[0] == "READY", f"BMC process said {ready}"
        self.ports = [int(port) for port in ready[1:]]
        self.events: dict[int, list[tuple[str, ...]]] = {port: [] for port in self.ports}
        self.acks: queue.Queue[str] = queue.Queue()
        self.listeners: list[Listener] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            words = line.split()
            if words[:1] == ["ACK"]:
                self.acks.put(line)
            elif words[:1] == ["EVENT"]:
                port, event = int(words[1]), tuple(words[2:])
                with self.lock:
                    self.events[port].append(event)
                    listeners = list(self.listeners)
                for listener in listeners:
                    listener.saw(port, event)

    def settled(self) -> None:
        """Wait until every event the machines emitted so far is in `events`.

        A machine emits its event before its BMC answers, but the line reaches `events` only
        when `_read` (another thread) gets to it, which may be after the driver has its answer
        and returned. The BMC process acknowledges commands on the same stdout, after those
        lines, and `_read` records lines in order: the ACK of a command that does nothing (the
        BMC process acknowledges any verb it does not know) is a barrier.
        """
        self.command("settle", self.ports[0], 0)

    def since(self, port: int, mark: int) -> list[tuple[str, ...]]:
        self.settled()
        with self.lock:
            return list(self.events[port][mark:])

    def mark(self, port: int) -> int:
        self.settled()
        with self.lock:
            return len(self.events[port])

    def command(self, *words: object) -> None:
        assert self.process.stdin is not None
        exited = self.process.poll()
        assert exited is None, f"the BMC process exited ({exited}); its stderr says why"
        self.process.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.process.stdin.flush()
        # This command's own ACK (`ACK <port> <verb>`), not one a timed-out command left behind.
        expected = ["ACK", str(words[1]), str(words[0])]
        deadline = time.monotonic() + 10
        while self.acks.get(timeout=max(0.0, deadline - time.monotonic())).split() != expected:
            pass

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Installer:
    """A PXE installer: when the machine boots from the network for the VM it expects, it
    installs (instantly) and calls back, as the image's first-boot script does."""

    def __init__(self, port: int, callbacks: ProvisioningCallbacks) -> None:
        self.port = port
        self.callbacks = callbacks
        self.expected: str | None = None

    def expect(self, vm_id: str) -> None:
        self.expected = vm_id

    def saw(self, port: int, event: tuple[str, ...]) -> None:
        pxe_boot = port == self.port and event[0] in BOOTS and event[1:] == ("network",)
        if pxe_boot and self.expected is not None:
            self.callbacks.notify(self.expected)


@pytest.fixture(scope="module")
def bmcs() -> Iterator[BmcProcess]:
    process = BmcProcess(3)
    yield process
    process.stop()


def closed_udp_port() -> int:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def machine(name: str, port: int) -> HostRef:
    return HostRef(f"host-{name}", name, f"127.0.0.1:{port}", "bm-cluster", "BareMetal")


def make_driver(
    port_by_host: dict[str, int], callbacks: ProvisioningCallbacks, **options: float
) -> BareMetalDriver:
    login = BareMetalMachine(USER, PASSWORD, cpu_count=8, cpu_speed_mhz=2600, memory_mib=32768)
    settings = {
        "provision_timeout": 5.0,
        "shutdown_timeout": 1.0,
        "power_timeout": 5.0,
        "poll_interval": 0.05,
    }
    settings.update(options)
    return BareMetalDriver(
        {f"host-{name}": login for name in port_by_host},
        callbacks,
        **settings,  # type: ignore[arg-type]
    )


@pytest.fixture
def rig(bmcs: BmcProcess) -> Iterator[tuple[BareMetalDriver, Installer, HostRef]]:
    """A driver, the installer of machine m1 and its host ref; m1 powered off afterwards."""
    callbacks = ProvisioningCallbacks()
    installer = Installer(bmcs.ports[1], callbacks)
    with bmcs.lock:
        bmcs.listeners.append(installer)
    driver = make_driver({"m1": bmcs.ports[1]}, callbacks)
    yield driver, installer, machine("m1", bmcs.ports[1])
    with bmcs.lock:
        bmcs.listeners.remove(installer)
    bmcs.command("ignore_soft_off", bmcs.ports[1], 0)
    bmcs.command("power", bmcs.ports[1], "off")
    driver.close()


class TestBareMetalContract(HypervisorContract):
    unsupported = {
        "volumes": "a machine boots from its own disks; there is no primary storage",
        "attach": "a machine's disks cannot be hot-plugged over IPMI",
        "resize": "a machine's disks are physical",
        "snapshot": "IPMI has no snapshots",
        "memory_snapshot": "IPMI has no snapshots",
        "migrate": "the instance is the machine; it cannot move",
        "migrate_with_storage": "a machine's disks are physical and cannot move",
        "multiple_vms": "a bare-metal host is one machine and runs one instance",
        "volume_snapshot": "a machine's disks are physical: no volume snapshots",
    }

    @pytest.fixture
    def backend(self, bmcs: BmcProcess) -> Iterator[Backend]:
        callbacks = ProvisioningCallbacks()
        port = bmcs.ports[0]
        installer = Installer(port, callbacks)
        with bmcs.lock:
            bmcs.listeners.append(installer)
        driver = make_driver({"m0": port, "gone": closed_udp_port()}, callbacks)
        yield Backend(
            driver=driver,
            host=machine("m0", port),
            unreachable_host=machine("gone", closed_udp_port()),
            pool=StoragePoolRef("local", "local", "/"),
            before_start=installer.expect,
        )
        with bmcs.lock:
            bmcs.listeners.remove(installer)
        driver.close()


# -- what only bare metal has ------------------------------------------------------------------


def spec() -> VirtualMachineSpec:
    vm_id = str(uuid.uuid4())
    root = VolumeInfo(str(uuid.uuid4()), "local:sda", 100 * 1024 * MIB, "local")
    return VirtualMachineSpec(vm_id, f"bm-{vm_id[:8]}", 8, 2600, 32768, root)


def test_first_start_pxe_boots_the_machine_and_waits_for_the_installer(
    bmcs: BmcProcess, rig: tuple[BareMetalDriver, Installer, HostRef]
) -> None:
    driver, installer, host = rig
    vm = spec()
    driver.define_vm(host, vm)
    mark = bmcs.mark(bmcs.ports[1])
    installer.expect(vm.vm_id)
    info = driver.start_vm(host, vm.vm_id)
    assert info.power_state == PowerState.POWERED_ON
    events = bmcs.since(bmcs.ports[1], mark)
    assert events == [("boot_device", "network"), ("power_on", "network")]
    driver.destroy_vm(host, vm.vm_id)


def test_first_start_of_a_machine_left_on_power_cycles_it_into_pxe(
    bmcs: BmcProcess, rig: tuple[BareMetalDriver, Installer, HostRef]
) -> None:
    driver, installer, host = rig
    bmcs.command("power", bmcs.ports[1], "on")  # someone left it running
    vm = spec()
    assert driver.define_vm(host, vm).power_state == PowerState.POWERED_ON
    mark = bmcs.mark(bmcs.ports[1])
    installer.expect(vm.vm_id)
    driver.start_vm(host, vm.vm_id)
    assert bmcs.since(bmcs.ports[1], mark) == [("boot_device", "network"), ("reset", "network")]
    driver.destroy_vm(host, vm.vm_id)


def test_without_the_installers_callback_the_start_times_out(
    bmcs: BmcProcess, bmc_driver_quick_provision: tuple[BareMetalDriver, HostRef]
) -> None:
    driver, host = bmc_driver_quick_provision
    vm = spec()
    driver.define_vm(host, vm)
    mark = bmcs.mark(bmcs.ports[2])
    with pytest.raises(DriverTimeoutError) as error:
        driver.start_vm(host, vm.vm_id)
    assert error.value.retryable and "installer" in str(error.value)
    assert bmcs.since(bmcs.ports[2], mark) == [("boot_device", "network"), ("power_on", "network")]
    driver.destroy_vm(host, vm.vm_id)


@pytest.fixture
def bmc_driver_quick_provision(bmcs: BmcProcess) -> Iterator[tuple[BareMetalDriver, HostRef]]:
    driver = make_driver({"m2": bmcs.ports[2]}, ProvisioningCallbacks(), provision_timeout=0.3)
    yield driver, machine("m2", bmcs.ports[2])
    bmcs.command("power", bmcs.ports[2], "off")
    driver.close()


def test_later_starts_boot_from_disk_and_graceful_stops_press_the_power_button(
    bmcs: BmcProcess, rig: tuple[BareMetalDriver, Installer, HostRef]
) -> None:
    driver, installer, host = rig
    vm = spec()
    driver.define_vm(host, vm)
    installer.expect(vm.vm_id)
    driver.start_vm(host, vm.vm_id)
    installer.expect("nobody")  # a second PXE boot would not provision this VM again
    mark = bmcs.mark(bmcs.ports[1])
    assert driver.stop_vm(host, vm.vm_id).power_state == PowerState.POWERED_OFF
    assert driver.start_vm(host, vm.vm_id).power_state == PowerState.POWERED_ON
    assert bmcs.since(bmcs.ports[1], mark) == [("soft_off",), ("power_on", "default")]
    driver.destroy_vm(host, vm.vm_id)


def test_an_os_ignoring_the_power_button_is_powered_off_after_the_timeout(
    bmcs: BmcProcess, rig: tuple[BareMetalDriver, Installer, HostRef]
) -> None:
    driver, installer, host = rig
    vm = spec()
    driver.define_vm(host, vm)
    installer.expect(vm.vm_id)
    driver.start_vm(host, vm.vm_id)
    bmcs.command("ignore_soft_off", bmcs.ports[1], 1)
    mark = bmcs.mark(bmcs.ports[1])
    started = time.monotonic()
    assert driver.stop_vm(host, vm.vm_id).power_state == PowerState.POWERED_OFF
    assert time.monotonic() - started >= 1.0  # the OS got its shutdown_timeout
    assert bmcs.since(bmcs.ports[1], mark) == [("soft_off_ignored",), ("power_off",)]
    driver.destroy_vm(host, vm.vm_id)


def test_reboot_resets_the_machine_and_destroy_releases_it(
    bmcs: BmcProcess, rig: tuple[BareMetalDriver, Installer, HostRef]
) -> None:
    driver, installer, host = rig
    vm = spec()
    driver.define_vm(host, vm)
    installer.expect(vm.vm_id)
    driver.start_vm(host, vm.vm_id)
    mark = bmcs.mark(bmcs.ports[1])
    assert driver.reboot_vm(host, vm.vm_id).power_state == PowerState.POWERED_ON
    driver.destroy_vm(host, vm.vm_id)
    assert bmcs.since(bmcs.ports[1], mark) == [("reset", "default"), ("power_off",)]
    assert driver.list_vms(host) == []
    assert driver.host_capacity(host).vm_count == 0
    # Released: another instance may now be deployed on the machine.
    other = spec()
    assert driver.define_vm(host, other).vm_id == other.vm_id
    driver.destroy_vm(host, other.vm_id)


def test_a_wrong_bmc_password_fails_without_retry_and_without_the_password(
    bmcs: BmcProcess,
) -> None:
    host = machine("m1", bmcs.ports[1])
    driver = BareMetalDriver(
        {host.host_id: BareMetalMachine(USER, "not-the-password")}, ProvisioningCallbacks()
    )
    with pytest.raises(DriverError) as error:
        driver.list_vms(host)
    assert not error.value.retryable and not isinstance(error.value, ResourceUnavailableError)
    assert "not-the-password" not in str(error.value)
    assert "not-the-password" not in repr(BareMetalMachine(USER, "not-the-password"))
