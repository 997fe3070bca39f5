"""Reaching libvirt on a KVM host, and what its errors mean to a job.

The connection URI of each host comes from the worker's configuration: a mapping by host id or
a template filled from the host ref (`qemu+tls://{address}/system`). Credentials, if any, live in
libvirt's own client configuration, never in a ref. One connection per URI is kept and reopened
when libvirtd went away. Every call runs in a thread pool under a deadline, because a libvirt
call can block for as long as a wedged QEMU does; past it the outcome is unknown.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar
from xml.etree import ElementTree

import libvirt

from activities.drivers.conventions import stratus_uuid
from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostRef,
    InsufficientHostCapacityError,
    NicSpec,
    PowerState,
    ResourceUnavailableError,
    UnsupportedOperationError,
    VirtualMachineInfo,
)

T = TypeVar("T")


def _quiet(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; ours carry the message instead."""


libvirt.registerErrorHandler(_quiet, None)

#: Our XML namespace for the domain metadata that carries the Stratus id.
METADATA_NS = "https://stratus.cloud/xmlns/libvirt/vm/1"

_UNSUPPORTED = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
}
_UNREACHABLE = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
}
#: The error codes of a lookup that found nothing: an answer, not a failure.
NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
}
_POWER_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.POWERED_ON,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.POWERED_ON,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.POWERED_ON,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.POWERED_ON,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.POWERED_ON,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.POWERED_OFF,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.POWERED_OFF,
}


def translate_libvirt_error(error: libvirt.libvirtError, action: str) -> DriverError:
    """Map a libvirt error to the Stratus error a job reports, keeping libvirt's message.

    Unreachable daemons and busy domains are worth another try (elsewhere); bad XML, invalid
    arguments and wrong domain states never get better by retrying.
    """
    code = error.get_error_code()
    message = f"{action}: {error.get_error_message() or error}"
    if code in _UNSUPPORTED or "unsupported flags" in message:
        return UnsupportedOperationError(message)
    if code in _UNREACHABLE:
        return ResourceUnavailableError(message)
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        # "cannot acquire state change lock": another job holds the domain; nothing was done.
        return ResourceUnavailableError(message)
    lowered = message.lower()
    if "cannot allocate memory" in lowered or "out of memory" in lowered:
        return InsufficientHostCapacityError(message)
    return DriverError(message, retryable=False)


class LibvirtConnection:
    """The driver's settings, its connections, and the lookups every concern starts from."""

    def __init__(
        self,
        connection_uri: str | Mapping[str, str] = "qemu+tls://{address}/system",
        *,
        domain_type: str = "kvm",
        network_source: Callable[[NicSpec], str] | None = None,
        migration_uri: str | None = "tcp://{address}",
        unsafe_migration: bool = False,
        shutdown_timeout: float = 120.0,
        call_timeout: float = 600.0,
    ) -> None:
        """`connection_uri` is a mapping host id → URI, or a template over the host ref's fields.

        `domain_type` is `kvm`, `qemu` (TCG, no /dev/kvm needed) or `test`. `network_source`
        names the libvirt network a NIC plugs into (default: its network id). `migration_uri`
        is where QEMU sends memory during live migration. `unsafe_migration` tells libvirt the
        pool is shared storage it cannot recognise (a local directory in tests, an odd FS).
        `shutdown_timeout` is how long a graceful stop waits for the guest before pulling the
        plug, as CloudStack's agent does. `call_timeout` bounds every call: past it the outcome
        is unknown and `DriverTimeoutError` is raised.
        """
        self._uris = connection_uri
        self._domain_type = domain_type
        self._network_source = network_source or (lambda nic: nic.network_id)
        self._migration_uri = migration_uri
        self._unsafe_migration = unsafe_migration
        self._shutdown_timeout = shutdown_timeout
        self._call_timeout = call_timeout
        self._connections: dict[str, libvirt.virConnect] = {}
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="libvirt-driver"
        )

    def _uri(self, host: HostRef) -> str:
        if isinstance(self._uris, str):
            return self._uris.format(address=host.address, name=host.name, host_id=host.host_id)
        try:
            return self._uris[host.host_id]
        except KeyError:
            raise ResourceUnavailableError(
                f"no libvirt URI configured for host {host.name} ({host.host_id})"
            ) from None

    def _connection(self, host: HostRef) -> libvirt.virConnect:
        uri = self._uri(host)
        with self._lock:
            conn = self._connections.get(uri)
            if conn is not None:
                try:
                    if conn.isAlive():
                        return conn
                except libvirt.libvirtError:
                    pass
                self._connections.pop(uri, None)
            try:
                conn = libvirt.open(uri)
            except libvirt.libvirtError as error:
                raise ResourceUnavailableError(
                    f"cannot reach libvirt on host {host.name}: {error.get_error_message()}"
                ) from error
            self._connections[uri] = conn
            return conn

    def _run(self, action: str, call: Callable[[], T]) -> T:
        """Run one driver call within the deadline, translating libvirt's errors."""
        future = self._executor.submit(call)
        try:
            return future.result(timeout=self._call_timeout)
        except concurrent.futures.TimeoutError:
            raise DriverTimeoutError(
                f"{action}: no answer from libvirt within {self._call_timeout:g} s; "
                "the outcome is unknown"
            ) from None
        except libvirt.libvirtError as error:
            raise translate_libvirt_error(error, action) from error

    def close(self) -> None:
        """Close every cached connection (worker shutdown, tests)."""
        with self._lock:
            for conn in self._connections.values():
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            self._connections.clear()

    @staticmethod
    def _lookup_domain(conn: libvirt.virConnect, vm_id: str) -> libvirt.virDomain | None:
        try:
            return conn.lookupByUUIDString(stratus_uuid(vm_id))
        except libvirt.libvirtError as error:
            if error.get_error_code() in NOT_FOUND:
                return None
            raise

    def _domain(self, conn: libvirt.virConnect, host: HostRef, vm_id: str) -> libvirt.virDomain:
        domain = self._lookup_domain(conn, vm_id)
        if domain is None:
            raise DriverError(f"VM {vm_id} is not defined on host {host.name}", retryable=False)
        return domain

    @staticmethod
    def _stratus_id(domain: libvirt.virDomain) -> str:
        try:
            xml = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
            return ElementTree.fromstring(xml).attrib["id"]
        except (libvirt.libvirtError, KeyError, ElementTree.ParseError):
            return str(domain.UUIDString())

    def _info(self, domain: libvirt.virDomain, host: HostRef) -> VirtualMachineInfo:
        state = domain.state()[0]
        return VirtualMachineInfo(
            vm_id=self._stratus_id(domain),
            name=domain.name(),
            power_state=_POWER_STATES.get(state, PowerState.UNKNOWN),
            host_id=host.host_id,
        )
