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

Volume snapshots go as CloudStack's XenServer resource takes them: `VDI.snapshot` on the primary
SR, backed up by `VDI.copy` into an SR standing for the zone's secondary storage (created once
with `SR.create`, named `stratus-secondary:<store id>`, plugged where needed); reverts, volumes
and templates from a snapshot are `VDI.copy` of that backup. Snapshots carry
`stratus_snapshot_id`, backups `stratus_backup_of` and templates `stratus_template_id`. Every
copy goes into a VDI the driver made first, tagged as pending for its Stratus id, and every
snapshot is taken of a disk marked with the snapshot id it is for, so a copy or a snapshot whose
answer was lost is found by the retry (or by the delete that undoes it), never left behind.

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
import json
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Collection, Mapping, Sequence
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
    SecondaryStorageRef,
    SnapshotInfo,
    StoragePoolRef,
    TemplateRef,
    UnsupportedOperationError,
    VirtualMachineInfo,
    VirtualMachineSpec,
    VolumeAttachment,
    VolumeInfo,
    VolumeSnapshotInfo,
    VolumeSpec,
)

T = TypeVar("T")
Record = dict[str, Any]

NULL_REF = "OpaqueRef:NULL"
VM_ID_KEY = "stratus_vm_id"
VOLUME_ID_KEY = "stratus_volume_id"
PENDING_PREFIX = "stratus-pending:"
SNAPSHOT_PREFIX = "stratus-snapshot:"
#: Every Stratus tag in an `other_config` starts so.
TAG_PREFIX = "stratus_"
#: A volume snapshot on primary storage: its Stratus id and its volume's.
SNAPSHOT_ID_KEY = "stratus_snapshot_id"
SNAPSHOT_VOLUME_KEY = "stratus_snapshot_volume_id"
#: A backup on the secondary storage SR: the snapshot it keeps.
BACKUP_KEY = "stratus_backup_of"
#: A template image on the secondary storage SR: its Stratus template id.
TEMPLATE_KEY = "stratus_template_id"
#: On backups and templates: the uuid of the VDI the tags were given to (a copy inherits them).
OWNER_KEY = "stratus_tagged_vdi"
#: A VDI made to be copied into, not done yet: what it is for (`<kind>:<Stratus id>`, see
#: `_copy`).
COPY_KEY = "stratus_copy_for"
#: On a volume while it is being snapshotted (and so on the snapshot XAPI takes of it): the
#: snapshot id it is taken for.
SNAPSHOT_PENDING_KEY = "stratus_snapshot_pending"
#: A revert in progress: the copy to swap in (volume, snapshot, plugs to move) and the disk
#: it replaces.
REVERT_KEY = "stratus_revert_of"
REVERT_SNAPSHOT_KEY = "stratus_revert_snapshot_id"
REVERT_PLUGS_KEY = "stratus_revert_plugs"
REPLACED_KEY = "stratus_replaced_volume_id"
VOLUME_SNAPSHOT_PREFIX = "stratus-volume-snapshot:"
BACKUP_PREFIX = "stratus-backup:"
TEMPLATE_PREFIX = "stratus-template:"
SECONDARY_PREFIX = "stratus-secondary:"
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
    "SR_UNKNOWN_DRIVER",
    "VDI_NOT_IN_MAP",
    "FEATURE_RESTRICTED",
    "LICENCE_RESTRICTION",
    "VM_LACKS_FEATURE",
    "VM_LACKS_FEATURE_SUSPEND",
    "VM_LACKS_FEATURE_VCPU_HOTPLUG",
}
#: The host has no room, whatever our books say (533).
#: SR_BACKEND_FAILURE_44 is the storage manager's "There is insufficient space": how an SR the
#: SM backends run (NFS and file SRs among them) says it is full, where XAPI says SR_FULL.
_NO_ROOM = {
    "HOST_NOT_ENOUGH_FREE_MEMORY",
    "HOST_NOT_ENOUGH_PCPUS",
    "SR_FULL",
    "SR_BACKEND_FAILURE_44",
}
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
    "SR_NO_PBDS",
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
    "PBD_EXISTS",
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
        self._stores_lock = threading.Lock()
        self._store_locks: dict[str, threading.Lock] = {}

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

    @staticmethod
    def _template_image(xapi: _PoolSession, template: TemplateRef) -> tuple[str, Record] | None:
        """The template image made from a snapshot (a VDI on a secondary storage SR, found by
        its template id), if the template is one."""
        for ref, record in xapi.call("VDI.get_all_records").items():
            config = record["other_config"]
            if (
                config.get(TEMPLATE_KEY) == template.template_id
                and config.get(OWNER_KEY) == record["uuid"]
            ):
                return str(ref), record
        return None

    @staticmethod
    def _template_disk(xapi: _PoolSession, template: TemplateRef) -> str:
        """The system disk of the XAPI template VM named as the template."""
        name = template.name
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
                image = self._template_image(xapi, spec.template)
                if image is None:
                    source = self._template_disk(xapi, spec.template)
                else:
                    # On a secondary storage SR, which may have been unplugged since.
                    source = image[0]
                    self._plug_store_sr(xapi, action, host, image[1]["SR"])
                vdi = self._copy(
                    xapi,
                    action,
                    source,
                    sr,
                    _copy_for("volume", spec.volume_id),
                    spec.name,
                    f"Stratus volume {spec.volume_id}",
                    spec.size_bytes,
                )
                self._retag(xapi, vdi, {VOLUME_ID_KEY: spec.volume_id})
            return self._volume_info(xapi, vdi, spec.volume_id, pool)

        return self._call(host, action, work)

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        action = f"delete volume {volume_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> None:
            sr = self._sr(xapi, pool)
            vdi = self._volume(xapi, volume_id, sr)
            if vdi is not None:
                self._task(xapi, action, "VDI.destroy", vdi)
            # What a create or a revert whose answer was lost left half-made.
            for kind in ("volume", "revert"):
                for ref, _ in self._vdis(
                    xapi, {sr}, COPY_KEY, _copy_for(kind, volume_id), snapshot=False
                ):
                    self._task(xapi, action, "VDI.destroy", ref)

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

    # -- volume snapshots (issue 3) --------------------------------------------------------
    # As CloudStack does on XenServer: VDI.snapshot on the primary SR; the zone's secondary
    # storage attached to the pool as an SR of its own (SR.create, found again by name), the
    # backup a VDI.copy of the snapshot into it; reverts, new volumes and templates are
    # VDI.copy of the backup. A VDI XAPI makes is known to Stratus before its answer comes
    # back, so a retry after a lost answer finds it instead of making another: a copy goes
    # into a target made and tagged pending first (`_copy`), a snapshot inherits the disk's
    # mark for it (`snapshot_volume`). Once made, each is tagged done in one
    # `set_other_config`.
    #
    # XAPI's VDI.copy into an SR (and VDI.snapshot) carry the source's `other_config` over: a
    # copy of a backup made so wears the backup's tags. Tags that a copy must not inherit
    # (backups, templates) therefore name the uuid of the VDI they were given to, and are
    # believed only there (`owned`).

    @staticmethod
    def _vdis(
        xapi: _PoolSession,
        srs: Collection[str],
        key: str,
        value: str,
        *,
        snapshot: bool | None = None,
        owned: bool = False,
    ) -> list[tuple[str, Record]]:
        """The VDIs in `srs` tagged `key`=`value` (snapshots only, or none, if `snapshot`)."""
        found = []
        for ref, record in xapi.call("VDI.get_all_records").items():
            config = record["other_config"]
            if record["SR"] not in srs or config.get(key) != value:
                continue
            if snapshot is not None and bool(record["is_a_snapshot"]) != snapshot:
                continue
            if owned and config.get(OWNER_KEY) != record["uuid"]:
                continue
            found.append((str(ref), record))
        return found

    @staticmethod
    def _retag(
        xapi: _PoolSession, vdi: str, tags: Mapping[str, str], *, owned: bool = False
    ) -> None:
        """Replace the VDI's Stratus tags by `tags` in one call (other keys are kept), so no
        crash leaves it half tagged; with `owned`, the tags name this VDI's uuid."""
        config = {
            key: value
            for key, value in xapi.call("VDI.get_other_config", vdi).items()
            if not key.startswith(TAG_PREFIX)
        }
        config.update(tags)
        if owned:
            config[OWNER_KEY] = str(xapi.call("VDI.get_uuid", vdi))
        xapi.call("VDI.set_other_config", vdi, config)

    @staticmethod
    def _store_srs(xapi: _PoolSession, secondary: SecondaryStorageRef) -> list[str]:
        """The SRs standing for the secondary store (normally one), without making any."""
        return [str(sr) for sr in xapi.call("SR.get_by_name_label", _store_label(secondary))]

    def _store_lock(self, label: str) -> threading.Lock:
        """The lock of one secondary storage SR (by its name): making the SR or a PBD of it is
        check-then-create, so this worker's jobs on one store take turns; other stores wait for
        nothing (an SR.create may take up to `task_timeout`)."""
        with self._stores_lock:
            return self._store_locks.setdefault(label, threading.Lock())

    def _secondary_sr(
        self, xapi: _PoolSession, action: str, host: HostRef, secondary: SecondaryStorageRef
    ) -> str:
        """The SR of the secondary store, plugged on `host`: found by its name, or created.

        The name is given by SR.create itself, so an SR made by an attempt whose answer was
        lost is found by the retry; the store's lock keeps two jobs of this worker from making
        two.
        """
        host_ref = self._host(xapi, host, live=True)
        with self._store_lock(_store_label(secondary)):
            srs = self._store_srs(xapi, secondary)
            if srs:
                sr = srs[0]
            else:
                kind, device_config = _store_device_config(secondary)
                sr = str(
                    self._task(
                        xapi,
                        action,
                        "SR.create",
                        host_ref,
                        device_config,
                        "0",
                        _store_label(secondary),
                        f"Stratus secondary storage {secondary.name} ({secondary.url})",
                        kind,
                        "user",
                        True,
                        {},
                    )
                )
            self._plug(xapi, action, sr, host_ref, secondary)
        return sr

    def _plug_store_sr(
        self,
        xapi: _PoolSession,
        action: str,
        host: HostRef,
        sr: str,
        secondary: SecondaryStorageRef | None = None,
    ) -> None:
        """Plug an existing secondary storage SR on `host` before a copy out of it or a destroy
        in it: XAPI needs the SR plugged somewhere for both (SR_NO_PBDS), and nothing else plugs
        it again after a host reboot without auto-plug."""
        host_ref = self._host(xapi, host, live=True)
        with self._store_lock(str(xapi.call("SR.get_name_label", sr))):
            self._plug(xapi, action, sr, host_ref, secondary)

    def _plugged_store_srs(
        self, xapi: _PoolSession, action: str, host: HostRef, secondary: SecondaryStorageRef
    ) -> list[str]:
        """The SRs of the secondary store, plugged on `host`; none made (a store never used has
        no SR, so nothing on it)."""
        srs = self._store_srs(xapi, secondary)
        for sr in srs:
            self._plug_store_sr(xapi, action, host, sr, secondary)
        return srs

    def _plug(
        self,
        xapi: _PoolSession,
        action: str,
        sr: str,
        host_ref: str,
        secondary: SecondaryStorageRef | None,
    ) -> None:
        """Make the SR visible on the host (a PBD, plugged), as CloudStack checks before use.

        A PBD is made like the SR's others (or from the store's URL when it has none). Another
        worker may make the host's PBD between the look and the create: XAPI then answers
        PBD_EXISTS, and that PBD is the one to plug.
        """
        pbds = self._pbds(xapi, sr)
        pbd = pbds.get(host_ref)
        if pbd is None:
            if pbds:
                device_config = xapi.call("PBD.get_device_config", next(iter(pbds.values())))
            elif secondary is not None:
                device_config = _store_device_config(secondary)[1]
            else:
                raise DriverError(f"SR {sr} has no PBD to learn its device configuration from")
            try:
                pbd = str(
                    xapi.call(
                        "PBD.create",
                        {
                            "host": host_ref,
                            "SR": sr,
                            "device_config": device_config,
                            "other_config": {},
                        },
                    )
                )
            except XenAPI.Failure as failure:
                pbd = self._pbds(xapi, sr).get(host_ref)
                if str(failure.details[0]) != "PBD_EXISTS" or pbd is None:
                    raise
        if not xapi.call("PBD.get_currently_attached", pbd):
            self._task(xapi, action, "PBD.plug", pbd)

    @staticmethod
    def _pbds(xapi: _PoolSession, sr: str) -> dict[str, str]:
        """The SR's PBDs by host ref."""
        return {
            str(xapi.call("PBD.get_host", pbd)): str(pbd) for pbd in xapi.call("SR.get_PBDs", sr)
        }

    def _copy(
        self,
        xapi: _PoolSession,
        action: str,
        source: str,
        sr: str,
        copy_for: str,
        name: str,
        description: str,
        size: int = 0,
    ) -> str:
        """A full copy of `source` in `sr`, at least `size` bytes big; the caller tags it done.

        XAPI's VDI.copy into an SR makes its target first and hands it back only at the end, so
        an answer lost meanwhile would leave a full-size copy nobody knows. The target is
        therefore made here (VDI.create), tagged `copy_for`, and copied into (`into_vdi`): the
        retry finds it and copies into it again, a delete undoing the job finds it too. A
        pending copy of the wrong size (the retry restores another snapshot) is replaced.
        """
        size = max(size, int(xapi.call("VDI.get_virtual_size", source)))
        target = None
        for ref, record in self._vdis(xapi, {sr}, COPY_KEY, copy_for, snapshot=False):
            if target is None and int(record["virtual_size"]) == size:
                target = ref
            else:
                self._task(xapi, action, "VDI.destroy", ref)
        if target is None:
            target = str(
                xapi.call(
                    "VDI.create",
                    {
                        "name_label": name,
                        "name_description": description,
                        "SR": sr,
                        "virtual_size": str(size),
                        "type": "user",
                        "sharable": False,
                        "read_only": False,
                        "other_config": {COPY_KEY: copy_for},
                        "xenstore_data": {},
                        "sm_config": {},
                        "tags": [],
                    },
                )
            )
        self._task(xapi, action, "VDI.copy", source, sr, NULL_REF, target)
        return target

    @staticmethod
    def _image_location(xapi: _PoolSession, sr: str, record: Record) -> str:
        """Where the image file lies under the store: an NFS SR keeps its VDIs in a folder named
        after the SR, a file SR right in its location."""
        name = f"{record['uuid']}.vhd"
        if xapi.call("SR.get_type", sr) == "nfs":
            return f"{xapi.call('SR.get_uuid', sr)}/{name}"
        return name

    def _backup(
        self, xapi: _PoolSession, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> tuple[str, Record] | None:
        found = self._vdis(
            xapi, self._store_srs(xapi, secondary), BACKUP_KEY, snapshot_id, owned=True
        )
        return found[0] if found else None

    def _backup_or_fail(
        self, xapi: _PoolSession, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> tuple[str, Record]:
        backup = self._backup(xapi, secondary, snapshot_id)
        if backup is None:
            raise DriverError(
                f"snapshot {snapshot_id} has no backup on secondary storage {secondary.name}"
            )
        return backup

    def _backup_info(
        self,
        xapi: _PoolSession,
        secondary: SecondaryStorageRef,
        backup: tuple[str, Record],
        snapshot_id: str,
        volume_id: str,
    ) -> VolumeSnapshotInfo:
        _, record = backup
        location = self._image_location(xapi, record["SR"], record)
        return VolumeSnapshotInfo(
            snapshot_id,
            record["other_config"].get(SNAPSHOT_VOLUME_KEY, volume_id),
            f"{secondary.path.rstrip('/')}/{location}",
            int(record["virtual_size"]),
        )

    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        """XAPI snapshots a disk in use too. VDI.snapshot takes no tags, and the snapshot it
        makes inherits the disk's `other_config`: the disk is marked with the snapshot id first,
        so a snapshot whose answer was lost wears it and the retry (or the delete undoing the
        job) finds it; the snapshot is then retagged in one call and the mark taken off the
        disk."""
        action = f"snapshot volume {volume_id} as {snapshot_id}"

        def work(xapi: _PoolSession) -> VolumeSnapshotInfo:
            sr = self._sr(xapi, pool)
            vdi = self._volume(xapi, volume_id, sr)
            found = self._vdis(xapi, {sr}, SNAPSHOT_ID_KEY, snapshot_id, snapshot=True)
            if found:
                ref, record = found[0]
            else:
                if vdi is None:
                    raise DriverError(f"volume {volume_id} is not in SR {pool.name}")
                pending = self._pending_snapshots(xapi, sr, snapshot_id, of=vdi)
                if pending:
                    ref = pending[0]
                else:
                    self._mark_snapshot(xapi, vdi, snapshot_id)
                    ref = str(self._task(xapi, action, "VDI.snapshot", vdi, {}))
                tags = {SNAPSHOT_ID_KEY: snapshot_id, SNAPSHOT_VOLUME_KEY: volume_id}
                self._retag(xapi, ref, tags)
                xapi.call("VDI.set_name_label", ref, VOLUME_SNAPSHOT_PREFIX + snapshot_id)
                xapi.call(
                    "VDI.set_name_description",
                    ref,
                    f"Stratus snapshot {snapshot_id} of volume {volume_id}",
                )
                record = xapi.call("VDI.get_record", ref)
            if vdi is not None:
                self._unmark_snapshot(xapi, vdi, snapshot_id)
            return VolumeSnapshotInfo(
                snapshot_id,
                record["other_config"].get(SNAPSHOT_VOLUME_KEY, volume_id),
                f"{pool.name}/{record['uuid']}",
                int(record["virtual_size"]),
            )

        return self._call(host, action, work)

    @staticmethod
    def _mark_snapshot(xapi: _PoolSession, vdi: str, snapshot_id: str) -> None:
        """Mark the disk as being snapshotted for `snapshot_id` (the key's own map calls, so no
        other key of the disk is written over)."""
        if xapi.call("VDI.get_other_config", vdi).get(SNAPSHOT_PENDING_KEY) == snapshot_id:
            return
        xapi.call("VDI.remove_from_other_config", vdi, SNAPSHOT_PENDING_KEY)
        xapi.call("VDI.add_to_other_config", vdi, SNAPSHOT_PENDING_KEY, snapshot_id)

    @staticmethod
    def _unmark_snapshot(xapi: _PoolSession, vdi: str, snapshot_id: str) -> None:
        """Take the disk's mark off if it is this snapshot's (a later one may have its own)."""
        if xapi.call("VDI.get_other_config", vdi).get(SNAPSHOT_PENDING_KEY) == snapshot_id:
            xapi.call("VDI.remove_from_other_config", vdi, SNAPSHOT_PENDING_KEY)

    @staticmethod
    def _pending_snapshots(
        xapi: _PoolSession, sr: str, snapshot_id: str, *, of: str | None = None
    ) -> list[str]:
        """Snapshots XAPI took for `snapshot_id` (of the disk `of`) that were never retagged.

        A VM snapshot taken while the mark was on the disk wears it too; its disks are plugged
        into the snapshot VM, which a VDI.snapshot never is, so they are left alone.
        """
        return [
            str(ref)
            for ref, record in xapi.call("VDI.get_all_records").items()
            if record["SR"] == sr
            and record["is_a_snapshot"]
            and record["other_config"].get(SNAPSHOT_PENDING_KEY) == snapshot_id
            and SNAPSHOT_ID_KEY not in record["other_config"]
            and not record["VBDs"]
            and (of is None or record["snapshot_of"] == of)
        ]

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        action = f"back up snapshot {snapshot_id} of volume {volume_id} to {secondary.name}"

        def work(xapi: _PoolSession) -> VolumeSnapshotInfo:
            backup = self._backup(xapi, secondary, snapshot_id)
            if backup is None:
                sr = self._sr(xapi, pool)
                found = [
                    ref
                    for ref, record in self._vdis(
                        xapi, {sr}, SNAPSHOT_ID_KEY, snapshot_id, snapshot=True
                    )
                    if record["other_config"].get(SNAPSHOT_VOLUME_KEY) == volume_id
                ]
                if not found:
                    raise DriverError(
                        f"snapshot {snapshot_id} of volume {volume_id} is not on primary "
                        f"storage {pool.name}; nothing to back up"
                    )
                target = self._secondary_sr(xapi, action, host, secondary)
                ref = self._copy(
                    xapi,
                    action,
                    found[0],
                    target,
                    _copy_for("backup", snapshot_id),
                    BACKUP_PREFIX + snapshot_id,
                    f"Stratus backup of snapshot {snapshot_id} of volume {volume_id}",
                )
                self._retag(
                    xapi, ref, {BACKUP_KEY: snapshot_id, SNAPSHOT_VOLUME_KEY: volume_id}, owned=True
                )
                backup = (ref, xapi.call("VDI.get_record", ref))
            return self._backup_info(xapi, secondary, backup, snapshot_id, volume_id)

        return self._call(host, action, work)

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        action = f"delete snapshot {snapshot_id} of volume {volume_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> None:
            sr = self._sr(xapi, pool)
            doomed = [
                ref
                for ref, _ in self._vdis(xapi, {sr}, SNAPSHOT_ID_KEY, snapshot_id, snapshot=True)
            ]
            # A snapshot whose answer was lost, never tagged, and the disk's mark for it.
            doomed += self._pending_snapshots(xapi, sr, snapshot_id)
            for ref in doomed:
                self._task(xapi, action, "VDI.destroy", ref)
            vdi = self._volume(xapi, volume_id, sr)
            if vdi is not None:
                self._unmark_snapshot(xapi, vdi, snapshot_id)

        self._call(host, action, work)

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        action = f"delete backup of snapshot {snapshot_id} on {secondary.name}"

        def work(xapi: _PoolSession) -> None:
            srs = self._plugged_store_srs(xapi, action, host, secondary)
            # The backup, a backup copy whose answer was lost, and what an earlier version of
            # this driver could leave there: copies that still wear the tags of the backup or
            # of the primary snapshot (never a backup or a template themselves).
            doomed = self._vdis(xapi, srs, BACKUP_KEY, snapshot_id)
            doomed += self._vdis(xapi, srs, COPY_KEY, _copy_for("backup", snapshot_id))
            doomed += self._vdis(xapi, srs, SNAPSHOT_ID_KEY, snapshot_id, snapshot=False)
            for ref, _ in doomed:
                self._task(xapi, action, "VDI.destroy", ref)

        self._call(host, action, work)

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        """A fresh copy of the backup takes the disk's place, its size included (XAPI cannot
        shrink a VDI that grew since, so VDI.copy into_vdi would keep the grown size).

        The copy is made as every copy is (`_copy`, found again if its answer is lost), then
        tagged as pending for the volume, with the plugs (VM, device) to move onto it; then the
        plugs move, the old disk is marked replaced, the copy takes the volume's tag and the old
        disk is destroyed. Each step is one XAPI call that checks first, so a retry after a
        crash anywhere finishes the swap it finds before doing anything else.
        """
        action = f"revert volume {volume_id} to snapshot {snapshot_id}"

        def work(xapi: _PoolSession) -> VolumeInfo:
            backup, backup_record = self._backup_or_fail(xapi, secondary, snapshot_id)
            sr = self._sr(xapi, pool)
            current = self._volume(xapi, volume_id, sr)
            replaced = [
                ref for ref, _ in self._vdis(xapi, {sr}, REPLACED_KEY, volume_id, snapshot=False)
            ]
            for fresh, record in self._vdis(xapi, {sr}, REVERT_KEY, volume_id, snapshot=False):
                previous = current or (replaced[0] if replaced else None)
                self._swap(xapi, action, volume_id, fresh, record, previous)
                current, replaced = fresh, []
                if record["other_config"].get(REVERT_SNAPSHOT_KEY) == snapshot_id:
                    return self._volume_info(xapi, fresh, volume_id, pool)
            for ref in replaced:
                self._task(xapi, action, "VDI.destroy", ref)
            if current is None:
                raise DriverError(f"volume {volume_id} is not in SR {pool.name}")
            plugs = self._plugs_of_stopped_vms(xapi, volume_id, current)
            self._plug_store_sr(xapi, action, host, backup_record["SR"], secondary)
            fresh = self._copy(
                xapi,
                action,
                backup,
                sr,
                _copy_for("revert", volume_id),
                xapi.call("VDI.get_name_label", current),
                f"Stratus volume {volume_id} reverted to snapshot {snapshot_id}",
            )
            self._retag(
                xapi,
                fresh,
                {
                    REVERT_KEY: volume_id,
                    REVERT_SNAPSHOT_KEY: snapshot_id,
                    REVERT_PLUGS_KEY: json.dumps(plugs),
                },
            )
            record = xapi.call("VDI.get_record", fresh)
            self._swap(xapi, action, volume_id, fresh, record, current)
            return self._volume_info(xapi, fresh, volume_id, pool)

        return self._call(host, action, work)

    @staticmethod
    def _plugs_of_stopped_vms(xapi: _PoolSession, volume_id: str, vdi: str) -> list[list[str]]:
        """(VM ref, device) of each VBD of the disk; refused if a VM using it is not halted."""
        plugs = []
        for vbd in xapi.call("VDI.get_VBDs", vdi):
            record = xapi.call("VBD.get_record", vbd)
            state = xapi.call("VM.get_power_state", record["VM"])
            if record["currently_attached"] or state != "Halted":
                vm_id = xapi.call("VM.get_other_config", record["VM"]).get(VM_ID_KEY)
                raise DriverError(
                    f"volume {volume_id} is in use by VM {vm_id or record['VM']} ({state}); "
                    "stop it or detach the volume before reverting"
                )
            plugs.append([str(record["VM"]), str(record["userdevice"])])
        return plugs

    def _swap(
        self,
        xapi: _PoolSession,
        action: str,
        volume_id: str,
        fresh: str,
        record: Record,
        previous: str | None,
    ) -> None:
        """Put the pending copy `fresh` in the place of the disk `previous` (see the revert)."""
        plugs = json.loads(record["other_config"].get(REVERT_PLUGS_KEY, "[]"))
        for vm, device in plugs:
            if vm not in xapi.call("VM.get_all"):
                continue  # the VM went away meanwhile: nothing to plug
            vdi_at_device = None
            for vbd in xapi.call("VM.get_VBDs", vm):
                vbd_record = xapi.call("VBD.get_record", vbd)
                if vbd_record["userdevice"] == device and vbd_record["type"] == "Disk":
                    vdi_at_device = vbd_record["VDI"]
                    if vdi_at_device == previous:
                        xapi.call("VBD.destroy", vbd)
                        vdi_at_device = None
                    break
            if vdi_at_device is None:
                self._create_vbd(xapi, vm, fresh, int(device))
        if previous is not None:
            name = xapi.call("VDI.get_name_label", previous)
            description = xapi.call("VDI.get_name_description", previous)
            self._retag(xapi, previous, {REPLACED_KEY: volume_id})
            xapi.call("VDI.set_name_label", fresh, name)
            xapi.call("VDI.set_name_description", fresh, description)
        self._retag(xapi, fresh, {VOLUME_ID_KEY: volume_id})
        if previous is not None:
            self._task(xapi, action, "VDI.destroy", previous)

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        action = f"create volume {spec.volume_id} from snapshot {snapshot_id} in SR {pool.name}"

        def work(xapi: _PoolSession) -> VolumeInfo:
            sr = self._sr(xapi, pool)
            vdi = self._volume(xapi, spec.volume_id, sr)
            if vdi is None:
                backup, backup_record = self._backup_or_fail(xapi, secondary, snapshot_id)
                self._plug_store_sr(xapi, action, host, backup_record["SR"], secondary)
                vdi = self._copy(
                    xapi,
                    action,
                    backup,
                    sr,
                    _copy_for("volume", spec.volume_id),
                    spec.name,
                    f"Stratus volume {spec.volume_id}",
                    spec.size_bytes,
                )
                # Tagged as create_volume tags a volume, in one call.
                self._retag(xapi, vdi, {VOLUME_ID_KEY: spec.volume_id})
            if int(xapi.call("VDI.get_virtual_size", vdi)) < spec.size_bytes:
                self._task(xapi, action, "VDI.resize", vdi, str(spec.size_bytes))
            return self._volume_info(xapi, vdi, spec.volume_id, pool)

        return self._call(host, action, work)

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        action = f"create template {template_id} from snapshot {snapshot_id}"

        def work(xapi: _PoolSession) -> TemplateRef:
            srs = self._store_srs(xapi, secondary)
            found = self._vdis(xapi, srs, TEMPLATE_KEY, template_id, owned=True)
            if found:
                ref, record = found[0]
            else:
                backup, backup_record = self._backup_or_fail(xapi, secondary, snapshot_id)
                target = self._secondary_sr(xapi, action, host, secondary)
                if backup_record["SR"] != target:
                    self._plug_store_sr(xapi, action, host, backup_record["SR"], secondary)
                ref = self._copy(
                    xapi,
                    action,
                    backup,
                    target,
                    _copy_for("template", template_id),
                    TEMPLATE_PREFIX + template_id,
                    f"Stratus template {template_id} from snapshot {snapshot_id}",
                )
                self._retag(xapi, ref, {TEMPLATE_KEY: template_id}, owned=True)
                record = xapi.call("VDI.get_record", ref)
            location = self._image_location(xapi, record["SR"], record)
            return TemplateRef(
                template_id=template_id,
                name=f"from-snapshot-{snapshot_id}",
                url=f"{secondary.url.rstrip('/')}/{location}",
                format="VHD",
                size_bytes=int(record["virtual_size"]),
            )

        return self._call(host, action, work)

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        action = f"delete template {template_id} on {secondary.name}"

        def work(xapi: _PoolSession) -> None:
            srs = self._plugged_store_srs(xapi, action, host, secondary)
            # The template, and a template copy whose answer was lost.
            doomed = self._vdis(xapi, srs, TEMPLATE_KEY, template_id, owned=True)
            doomed += self._vdis(xapi, srs, COPY_KEY, _copy_for("template", template_id))
            for ref, _ in doomed:
                self._task(xapi, action, "VDI.destroy", ref)

        self._call(host, action, work)


def _copy_for(kind: str, stratus_id: str) -> str:
    """What a pending copy is for: `volume`, `revert` (of a volume), `backup` (of a snapshot)
    or `template`, and the Stratus id."""
    return f"{kind}:{stratus_id}"


def _store_label(secondary: SecondaryStorageRef) -> str:
    """The name of the SR standing for a secondary store, given at SR.create."""
    return SECONDARY_PREFIX + secondary.store_id


def _store_device_config(secondary: SecondaryStorageRef) -> tuple[str, dict[str, str]]:
    """The SR type and device_config reaching the store: NFS for an nfs:// export (as
    CloudStack mounts secondary storage), a file SR on the hosts' path for a local folder."""
    parsed = urlparse(secondary.url)
    if parsed.scheme == "nfs":
        if not parsed.hostname:
            raise DriverError(
                f"secondary storage {secondary.name}: {secondary.url} names no server"
            )
        return "nfs", {"server": parsed.hostname, "serverpath": parsed.path or "/"}
    if parsed.scheme in ("", "file"):
        return "file", {"location": secondary.path}
    raise UnsupportedOperationError(
        f"secondary storage {secondary.name} ({parsed.scheme}://) cannot be attached to a "
        "XenServer pool as an SR: NFS or a folder the hosts reach is needed"
    )


def _task_value(result: str) -> Any:
    """Decode a task result: XAPI returns the XML-RPC `<value>` of it as a string."""
    if not result:
        return ""
    document = f"<methodResponse><params><param>{result}</param></params></methodResponse>"
    (value,), _ = xmlrpc.client.loads(document)
    return value
