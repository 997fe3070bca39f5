"""Bare-metal machines over IPMI with pyghmi: a host *is* the machine, and one instance is it.

Deploying an instance on a machine is what CloudStack's bare-metal plugin does: claim the
machine for the Stratus VM (`define_vm`), then at the first start set the next boot to the
network (PXE, `set_bootdev("network")`), power the machine on (or cycle it if it was on) and
wait until its installer calls back (`ProvisioningCallbacks`) or `provision_timeout` passes.
Later starts and stops are plain power actions: a graceful stop presses the ACPI button (soft
off) and pulls the plug (hard off) if the OS is still up after `shutdown_timeout`.

Which VM a machine was provisioned for is kept by the driver instance. Volumes, snapshots and
migration make no sense for a machine: they raise UnsupportedOperationError (432), and a second
instance on a claimed machine does too.

The BMC of a host is `HostRef.address` (`host[:port]`, port 623 by default); its login comes
from the worker's configuration (`BareMetalMachine`, by host id), never from a ref.

**Cipher suite.** pyghmi's client opens an RMCP+ session proposing SHA-256 (cipher suite 17)
and falls back to SHA-1 (suite 3) only when the BMC *refuses* the proposal. Some BMCs, pyghmi's
own `Bmc` server among them, accept it but answer with the suite-3 algorithms; the client keeps
computing SHA-256 and the RAKP handshake fails. With `cipher_suite=3` the driver proposes SHA-1
from the start: `_CipherSuite3Session` overrides `Session._open_rmcpplus_request` to set
`attemptedhash = 1` just before every open-session request (pyghmi resets it to 256 on each
(re)login in `_initsession`, so setting it once would not survive a re-login). pyghmi's
`Command` always builds a plain `Session`, but shares a live session that has the same BMC,
port and credentials; so the driver logs in with its own session first and `Command` adopts it,
which the driver checks (`command.ipmi_session is session`) rather than assumes.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyghmi import exceptions as ipmi_exceptions
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import session as ipmi_session

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostCapacity,
    HostRef,
    PowerState,
    RefusesVolumeSnapshots,
    ResourceUnavailableError,
    SnapshotInfo,
    StoragePoolRef,
    UnsupportedOperationError,
    VirtualMachineInfo,
    VirtualMachineSpec,
    VolumeAttachment,
    VolumeInfo,
    VolumeSpec,
)

T = TypeVar("T")
IPMI_PORT = 623
#: IPMI completion codes after which another try may succeed (node busy, timeout, out of space
#: in the BMC's buffers, command in progress).
_BUSY_CODES = {0xC0, 0xC3, 0xC4, 0xCE}


class _CipherSuite3Session(ipmi_session.Session):  # type: ignore[misc]
    """A pyghmi session that proposes cipher suite 3 (HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128)."""

    def _open_rmcpplus_request(self) -> None:
        self.attemptedhash = 1
        super()._open_rmcpplus_request()


class ProvisioningCallbacks:
    """Where a machine's installer reports that the image is on disk and booted.

    The API's provisioning-callback endpoint calls `notify(vm_id)`; the driver `wait`s for it.
    A notification that arrives before anyone waits is kept, so the order does not matter.
    """

    def __init__(self) -> None:
        self._done: set[str] = set()
        self._changed = threading.Condition()

    def notify(self, vm_id: str) -> None:
        with self._changed:
            self._done.add(vm_id)
            self._changed.notify_all()

    def wait(self, vm_id: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: vm_id in self._done, timeout)

    def forget(self, vm_id: str) -> None:
        """The instance is gone: a later instance of the same id must provision again."""
        with self._changed:
            self._done.discard(vm_id)


@dataclass(frozen=True)
class BareMetalMachine:
    """A machine's BMC login and its size (IPMI does not tell how many CPUs a machine has)."""

    username: str
    password: str = field(repr=False)
    cpu_count: int = 1
    cpu_speed_mhz: int = 1000
    memory_mib: int = 1024


@dataclass
class _Instance:
    vm_id: str
    name: str
    root_volume_id: str
    provisioned: bool = False


class BareMetalDriver(RefusesVolumeSnapshots):
    """A `HypervisorDriver` whose hosts are physical machines driven through their BMCs."""

    hypervisor = "BareMetal"
    volume_snapshot_refusal = (
        "a bare-metal machine has no volume snapshots: its disks are physical, with no storage "
        "API to copy them"
    )

    def __init__(
        self,
        machines: Mapping[str, BareMetalMachine],
        callbacks: ProvisioningCallbacks,
        *,
        cipher_suite: int = 3,
        provision_timeout: float = 1800.0,
        shutdown_timeout: float = 120.0,
        power_timeout: float = 60.0,
        poll_interval: float = 1.0,
    ) -> None:
        """`machines` maps a host id to its BMC login and size.

        `cipher_suite` is 3 (propose SHA-1 only) or 17 (pyghmi's default: SHA-256, then SHA-1
        if the BMC refuses). `provision_timeout` is how long a first start waits for the
        installer's callback, `shutdown_timeout` how long the OS gets after the soft-off
        before the hard off, `power_timeout` how long a power change may take to show.
        """
        if cipher_suite not in (3, 17):
            raise ValueError("cipher_suite is 3 or 17")
        self._machines = machines
        self._callbacks = callbacks
        self._cipher_suite = cipher_suite
        self._provision_timeout = provision_timeout
        self._shutdown_timeout = shutdown_timeout
        self._power_timeout = power_timeout
        self._poll_interval = poll_interval
        self._instances: dict[str, _Instance] = {}
        self._sessions: dict[str, Any] = {}
        # pyghmi's sessions and event loop are process-wide: one IPMI exchange at a time.
        self._ipmi_lock = threading.Lock()
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------
    @staticmethod
    def _bmc_address(host: HostRef) -> tuple[str, int]:
        address = host.address.strip()
        if address.startswith("["):  # [v6]:port
            bracketed, _, port = address[1:].partition("]")
            return bracketed, int(port.lstrip(":") or IPMI_PORT)
        name, colon, port = address.rpartition(":")
        if colon and name and ":" not in name:
            return name, int(port)
        return address, IPMI_PORT

    def _command(self, host: HostRef) -> Any:
        machine = self._machines.get(host.host_id)
        if machine is None:
            raise ResourceUnavailableError(f"no BMC login configured for host {host.name}")
        bmc, port = self._bmc_address(host)
        user, password = machine.username.encode(), machine.password.encode()
        if self._cipher_suite == 17:
            return ipmi_command.Command(bmc=bmc, userid=user, password=password, port=port)
        session = _CipherSuite3Session(bmc=bmc, userid=user, password=password, port=port)
        command = ipmi_command.Command(bmc=bmc, userid=user, password=password, port=port)
        if command.ipmi_session is not session:
            raise DriverError(f"pyghmi did not reuse the cipher suite 3 session to {host.name}")
        self._sessions[host.host_id] = session
        return command

    def _ipmi(self, host: HostRef, action: str, call: Callable[[Any], T]) -> T:
        """One IPMI exchange with the host's BMC, its failures translated."""
        with self._ipmi_lock:
            try:
                return call(self._command(host))
            except DriverError:
                raise
            except ipmi_exceptions.IpmiException as error:
                raise _translate(error, action, host) from error
            except OSError as error:
                raise ResourceUnavailableError(
                    f"{action}: cannot reach the BMC of {host.name}: {error}"
                ) from error
            except Exception as error:
                # pyghmi's shared event loop can raise another session's protocol trouble
                # (e.g. a struct.error from a BMC that mis-negotiated the cipher suite).
                raise DriverError(
                    f"{action}: IPMI failure with {host.name}: {type(error).__name__}: {error}",
                    retryable=True,
                ) from error

    def _power(self, host: HostRef) -> PowerState:
        state = self._ipmi(host, f"power state of {host.name}", lambda c: c.get_power())
        return PowerState.POWERED_ON if state["powerstate"] == "on" else PowerState.POWERED_OFF

    def _set_power(self, host: HostRef, state: str) -> None:
        self._ipmi(host, f"power {state} {host.name}", lambda c: c.set_power(state, wait=False))

    def _await_power(self, host: HostRef, wanted: PowerState, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._power(host) != wanted:
            if time.monotonic() > deadline:
                return False
            time.sleep(self._poll_interval)
        return True

    def _instance(self, host: HostRef, vm_id: str) -> _Instance | None:
        with self._lock:
            instance = self._instances.get(host.host_id)
        return instance if instance is not None and instance.vm_id == vm_id else None

    def _claimed(self, host: HostRef, vm_id: str) -> _Instance:
        instance = self._instance(host, vm_id)
        if instance is None:
            raise DriverError(f"VM {vm_id} is not deployed on machine {host.name}")
        return instance

    def _info(self, host: HostRef, instance: _Instance) -> VirtualMachineInfo:
        return VirtualMachineInfo(instance.vm_id, instance.name, self._power(host), host.host_id)

    # -- host ------------------------------------------------------------------------------
    def host_capacity(self, host: HostRef) -> HostCapacity:
        power = self._power(host)
        machine = self._machines[host.host_id]
        with self._lock:
            instance = self._instances.get(host.host_id)
        return HostCapacity(
            cpu_count=machine.cpu_count,
            cpu_speed_mhz=machine.cpu_speed_mhz,
            memory_mib=machine.memory_mib,
            vm_count=0 if instance is None else 1,
            extra={"power": str(power)},
        )

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        power = self._power(host)
        with self._lock:
            instance = self._instances.get(host.host_id)
        if instance is None:
            return []
        return [VirtualMachineInfo(instance.vm_id, instance.name, power, host.host_id)]

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        instance = self._instance(host, vm_id)
        return None if instance is None else self._info(host, instance)

    # -- VM lifecycle ----------------------------------------------------------------------
    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        power = self._power(host)  # the BMC answers: the machine is there to be claimed
        with self._lock:
            instance = self._instances.get(host.host_id)
            if instance is None:
                instance = _Instance(spec.vm_id, spec.name, spec.root_volume.volume_id)
                self._instances[host.host_id] = instance
            elif instance.vm_id != spec.vm_id:
                raise UnsupportedOperationError(
                    f"machine {host.name} is the instance {instance.vm_id}: a bare-metal host "
                    "runs one instance"
                )
        return VirtualMachineInfo(instance.vm_id, instance.name, power, host.host_id)

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        instance = self._claimed(host, vm_id)
        if not instance.provisioned and self._callbacks.wait(vm_id, 0):
            instance.provisioned = True  # the installer called back after an earlier timeout
        if instance.provisioned:
            if self._power(host) != PowerState.POWERED_ON:
                self._set_power(host, "on")
        else:
            self._provision(host, instance)
        if not self._await_power(host, PowerState.POWERED_ON, self._power_timeout):
            raise DriverTimeoutError(f"machine {host.name} did not power on in time")
        return self._info(host, instance)

    def _provision(self, host: HostRef, instance: _Instance) -> None:
        """PXE-boot the machine into its installer and wait for the installer's callback."""
        action = f"provision {instance.vm_id} on machine {host.name}"
        self._ipmi(host, action, lambda c: c.set_bootdev("network"))
        was_on = self._power(host) == PowerState.POWERED_ON
        self._set_power(host, "reset" if was_on else "on")
        if not self._callbacks.wait(instance.vm_id, self._provision_timeout):
            raise DriverTimeoutError(
                f"{action}: no callback from the installer within "
                f"{self._provision_timeout:g} s; the outcome is unknown"
            )
        instance.provisioned = True

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        instance = self._claimed(host, vm_id)
        if self._power(host) == PowerState.POWERED_ON:
            stopped = False
            if not forced:
                self._set_power(host, "shutdown")
                stopped = self._await_power(host, PowerState.POWERED_OFF, self._shutdown_timeout)
            if not stopped:
                self._set_power(host, "off")
                if not self._await_power(host, PowerState.POWERED_OFF, self._power_timeout):
                    raise DriverTimeoutError(f"machine {host.name} did not power off in time")
        return self._info(host, instance)

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        instance = self._claimed(host, vm_id)
        if self._power(host) != PowerState.POWERED_ON:
            raise DriverError(f"VM {vm_id} is not running; it cannot be rebooted")
        self._set_power(host, "reset")
        return self._info(host, instance)

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        instance = self._instance(host, vm_id)
        if instance is None:
            return
        if self._power(host) == PowerState.POWERED_ON:
            self._set_power(host, "off")
            if not self._await_power(host, PowerState.POWERED_OFF, self._power_timeout):
                raise DriverTimeoutError(f"machine {host.name} did not power off in time")
        with self._lock:
            if self._instances.get(host.host_id) is instance:
                del self._instances[host.host_id]
        self._callbacks.forget(vm_id)

    # -- what a machine cannot do ----------------------------------------------------------
    @staticmethod
    def _unsupported(what: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(f"a bare-metal machine has no {what}")

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        raise self._unsupported("volumes: its disks are its own")

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        raise self._unsupported("volumes: its disks are its own")

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        raise self._unsupported("volume resize: its disks are its own")

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        raise self._unsupported("volume hotplug")

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        raise self._unsupported("volume hotplug")

    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        """Only the root disk the machine was provisioned onto."""
        instance = self._claimed(host, vm_id)
        return [VolumeAttachment(vm_id, instance.root_volume_id, 0)]

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        raise self._unsupported("snapshots")

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        self._claimed(host, vm_id)
        return []

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        raise self._unsupported("snapshots")

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        raise self._unsupported("snapshots")

    def copy_volume(
        self,
        host: HostRef,
        source_pool: StoragePoolRef,
        target_pool: StoragePoolRef,
        volume_id: str,
    ) -> VolumeInfo:
        raise self._unsupported("volume on primary storage to copy: its disks are its own")

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        raise self._unsupported("live migration: the instance is the machine")

    def close(self) -> None:
        """Log out of the BMCs (worker shutdown, tests); pyghmi would keep the sessions alive."""
        with self._ipmi_lock:
            sessions, self._sessions = self._sessions, {}
            for session in sessions.values():
                with contextlib.suppress(Exception):
                    session.logout()


def _translate(error: Exception, action: str, host: HostRef) -> DriverError:
    """Map a pyghmi failure: no session (unreachable BMC) is 534, a refused login is final."""
    reason = str(error) if str(error) not in ("", "None") else "no answer (timed out)"
    message = f"{action}: BMC of {host.name}: {reason}"
    text = reason.lower()
    if any(word in text for word in ("password", "unauthorized", "privilege", "rakp")):
        return DriverError(message, retryable=False)
    code = getattr(error, "ipmicode", 0)
    if code in _BUSY_CODES:
        return ResourceUnavailableError(message)
    if code:
        return DriverError(message, retryable=False)
    return ResourceUnavailableError(message)
