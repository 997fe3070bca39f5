"""Reaching vCenter, waiting for its tasks, and what its faults mean to a job.

A cluster's vCenter and its credentials come from the worker's configuration (`VCenterEndpoint`,
keyed by cluster id); refs only name hosts, datastores and templates. One session per vCenter is
kept. Long operations are vCenter tasks polled up to `task_timeout`; past it the outcome is
unknown and `DriverTimeoutError` says so.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

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

VM_ID_KEY = "stratus.vm_id"

_POWER_STATES = {
    "poweredOn": PowerState.POWERED_ON,
    "suspended": PowerState.POWERED_ON,
    "poweredOff": PowerState.POWERED_OFF,
}
#: Faults of a vCenter (or of govmomi's simulator) that does not implement the call at all.
UNSUPPORTED_FAULTS = (
    vmodl.fault.NotImplemented,
    vmodl.fault.NotSupported,
    vmodl.fault.MethodNotFound,
)
_BUSY = (
    # A file another task holds open: a copy an earlier attempt started and vCenter still makes.
    vim.fault.FileLocked,
    vim.fault.HostConnectFault,
    vim.fault.InvalidHostState,
    vim.fault.TaskInProgress,
    vim.fault.ConcurrentAccess,
    vmodl.fault.HostNotConnected,
    vmodl.fault.HostNotReachable,
)
_NO_ROOM = (vim.fault.InsufficientResourcesFault, vim.fault.OutOfBounds)


@dataclass(frozen=True)
class VCenterEndpoint:
    """How the worker reaches one vCenter. The password never leaves this object."""

    host: str
    user: str
    password: str = field(repr=False)
    port: int = 443
    protocol: str = "https"
    verify_ssl: bool = True
    datacenter: str | None = None


def translate_fault(error: BaseException, action: str) -> DriverError:
    """Map a vSphere fault or a transport error to the Stratus error, with vCenter's message."""
    message = getattr(error, "msg", None) or str(error) or type(error).__name__
    text = f"{action}: {message}"
    if isinstance(error, UNSUPPORTED_FAULTS):
        return UnsupportedOperationError(text)
    if isinstance(error, _NO_ROOM):
        return InsufficientHostCapacityError(text)
    if isinstance(error, (*_BUSY, OSError, http.client.HTTPException)):
        return ResourceUnavailableError(text)
    return DriverError(text, retryable=False)


class VSphereConnection:
    """The driver's settings, its vCenter sessions, and the lookups every concern starts from."""

    def __init__(
        self,
        vcenters: VCenterEndpoint | Mapping[str, VCenterEndpoint],
        *,
        volume_folder: str = "stratus",
        guest_id: str = "otherGuest64",
        port_group: Callable[[NicSpec], str] | None = None,
        shutdown_timeout: float = 120.0,
        task_timeout: float = 600.0,
    ) -> None:
        """`vcenters` is one endpoint, or one per cluster id.

        `port_group` names the distributed port group of a NIC (default
        `stratus-<network>-<vlan>`, created with that VLAN id on first use).
        """
        self._vcenters = vcenters
        self._volume_folder = volume_folder
        self._guest_id = guest_id
        self._port_group = port_group or (
            lambda nic: f"stratus-{nic.network_id}-{nic.vlan if nic.vlan is not None else 0}"
        )
        self._shutdown_timeout = shutdown_timeout
        self._task_timeout = task_timeout
        self._sessions: dict[VCenterEndpoint, Any] = {}
        self._lock = threading.Lock()

    def _endpoint(self, host: HostRef) -> VCenterEndpoint:
        if isinstance(self._vcenters, VCenterEndpoint):
            return self._vcenters
        try:
            return self._vcenters[host.cluster_id]
        except KeyError:
            raise ResourceUnavailableError(
                f"no vCenter configured for cluster {host.cluster_id}"
            ) from None

    def _content(self, host: HostRef) -> Any:
        endpoint = self._endpoint(host)
        with self._lock:
            si = self._sessions.get(endpoint)
            if si is None:
                try:
                    si = SmartConnect(
                        host=endpoint.host,
                        port=endpoint.port,
                        user=endpoint.user,
                        pwd=endpoint.password,
                        protocol=endpoint.protocol,
                        sslContext=None if endpoint.verify_ssl else unverified_context(),
                        connectionPoolTimeout=-1,
                    )
                except vim.fault.InvalidLogin as error:
                    raise DriverError(f"vCenter {endpoint.host} refused the login") from error
                except (OSError, http.client.HTTPException) as error:
                    raise ResourceUnavailableError(
                        f"cannot reach vCenter {endpoint.host}:{endpoint.port}: {error}"
                    ) from error
                self._sessions[endpoint] = si
            return si.RetrieveContent()

    def close(self) -> None:
        with self._lock:
            for si in self._sessions.values():
                with contextlib.suppress(Exception):
                    Disconnect(si)
            self._sessions.clear()

    def _call(self, action: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except DriverError:
            raise
        except (vmodl.MethodFault, OSError, http.client.HTTPException) as error:
            raise translate_fault(error, action) from error

    def _settle(self, task: Any, action: str) -> tuple[bool, Any]:
        """Poll a vCenter task until it ends: (True, its result) or (False, its fault)."""
        deadline = time.monotonic() + self._task_timeout
        while True:
            state, result, error = _task_outcome(task)
            if state == vim.TaskInfo.State.success:
                return True, result
            if state == vim.TaskInfo.State.error:
                return False, error
            if time.monotonic() > deadline:
                raise DriverTimeoutError(
                    f"{action}: vCenter task {task._moId} still running after "
                    f"{self._task_timeout:g} s; the outcome is unknown"
                )
            time.sleep(0.05)

    def _wait(self, task: Any, action: str) -> Any:
        succeeded, outcome = self._settle(task, action)
        if not succeeded:
            raise translate_fault(outcome, action)
        return outcome

    def _wait_raw(self, task: Any, action: str) -> Any:
        """`_wait`, raising vCenter's own fault so a caller can tell which one it was."""
        succeeded, outcome = self._settle(task, action)
        if not succeeded:
            raise outcome
        return outcome

    @staticmethod
    def _objects(content: Any, kind: Any) -> list[Any]:
        view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
        try:
            return list(view.view)
        finally:
            view.Destroy()

    def _host_system(self, content: Any, host: HostRef) -> Any:
        for system in self._objects(content, vim.HostSystem):
            if system.name in (host.name, host.address):
                if system.runtime.connectionState != "connected":
                    raise ResourceUnavailableError(
                        f"host {host.name} is {system.runtime.connectionState} in vCenter"
                    )
                return system
        raise ResourceUnavailableError(f"host {host.name} is not in vCenter's inventory")

    def _datacenter(self, content: Any, host: HostRef) -> Any:
        wanted = self._endpoint(host).datacenter
        for datacenter in self._objects(content, vim.Datacenter):
            if wanted is None or datacenter.name == wanted:
                return datacenter
        raise DriverError(f"datacenter {wanted} not found")

    def _lookup_vm(self, content: Any, vm_id: str) -> Any | None:
        return content.searchIndex.FindByUuid(
            uuid=stratus_uuid(vm_id), vmSearch=True, instanceUuid=True
        )

    def _vm_on(self, content: Any, host: HostRef, vm_id: str) -> Any | None:
        vm = self._lookup_vm(content, vm_id)
        if vm is None or vm.runtime.host.name not in (host.name, host.address):
            return None
        return vm

    def _vm(self, content: Any, host: HostRef, vm_id: str) -> Any:
        vm = self._vm_on(content, host, vm_id)
        if vm is None:
            raise DriverError(f"VM {vm_id} is not on host {host.name}", retryable=False)
        return vm

    @staticmethod
    def _stratus_id(vm: Any) -> str:
        for option in vm.config.extraConfig:
            if option.key == VM_ID_KEY:
                return str(option.value)
        return str(vm.config.instanceUuid)

    def _info(self, vm: Any, host: HostRef) -> VirtualMachineInfo:
        return VirtualMachineInfo(
            vm_id=self._stratus_id(vm),
            name=vm.name,
            power_state=_POWER_STATES.get(vm.runtime.powerState, PowerState.UNKNOWN),
            host_id=host.host_id,
        )


def unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def properties(obj: Any, kind: Any, paths: list[str]) -> dict[str, Any]:
    """Read properties through the property collector; unset ones are simply absent.

    Used where pyVmomi's lazy attribute read misbehaves against vcsim: its `Fetch` of an unset
    property (a VM's `snapshot` before the first one) crashes the request, and reading
    `task.info` whole fails pyVmomi's type check (vcsim reports a disk manager as the entity).
    """
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths)],
    )
    content = vim.ServiceInstance("ServiceInstance", obj._stub).RetrieveContent()
    values: dict[str, Any] = {}
    for item in content.propertyCollector.RetrieveContents([spec]):
        for prop in item.propSet:
            values[prop.name] = prop.val
    return values


def _task_outcome(task: Any) -> tuple[str, Any, Any]:
    values = properties(task, vim.Task, ["info.state", "info.result", "info.error"])
    return values.get("info.state", ""), values.get("info.result"), values.get("info.error")
