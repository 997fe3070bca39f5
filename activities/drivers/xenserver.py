"""XenServer / XCP-ng pools through XAPI, with the `XenAPI` client.

Every call goes to the pool master; hosts are pool members found by name or address. The
Stratus ids live in XAPI's `other_config` maps: a VM carries `stratus_vm_id`, a disk (VDI)
`stratus_volume_id`, so define and create are idempotent by Stratus id. A snapshot is named
`stratus-snapshot:<id>` when XAPI makes it, so a retried snapshot finds it without a second step.

Defining a VM follows CloudStack's XenServer resource: clone the base template of the OS
(`VM.clone`), drop its `disks` provisioning spec (the disks are Stratus volumes, plugged as VBDs),
`VM.provision` as `xe vm-install` does, then set memory, vCPUs, affinity, VBDs and VIFs and turn
the clone into a VM. The clone is named `stratus-pending:<vm id>` until the last step, so a define
interrupted at any point is found and finished by the retry (or removed by the saga's undo).

A halted VM has no `resident_on` in XAPI: it belongs to its `affinity` host, which the driver
sets at define and after a migration, and starts it there (`VM.start_on`).

Long operations run as XAPI tasks (`Async.*`) polled up to `task_timeout`; past it the outcome is
unknown and `DriverTimeoutError` says so. Failures keep XAPI's error code and parameters in the
message, and whether a retry may help is decided per code (`translate_failure`).

The pool master URL and credentials come from the worker's configuration (`XenServerPool`, one
per cluster id); refs carry only names and addresses, and no URL with credentials is accepted.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import XenAPI

from activities.drivers.hypervisor import (
    DriverError,
    DriverTimeoutError,
    HostCapacity,
    HostRef,
    InsufficientHostCapacityError,
    NicSpec,
    PowerState,
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
Record = dict[str, Any]

NULL_REF = "OpaqueRef:NULL"
VM_ID_KEY = "stratus_vm_id"
VOLUME_ID_KEY = "stratus_volume_id"
PENDING_PREFIX = "stratus-pending:"
SNAPSHOT_PREFIX = "stratus-snapshot:"
MIB = 1024 * 1024

#: A paused VM still sits in its host's memory: on. A suspended one is only an image on disk,
#: resident nowhere: off (as CloudStack's XenServer resource reports it); starting it resumes it.
_POWER_STATES = {
    "Running": PowerState.POWERED_ON,
    "Paused": PowerState.POWERED_ON,
    "Suspended": PowerState.POWERED_OFF,
    "Halted": PowerState.POWERED_OFF,
}

#: XAPI cannot do this here at all (CloudStack 432).
_UNSUPPORTED = {
    "MESSAGE_METHOD_UNKNOWN",
    "SR_OPERATION_NOT_SUPPORTED",
    "VDI_NOT_IN_MAP",
    "FEATURE_RESTRICTED",
    "LICENCE_RESTRICTION",
    "VM_LACKS_FEATURE",
    "VM_LACKS_FEATURE_SUSPEND",
    "VM_LACKS_FEATURE_VCPU_HOTPLUG",
}
#: The host has no room, whatever our books say (533).
_NO_ROOM = {"HOST_NOT_ENOUGH_FREE_MEMORY", "HOST_NOT_ENOUGH_PCPUS", "SR_FULL"}
#: The host or pool cannot do it now: another host may (534, retryable).
_UNAVAILABLE = {
    "HOST_OFFLINE",
    "HOST_NOT_LIVE",
    "HOST_DISABLED",
    "HOST_DISABLED_UNTIL_REBOOT",
    "HOST_IS_SLAVE",
    "HOST_STILL_BOOTING",
    "HOST_IN_EMERGENCY_MODE",
    "HOST_NOT_ENABLED",
    "CANNOT_CONTACT_HOST",
    "TOO_BUSY",
    "SR_UNAVAILABLE",
    "SR_NOT_ATTACHED",
}
#: A race with another actor (the VM changed state, an object vanished, a device is busy): the
#: retried job looks the resource up again by its Stratus id and decides afresh.
_RACES = {
    "HANDLE_INVALID",
    "VM_BAD_POWER_STATE",
    "OTHER_OPERATION_IN_PROGRESS",
    "OPERATION_BLOCKED",
    "VDI_IN_USE",
    "DEVICE_ALREADY_ATTACHED",
    "DEVICE_ALREADY_DETACHED",
    "TASK_CANCELLED",
    "VM_MIGRATE_FAILED",
}
#: A graceful stop or reboot that cannot happen (no PV tools, guest not cooperating): pull the plug.
_NO_CLEAN_POWER_OP = {
    "VM_MISSING_PV_DRIVERS",
    "VM_LACKS_FEATURE",
    "VM_LACKS_FEATURE_SHUTDOWN",
    "VM_SHUTDOWN_TIMEOUT",
    "OPERATION_NOT_ALLOWED",
}


def translate_failure(details: Sequence[object], action: str) -> DriverError:
    """Map a XAPI error description `[code, params...]` to the Stratus error, keeping it whole."""
    code = str(details[0]) if details else "UNKNOWN_XENAPI_ERROR"
    params = ", ".join(str(p) for p in details[1:])
    message = f"{action}: XenServer {code}" + (f" ({params})" if params else "")
    if code in _UNSUPPORTED:
        return UnsupportedOperationError(message)
    if code in _NO_ROOM:
        return InsufficientHostCapacityError(message)
    if code in _UNAVAILABLE:
        return ResourceUnavailableError(message)
    if code in _RACES:
        return DriverError(message, retryable=True)
    return DriverError(message, retryable=False)


@dataclass(frozen=True)
class XenServerPool:
    """How the worker reaches one pool master. The password never leaves this object."""

    url: str
    username: str
    password: str = field(repr=False)
    verify_tls: bool = True

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("a XenServer pool URL is http(s)://<pool master>[:port]/")
        if parsed.username or parsed.password:
            raise ValueError("put XenServer credentials in username/password, not in the URL")


class _Transport(xmlrpc.client.Transport):
    """Bounds every HTTP exchange with XAPI; xmlrpc's transports have no timeout of their own."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


class _SafeTransport(xmlrpc.client.SafeTransport):
    """The same over TLS."""

    def __init__(self, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


class _PoolSession:
    """One logged-in XAPI session. XenAPI's session object is not thread safe: one call at a time.

    The client logs in again by itself when the master answers SESSION_INVALID (after a master
    restart), with the credentials it keeps in memory.
    """

    def __init__(self, pool: XenServerPool, timeout: float) -> None:
        if urlparse(pool.url).scheme == "https":
            context = ssl.create_default_context()
            if not pool.verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            transport: xmlrpc.client.Transport = _SafeTransport(timeout, context)
        else:
            transport = _Transport(timeout)
        self._session = XenAPI.Session(pool.url, transport=transport)
        self._lock = threading.Lock()
        with self._lock:
            self._session.xenapi.login_with_password(pool.username, pool.password, "1.0", "stratus")

    def call(self, method: str, *args: Any) -> Any:
        target = self._session.xenapi
        for part in method.split("."):
            target = getattr(target, part)
        with self._lock:
            return target(*args)

    def logout(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._session.xenapi.session.logout()


class XenServerDriver:
    """A `HypervisorDriver` for XenServer / XCP-ng pools."""

    hypervisor = "XenServer"

    def __init__(
        self,
        pools: Mapping[str, XenServerPool],
        *,
        base_template: Callable[[VirtualMachineSpec], str] | str = "Other install media",
        network_name: Callable[[NicSpec], str] | None = None,
        shutdown_timeout: float = 120.0,
        task_timeout: float = 600.0,
        call_timeout: float = 60.0,
        poll_interval: float = 0.1,
    ) -> None:
        """`pools` maps a cluster id to its pool master.

        `base_template` names the XAPI template a VM is cloned from (or derives it from the
        spec, e.g. from `os_type`); `network_name` the XAPI network a NIC plugs into (default:
        the network id). `shutdown_timeout` is how long a clean shutdown or reboot may take
        before the driver pulls the plug, as CloudStack does; `task_timeout` bounds every XAPI
        task and `call_timeout` every single XML-RPC exchange.
        """
        self._pools = pools
        self._base_template = base_template
        self._network_name = network_name or (lambda nic: nic.network_id)
        self._shutdown_timeout = shutdown_timeout
        self._task_timeout = task_timeout
        self._call_timeout = call_timeout
        self._poll_interval = poll_interval
        self._sessions: dict[str, _PoolSession] = {}
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------
    def _session(self, host: HostRef) -> _PoolSession:
        pool = self._pools.get(host.cluster_id)
        if pool is None:
            raise ResourceUnavailableError(f"no XenServer pool configured for {host.cluster_id}")
        with self._lock:
            session = self._sessions.get(host.cluster_id)
            if session is None:
                session = _PoolSession(pool, self._call_timeout)
                self._sessions[host.cluster_id] = session
            return session

    def _forget(self, host: HostRef) -> None:
        with self._lock:
            self._sessions.pop(host.cluster_id, None)

    def close(self) -> None:
        """Log out of every pool (worker shutdown, tests)."""
        with self._lock:
            for session in self._sessions.values():
                session.logout()
            self._sessions.clear()

    def _call(self, host: HostRef, action: str, work: Callable[[_PoolSession], T]) -> T:
        """Run one driver operation against the host's pool, translating XAPI's failures."""
        try:
            return work(self._session(host))
        except DriverError:
            raise
        except XenAPI.Failure as failure:
            raise translate_failure(failure.details, action) from failure
        except TimeoutError as error:
            self._forget(host)
            raise DriverTimeoutError(
                f"{action}: no answer from the pool master within {self._call_timeout:g} s; "
                "the outcome is unknown"
            ) from error
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as error:
            self._forget(host)
            raise ResourceUnavailableError(
                f"{action}: cannot reach the pool master of {host.cluster_id}: {error}"
            ) from error
        except xmlrpc.client.Fault as fault:
            raise DriverError(f"{action}: XAPI fault {fault.faultString}") from fault

    def _task(self, xapi: _PoolSession, action: str, method: str, *args: Any) -> Any:
        """Run `Async.<method>` and wait for it; its result, or its failure raised."""
        return self._await(xapi, action, xapi.call(f"Async.{method}", *args), self._task_timeout)

    def _await(self, xapi: _PoolSession, action: str, task: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status = xapi.call("task.get_status", task)
            if status == "success":
                result = xapi.call("task.get_result", task)
                xapi.call("task.destroy", task)
                return _task_value(result)
            if status in ("failure", "cancelled"):
                details = xapi.call("task.get_error_info", task)
                xapi.call("task.destroy", task)
                raise XenAPI.Failure(details)
            if time.monotonic() > deadline:
                with contextlib.suppress(XenAPI.Failure):
                    xapi.call("task.cancel", task)
                raise DriverTimeoutError(
                    f"{action}: XAPI task {task} still {status} after {timeout:g} s; "
                    "the outcome is unknown"
                )
            time.sleep(self._poll_interval)

    def _host(self, xapi: _PoolSession, host: HostRef, *, live: bool = False) -> str:
        """The pool member for a host ref; with `live`, refuse one the pool sees as dead."""
        for ref, record in xapi.call("host.get_all_records").items():
            if host.name in (record["name_label"], record["hostname"]) or (
                host.address and record["address"] == host.address
            ):
                if live and not xapi.call("host_metrics.get_live", record["metrics"]):
                    raise ResourceUnavailableError(
                        f"host {host.name} is not live in its XenServer pool"
                    )
                return str(ref)
        raise ResourceUnavailableError(f"host {host.name} is not a member of its XenServer pool")

    @staticmethod
    def _is_guest(record: Record) -> bool:
        return not (
            record["is_a_template"] or record["is_a_snapshot"] or record["is_control_domain"]
        )

    def _lookup(self, xapi: _PoolSession, vm_id: str, *, pending: bool = False) -> str | None:
        """The VM with this Stratus id anywhere in the pool; with `pending`, a half-defined one."""
        for ref, record in xapi.call("VM.get_all_records").items():
            if record["is_a_snapshot"] or record["is_control_domain"]:
                continue
            tagged = record["other_config"].get(VM_ID_KEY) == vm_id
            if tagged and not record["is_a_template"]:
                return str(ref)
            if pending and (tagged or record["name_label"] == PENDING_PREFIX + vm_id):
                return str(ref)
        return None

    @staticmethod
    def _home(record: Record) -> str:
        """Where a VM is: the host it runs on, or for a halted VM the host it belongs to."""
        resident = str(record["resident_on"])
        return resident if resident != NULL_REF else str(record["affinity"])

    def _vm_on(self, xapi: _PoolSession, host: HostRef, vm_id: str) -> tuple[str, Record] | None:
        ref = self._lookup(xapi, vm_id)
        if ref is None:
            return None
        record = xapi.call("VM.get_record", ref)
        if self._home(record) != self._host(xapi, host):
            return None
        return ref, record

    def _vm(self, xapi: _PoolSession, host: HostRef, vm_id: str) -> tuple[str, Record]:
        found = self._vm_on(xapi, host, vm_id)
        if found is None:
            raise DriverError(f"VM {vm_id} is not defined on host {host.name}", retryable=False)
        return found

    @staticmethod
    def _info(record: Record, host: HostRef) -> VirtualMachineInfo:
        return VirtualMachineInfo(
            vm_id=record["other_config"].get(VM_ID_KEY) or record["uuid"],
            name=record["name_label"],
            power_state=_POWER_STATES.get(record["power_state"], PowerState.UNKNOWN),
            host_id=host.host_id,
        )

    def _refresh(self, xapi: _PoolSession, ref: str, host: HostRef) -> VirtualMachineInfo:
        return self._info(xapi.call("VM.get_record", ref), host)

    # -- host ------------------------------------------------------------------------------
    def host_capacity(self, host: HostRef) -> HostCapacity:
        def work(xapi: _PoolSession) -> HostCapacity:
            ref = self._host(xapi, host, live=True)
            record = xapi.call("host.get_record", ref)
            metrics = xapi.call("host_metrics.get_record", record["metrics"])
            cpu = record["cpu_info"]
            guests = [
                vm
                for vm in xapi.call("VM.get_all_records").values()
                if self._is_guest(vm) and vm["resident_on"] == ref
            ]
            return HostCapacity(
                cpu_count=int(cpu["cpu_count"]),
                cpu_speed_mhz=int(float(cpu["speed"])),
                memory_mib=int(metrics["memory_total"]) // MIB,
                vm_count=len(guests),
                extra={
                    "cpu_model": str(cpu.get("modelname", "")),
                    "memory_free_mib": str(int(metrics["memory_free"]) // MIB),
                    "product_version": str(record["software_version"].get("product_version")),
                },
            )

        return self._call(host, f"host capacity of {host.name}", work)

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        def work(xapi: _PoolSession) -> list[VirtualMachineInfo]:
            ref = self._host(xapi, host, live=True)
            return [
                self._info(record, host)
                for record in xapi.call("VM.get_all_records").values()
                if self._is_guest(record) and self._home(record) == ref
            ]

        return self._call(host, f"list VMs on {host.name}", work)

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        def work(xapi: _PoolSession) -> VirtualMachineInfo | None:
            found = self._vm_on(xapi, host, vm_id)
            return None if found is None else self._info(found[1], host)

        return self._call(host, f"find VM {vm_id} on {host.name}", work)

    # -- volumes ---------------------------------------------------------------------------
    def _sr(self, xapi: _PoolSession, pool: StoragePoolRef) -> str:
        refs = xapi.call("SR.get_by_name_label", pool.name)
        if not refs:
            raise DriverError(f"storage repository {pool.name} is not in the XenServer pool")
        return str(refs[0])

    @staticmethod
    def _volume(xapi: _PoolSession, volume_id: str, sr: str | None = None) -> str | None:
        for ref, record in xapi.call("VDI.get_all_records").items():
            if (
                record["other_config"].get(VOLUME_ID_KEY) == volume_id
                and not record["is_a_snapshot"]
                and (sr is None or record["SR"] == sr)
            ):
                return str(ref)
        return None

    @staticmethod
    def _volume_info(
        xapi: _PoolSession, vdi: str, volume_id: str, pool: StoragePoolRef
    ) -> VolumeInfo:
        size = int(xapi.call("VDI.get_virtual_size", vdi))
        return VolumeInfo(volume_id, f"{pool.name}/{volume_id}", size, pool.pool_id)

    def _template_disk(self, xapi: _PoolSession, name: str) -> str:
        for ref in xapi.call("VM.get_by_name_label", name):
            if not xapi.call("VM.get_is_a_template", ref):
                continue
            for vbd in xapi.call("VM.get_VBDs", ref):
                record = xapi.call("VBD.get_record", vbd)
                if record["type"] == "Disk" and record["userdevice"] == "0":
                    return str(record["VDI"])
        raise DriverError(f"template {name} (with a disk) is not in the XenServer pool")

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        action = f"create volume {spec.volume_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> VolumeInfo:
            sr = self._sr(xapi, pool)
            vdi = self._volume(xapi, spec.volume_id, sr)
            if vdi is not None:
                return self._volume_info(xapi, vdi, spec.volume_id, pool)
            if spec.template is None:
                vdi = xapi.call(
                    "VDI.create",
                    {
                        "name_label": spec.name,
                        "name_description": f"Stratus volume {spec.volume_id}",
                        "SR": sr,
                        "virtual_size": str(spec.size_bytes),
                        "type": "user",
                        "sharable": False,
                        "read_only": False,
                        "other_config": {VOLUME_ID_KEY: spec.volume_id},
                        "xenstore_data": {},
                        "sm_config": {},
                        "tags": [],
                    },
                )
            else:
                # VDI.copy takes no name: the copy is tagged right after. A crash in between
                # leaves an untagged copy behind, never a second tagged volume.
                source = self._template_disk(xapi, spec.template.name)
                vdi = self._task(xapi, action, "VDI.copy", source, sr)
                xapi.call("VDI.set_name_label", vdi, spec.name)
                xapi.call("VDI.add_to_other_config", vdi, VOLUME_ID_KEY, spec.volume_id)
                if int(xapi.call("VDI.get_virtual_size", vdi)) < spec.size_bytes:
                    self._task(xapi, action, "VDI.resize", vdi, str(spec.size_bytes))
            return self._volume_info(xapi, vdi, spec.volume_id, pool)

        return self._call(host, action, work)

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        action = f"delete volume {volume_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> None:
            vdi = self._volume(xapi, volume_id, self._sr(xapi, pool))
            if vdi is not None:
                self._task(xapi, action, "VDI.destroy", vdi)

        self._call(host, action, work)

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        action = f"resize volume {volume_id} to {size_bytes} bytes"

        def work(xapi: _PoolSession) -> VolumeInfo:
            vdi = self._volume(xapi, volume_id, self._sr(xapi, pool))
            if vdi is None:
                raise DriverError(f"volume {volume_id} is not in SR {pool.name}")
            current = int(xapi.call("VDI.get_virtual_size", vdi))
            if size_bytes < current:
                raise DriverError(
                    f"volume {volume_id} is {current} bytes; shrinking to {size_bytes} is refused"
                )
            if size_bytes > current:
                self._task(xapi, action, "VDI.resize", vdi, str(size_bytes))
            return self._volume_info(xapi, vdi, volume_id, pool)

        return self._call(host, action, work)

    # -- VM lifecycle ----------------------------------------------------------------------
    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        action = f"define VM {spec.vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            host_ref = self._host(xapi, host, live=True)
            vm = self._lookup(xapi, spec.vm_id, pending=True)
            if vm is None:
                template = self._template(xapi, spec)
                vm = str(
                    self._task(xapi, action, "VM.clone", template, PENDING_PREFIX + spec.vm_id)
                )
            record = xapi.call("VM.get_record", vm)
            if not record["is_a_template"]:
                if self._home(record) != host_ref:
                    raise DriverError(f"VM {spec.vm_id} is already defined on another host")
                return self._info(record, host)
            self._finish_definition(xapi, action, vm, record, host_ref, spec)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def _template(self, xapi: _PoolSession, spec: VirtualMachineSpec) -> str:
        name = (
            self._base_template
            if isinstance(self._base_template, str)
            else self._base_template(spec)
        )
        for ref in xapi.call("VM.get_by_name_label", name):
            if xapi.call("VM.get_is_a_template", ref):
                return str(ref)
        raise DriverError(f"base template {name} is not in the XenServer pool")

    def _finish_definition(
        self,
        xapi: _PoolSession,
        action: str,
        vm: str,
        record: Record,
        host_ref: str,
        spec: VirtualMachineSpec,
    ) -> None:
        """Turn the clone into the VM; every step checks first, so a retry resumes anywhere."""
        if "disks" in record["other_config"]:
            xapi.call("VM.remove_from_other_config", vm, "disks")
            self._task(xapi, action, "VM.provision", vm)
        xapi.call("VM.set_affinity", vm, host_ref)
        memory = str(spec.memory_mib * MIB)
        static_min = str(min(int(record["memory_static_min"]), spec.memory_mib * MIB))
        xapi.call("VM.set_memory_limits", vm, static_min, memory, memory, memory)
        cpus = str(spec.cpu_count)
        if spec.cpu_count > int(record["VCPUs_max"]):
            xapi.call("VM.set_VCPUs_max", vm, cpus)
            xapi.call("VM.set_VCPUs_at_startup", vm, cpus)
        else:
            xapi.call("VM.set_VCPUs_at_startup", vm, cpus)
            xapi.call("VM.set_VCPUs_max", vm, cpus)
        plugged = {xapi.call("VBD.get_userdevice", vbd) for vbd in xapi.call("VM.get_VBDs", vm)}
        for device, volume in enumerate((spec.root_volume, *spec.data_volumes)):
            if str(device) not in plugged:
                vdi = self._volume(xapi, volume.volume_id)
                if vdi is None:
                    raise DriverError(f"volume {volume.volume_id} is not in the XenServer pool")
                self._create_vbd(xapi, vm, vdi, device)
        present = {xapi.call("VIF.get_device", vif) for vif in xapi.call("VM.get_VIFs", vm)}
        for nic in spec.nics:
            if str(nic.device_id) not in present:
                self._create_vif(xapi, vm, nic)
        if VM_ID_KEY not in record["other_config"]:
            xapi.call("VM.add_to_other_config", vm, VM_ID_KEY, spec.vm_id)
        xapi.call("VM.set_name_label", vm, spec.name)
        xapi.call("VM.set_name_description", vm, f"Stratus VM {spec.vm_id}")
        xapi.call("VM.set_is_a_template", vm, False)

    @staticmethod
    def _create_vbd(xapi: _PoolSession, vm: str, vdi: str, device: int) -> str:
        return str(
            xapi.call(
                "VBD.create",
                {
                    "VM": vm,
                    "VDI": vdi,
                    "userdevice": str(device),
                    "bootable": device == 0,
                    "mode": "RW",
                    "type": "Disk",
                    "unpluggable": device != 0,
                    "empty": False,
                    "other_config": {},
                    "qos_algorithm_type": "",
                    "qos_algorithm_params": {},
                },
            )
        )

    def _create_vif(self, xapi: _PoolSession, vm: str, nic: NicSpec) -> None:
        name = self._network_name(nic)
        networks = xapi.call("network.get_by_name_label", name)
        if not networks:
            raise DriverError(f"network {name} is not in the XenServer pool")
        xapi.call(
            "VIF.create",
            {
                "device": str(nic.device_id),
                "network": networks[0],
                "VM": vm,
                "MAC": nic.mac_address,
                "MTU": "1500",
                "other_config": {"stratus_network_id": nic.network_id},
                "qos_algorithm_type": "",
                "qos_algorithm_params": {},
            },
        )

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        action = f"start VM {vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            vm, record = self._vm(xapi, host, vm_id)
            state = record["power_state"]
            if state == "Halted":
                self._task(xapi, action, "VM.start_on", vm, self._host(xapi, host), False, False)
            elif state == "Suspended":
                self._task(xapi, action, "VM.resume_on", vm, self._host(xapi, host), False, False)
            elif state == "Paused":
                self._task(xapi, action, "VM.unpause", vm)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        action = f"stop VM {vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            vm, record = self._vm(xapi, host, vm_id)
            if record["power_state"] in ("Halted", "Suspended"):
                return self._info(record, host)  # off already (a suspended image is kept)
            if not forced and record["power_state"] == "Running":
                self._gracefully(xapi, action, "VM.clean_shutdown", vm)
            if xapi.call("VM.get_power_state", vm) != "Halted":
                self._task(xapi, action, "VM.hard_shutdown", vm)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def _gracefully(self, xapi: _PoolSession, action: str, method: str, vm: str) -> bool:
        """Ask the guest (clean shutdown or reboot) for up to `shutdown_timeout`; False if not."""
        task = xapi.call(f"Async.{method}", vm)
        try:
            self._await(xapi, action, task, self._shutdown_timeout)
        except DriverTimeoutError:
            return False  # the guest ignored us; the caller pulls the plug (XAPI cancels ours)
        except XenAPI.Failure as failure:
            if str(failure.details[0]) not in _NO_CLEAN_POWER_OP:
                raise
            return False
        return True

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        action = f"reboot VM {vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            vm, record = self._vm(xapi, host, vm_id)
            if record["power_state"] != "Running":
                raise DriverError(f"VM {vm_id} is not running; it cannot be rebooted")
            if not self._gracefully(xapi, action, "VM.clean_reboot", vm):
                self._task(xapi, action, "VM.hard_reboot", vm)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        action = f"destroy VM {vm_id} on {host.name}"

        def work(xapi: _PoolSession) -> None:
            found = self._vm_on(xapi, host, vm_id)
            vm = found[0] if found else self._lookup(xapi, vm_id, pending=True)
            if vm is None:
                return
            record = xapi.call("VM.get_record", vm)
            if found is None and not record["is_a_template"]:
                return  # a complete VM on another host is not this host's to destroy
            if record["power_state"] != "Halted":
                self._task(xapi, action, "VM.hard_shutdown", vm)
            for snapshot in record["snapshots"]:
                self._destroy_snapshot(xapi, action, snapshot)
            # VM.destroy removes the VBDs and VIFs and keeps the VDIs: they are Stratus volumes.
            self._task(xapi, action, "VM.destroy", vm)

        self._call(host, action, work)

    # -- snapshots -------------------------------------------------------------------------
    @staticmethod
    def _snapshots(xapi: _PoolSession, record: Record) -> dict[str, tuple[str, Record]]:
        found = {}
        for ref in record["snapshots"]:
            snapshot = xapi.call("VM.get_record", ref)
            if snapshot["name_label"].startswith(SNAPSHOT_PREFIX):
                found[snapshot["name_label"].removeprefix(SNAPSHOT_PREFIX)] = (ref, snapshot)
        return found

    @staticmethod
    def _snapshot_info(snapshot_id: str, vm_id: str, record: Record) -> SnapshotInfo:
        # A checkpoint (memory included) is a snapshot VM in the Suspended state.
        return SnapshotInfo(snapshot_id, vm_id, record["power_state"] == "Suspended")

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        action = f"snapshot VM {vm_id} as {snapshot_id}"

        def work(xapi: _PoolSession) -> SnapshotInfo:
            vm, record = self._vm(xapi, host, vm_id)
            existing = self._snapshots(xapi, record).get(snapshot_id)
            if existing is None:
                call = (
                    "VM.checkpoint"
                    if memory and record["power_state"] == "Running"
                    else ("VM.snapshot")
                )
                ref = self._task(xapi, action, call, vm, SNAPSHOT_PREFIX + snapshot_id)
                existing = (str(ref), xapi.call("VM.get_record", ref))
            return self._snapshot_info(snapshot_id, vm_id, existing[1])

        return self._call(host, action, work)

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        def work(xapi: _PoolSession) -> list[SnapshotInfo]:
            _, record = self._vm(xapi, host, vm_id)
            return [
                self._snapshot_info(snapshot_id, vm_id, snapshot)
                for snapshot_id, (_, snapshot) in self._snapshots(xapi, record).items()
            ]

        return self._call(host, f"list snapshots of VM {vm_id}", work)

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        action = f"revert VM {vm_id} to snapshot {snapshot_id}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            vm, record = self._vm(xapi, host, vm_id)
            found = self._snapshots(xapi, record).get(snapshot_id)
            if found is None:
                raise DriverError(f"VM {vm_id} has no snapshot {snapshot_id}")
            self._task(xapi, action, "VM.revert", found[0])
            # XAPI leaves a reverted checkpoint suspended: resume it here, where it belongs.
            if xapi.call("VM.get_power_state", vm) == "Suspended":
                self._task(xapi, action, "VM.resume_on", vm, self._host(xapi, host), False, False)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        action = f"delete snapshot {snapshot_id} of VM {vm_id}"

        def work(xapi: _PoolSession) -> None:
            found = self._vm_on(xapi, host, vm_id)
            snapshot = None if found is None else self._snapshots(xapi, found[1]).get(snapshot_id)
            if snapshot is not None:
                self._destroy_snapshot(xapi, action, snapshot[0])

        self._call(host, action, work)

    def _destroy_snapshot(self, xapi: _PoolSession, action: str, snapshot: str) -> None:
        """A snapshot is a VM record plus its disks: XAPI's VM.destroy would orphan the disks."""
        record = xapi.call("VM.get_record", snapshot)
        vdis = [xapi.call("VBD.get_VDI", vbd) for vbd in record["VBDs"]]
        if record["suspend_VDI"] != NULL_REF:
            vdis.append(record["suspend_VDI"])
        self._task(xapi, action, "VM.destroy", snapshot)
        for vdi in vdis:
            if vdi != NULL_REF:
                self._task(xapi, action, "VDI.destroy", vdi)

    # -- volume attachment -----------------------------------------------------------------
    def _disks(self, xapi: _PoolSession, vm: str) -> list[tuple[str, Record, str]]:
        """(VBD ref, VBD record, Stratus volume id) of each Stratus disk plugged into the VM."""
        disks = []
        for vbd in xapi.call("VM.get_VBDs", vm):
            record = xapi.call("VBD.get_record", vbd)
            if record["type"] != "Disk" or record["VDI"] == NULL_REF:
                continue
            volume_id = xapi.call("VDI.get_other_config", record["VDI"]).get(VOLUME_ID_KEY)
            if volume_id:
                disks.append((str(vbd), record, str(volume_id)))
        return disks

    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        def work(xapi: _PoolSession) -> list[VolumeAttachment]:
            vm, _ = self._vm(xapi, host, vm_id)
            return [
                VolumeAttachment(vm_id, volume_id, int(record["userdevice"]))
                for _, record, volume_id in self._disks(xapi, vm)
            ]

        return self._call(host, f"list volumes of VM {vm_id}", work)

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        action = f"attach volume {volume.volume_id} to VM {vm_id}"

        def work(xapi: _PoolSession) -> VolumeAttachment:
            vm, record = self._vm(xapi, host, vm_id)
            vbd = None
            for ref, vbd_record, volume_id in self._disks(xapi, vm):
                if volume_id == volume.volume_id:
                    vbd, device_id_found = ref, int(vbd_record["userdevice"])
                    break
                if vbd_record["userdevice"] == str(device_id):
                    raise DriverError(f"device {device_id} of VM {vm_id} is in use")
            else:
                vdi = self._volume(xapi, volume.volume_id)
                if vdi is None:
                    raise DriverError(f"volume {volume.volume_id} is not in the XenServer pool")
                vbd, device_id_found = self._create_vbd(xapi, vm, vdi, device_id), device_id
            running = record["power_state"] == "Running"
            if running and not xapi.call("VBD.get_currently_attached", vbd):
                self._task(xapi, action, "VBD.plug", vbd)
            return VolumeAttachment(vm_id, volume.volume_id, device_id_found)

        return self._call(host, action, work)

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        action = f"detach volume {volume_id} from VM {vm_id}"

        def work(xapi: _PoolSession) -> None:
            vm, _ = self._vm(xapi, host, vm_id)
            for vbd, record, found_id in self._disks(xapi, vm):
                if found_id != volume_id:
                    continue
                if record["currently_attached"]:
                    self._task(xapi, action, "VBD.unplug", vbd)
                xapi.call("VBD.destroy", vbd)

        self._call(host, action, work)

    # -- migration -------------------------------------------------------------------------
    def copy_volume(
        self,
        host: HostRef,
        source_pool: StoragePoolRef,
        target_pool: StoragePoolRef,
        volume_id: str,
    ) -> VolumeInfo:
        raise UnsupportedOperationError(
            f"cannot move volume {volume_id} from {source_pool.name} to {target_pool.name}: "
            "copying a disk between storage repositories is not implemented for XenServer yet "
            "(it needs VDI.copy through the pool master)"
        )

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        action = f"migrate VM {vm_id} from {source_host.name} to {target_host.name}"
        if source_host.cluster_id != target_host.cluster_id:
            raise UnsupportedOperationError(
                f"{action}: pool_migrate moves VMs within one pool; the hosts are in "
                f"clusters {source_host.cluster_id} and {target_host.cluster_id}"
            )

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            target = self._host(xapi, target_host, live=True)
            vm = self._lookup(xapi, vm_id)
            if vm is None:
                raise DriverError(f"VM {vm_id} is not defined in the pool of {source_host.name}")
            record = xapi.call("VM.get_record", vm)
            if self._home(record) == target:
                return self._info(record, target_host)  # a retry: it already moved
            if self._home(record) != self._host(xapi, source_host):
                raise DriverError(f"VM {vm_id} is not on host {source_host.name}")
            if record["power_state"] != "Running":
                raise DriverError(f"VM {vm_id} is not running; live migration needs it running")
            self._task(xapi, action, "VM.pool_migrate", vm, target, {"live": "true"})
            xapi.call("VM.set_affinity", vm, target)
            return self._refresh(xapi, vm, target_host)

        return self._call(source_host, action, work)


def _task_value(result: str) -> Any:
    """Decode a task result: XAPI returns the XML-RPC `<value>` of it as a string."""
    if not result:
        return ""
    document = f"<methodResponse><params><param>{result}</param></params></methodResponse>"
    (value,), _ = xmlrpc.client.loads(document)
    return value
