"""A XenServer pool master for the driver tests: XAPI over XML-RPC, as the `XenAPI` client expects.

No XenServer simulator exists, so this stands in for a pool. It speaks the real wire protocol
(stdlib `xmlrpc.server` on 127.0.0.1, an ephemeral port, a thread) and keeps XAPI's documented
semantics for the calls the Stratus driver makes, and no more:

- `session.login_with_password` answers a session ref; a call with an unknown session fails with
  `SESSION_INVALID` (the client logs in again by itself); bad credentials with
  `SESSION_AUTHENTICATION_FAILED`.
- Every reply is `{"Status": "Success", "Value": ...}` or
  `{"Status": "Failure", "ErrorDescription": [code, params...]}`; refs are `OpaqueRef:<uuid>`;
  an unknown ref is `HANDLE_INVALID [class, ref]`; an unknown call `MESSAGE_METHOD_UNKNOWN`.
- 64-bit integers travel as strings (XML-RPC's `int` is 32-bit), as XAPI sends them.
- `Async.<call>` answers a task ref at once and runs the call in the background; `task.get_status`
  goes `pending` → `success` | `failure`, `task.get_result` is the XML-RPC encoded value
  (`<value>OpaqueRef:…</value>`), `task.get_error_info` the error description.
- Power operations check the state first and fail with `VM_BAD_POWER_STATE [vm, expected,
  actual]`; starting on a dead host fails with `HOST_OFFLINE`, without memory with
  `HOST_NOT_ENOUGH_FREE_MEMORY`; VBDs can only be plugged into running VMs; a VM's VBDs are
  plugged when it starts and unplugged when it halts; `VM.destroy` keeps the VDIs.
- `VM.snapshot` / `VM.checkpoint` make a snapshot VM (with snapshot VDIs, the VM's
  `other_config` copied); `VM.revert` replaces the VM's disks with clones of the snapshot's and
  leaves the VM `Halted`, or `Suspended` for a checkpoint (then `VM.resume`).
- `VDI.create(record)` takes XAPI's record: `name_label`, `name_description`, `SR`,
  `virtual_size`, `type`, `sharable`, `read_only` and `other_config` are required
  (`FIELD_TYPE_ERROR [field]` when missing or of the wrong type), `xenstore_data`, `sm_config`
  and `tags` default to empty.
- `VDI.snapshot` makes a snapshot VDI (`is_a_snapshot`, `snapshot_of`, the disk's name and
  `other_config` copied, live or not). `VDI.copy(vdi, sr[, base_vdi, into_vdi])` makes a full copy
  in `sr` as XAPI does: name, description, `other_config` and tags carried over, `sm_config`
  not; with `into_vdi` it overwrites that VDI's content instead and leaves its record alone
  (`sr` unused; `VDI_TOO_SMALL` if it is smaller).
- A new disk needs room in its SR: a file or NFS SR (run by the SM backend) says
  `SR_BACKEND_FAILURE_44 ["", "There is insufficient space", ""]`, other SRs `SR_FULL`. Every
  storage operation on a VDI (create, snapshot, copy, resize, destroy) needs its SR plugged on
  some host (`SR_NO_PBDS`).
- `SR.create(host, device_config, physical_size, name_label, name_description, type,
  content_type, shared, sm_config)` for `nfs` (device_config `server`, `serverpath`) and `file`
  (`location`) SRs: a PBD per host (every host when shared), plugged; an unknown type is
  `SR_UNKNOWN_DRIVER`. `PBD.create` (`PBD_EXISTS` if the host has one for the SR), `PBD.plug`,
  `PBD.unplug` (plug and unplug are idempotent).

What a guest would read on a disk is kept outside the records (XAPI has no such field): every
copy, snapshot and clone carries it, so a test sees which disk a revert really brought back.

Test hooks (not XAPI): `set_host_live`, `expire_sessions`, `stall` (tasks of a call stay pending),
`calls` (a log of the methods called), `write_disk` / `disk_pattern` (a disk's content),
`unplug_sr` (every PBD of an SR unplugged, as after a host reboot without auto-plug).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import threading
import uuid
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape as xml_escape
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

NULL = "OpaqueRef:NULL"
MIB = 1024 * 1024
GIB = 1024 * MIB

Record = dict[str, Any]


class XapiError(Exception):
    """A XAPI failure: becomes `{"Status": "Failure", "ErrorDescription": [code, *params]}`."""

    def __init__(self, code: str, *params: object) -> None:
        super().__init__(code, *params)
        self.description = [code, *(str(p) for p in params)]


def new_ref() -> str:
    return f"OpaqueRef:{uuid.uuid4()}"


def as_int(value: object, name: str) -> int:
    """XAPI accepts int64 parameters as XML-RPC strings (the usual way) or small ints."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise XapiError("FIELD_TYPE_ERROR", name)
    try:
        return int(value)
    except ValueError:
        raise XapiError("FIELD_TYPE_ERROR", name) from None


@dataclass
class HostSpec:
    name: str
    address: str
    cpu_count: int = 4
    cpu_mhz: int = 2400
    memory_bytes: int = 8 * GIB


class XapiPool:
    """The pool's database and the semantics of the calls on it. Thread safe (one lock)."""

    def __init__(self, username: str, password: str, hosts: list[HostSpec]) -> None:
        self.username = username
        self.password = password
        self.lock = threading.RLock()
        self.db: dict[str, dict[str, Record]] = {
            name: {}
            for name in (
                "pool",
                "host",
                "host_metrics",
                "SR",
                "PBD",
                "VDI",
                "VBD",
                "VIF",
                "VM",
                "network",
                "task",
                "session",
            )
        }
        self.stalled: set[str] = set()
        self.calls: list[str] = []
        #: What a guest would read at the start of each disk (VDI ref → byte pattern).
        self.content: dict[str, int] = {}
        host_refs = [self._add_host(spec) for spec in hosts]
        self.sr = self._new_sr(
            host_refs,
            name_label="Local storage",
            type="ext",
            device_config={"device": "/dev/sdb"},
            physical_size=64 * GIB,
            shared=True,
        )
        self.add("pool", name_label="pool", master=host_refs[0], default_SR=self.sr)
        self.add("network", name_label="guest-net", bridge="xenbr0", VIFs=[], other_config={})
        for ref in host_refs:
            self._add_vm(
                name_label=f"Control domain on host: {self.db['host'][ref]['name_label']}",
                is_control_domain=True,
                power_state="Running",
                resident_on=ref,
            )
        self._add_vm(
            name_label="Other install media",
            is_a_template=True,
            other_config={
                "disks": '<provision><disk device="0" size="8589934592" sr="" '
                'bootable="true" type="system"/></provision>',
                "install-methods": "cdrom",
            },
        )

    # -- records ---------------------------------------------------------------------------
    def add(self, cls: str, **fields: Any) -> str:
        ref = new_ref()
        self.db[cls][ref] = {"uuid": str(uuid.uuid4()), **fields}
        return ref

    def get(self, cls: str, ref: object) -> Record:
        record = self.db[cls].get(str(ref))
        if record is None:
            raise XapiError("HANDLE_INVALID", cls, ref)
        return record

    def _add_host(self, spec: HostSpec) -> str:
        metrics = self.add(
            "host_metrics",
            memory_total=str(spec.memory_bytes),
            memory_free=str(spec.memory_bytes),
            live=True,
            last_updated=xmlrpc.client.DateTime(dt.datetime.now(dt.UTC).timetuple()),
        )
        return self.add(
            "host",
            name_label=spec.name,
            hostname=spec.name,
            address=spec.address,
            enabled=True,
            metrics=metrics,
            resident_VMs=[],
            memory_overhead=str(64 * MIB),
            cpu_info={
                "cpu_count": str(spec.cpu_count),
                "socket_count": "1",
                "vendor": "GenuineIntel",
                "speed": f"{spec.cpu_mhz}.000",
                "modelname": "Stratus Test CPU",
            },
            software_version={"product_version": "8.2.1", "xapi": "1.20"},
            other_config={},
        )

    def _new_sr(
        self,
        hosts: list[str],
        *,
        name_label: str,
        type: str,
        device_config: dict[str, str],
        physical_size: int,
        shared: bool,
        name_description: str = "",
        content_type: str = "user",
    ) -> str:
        sr = self.add(
            "SR",
            name_label=name_label,
            name_description=name_description,
            type=type,
            shared=shared,
            content_type=content_type,
            physical_size=str(physical_size),
            physical_utilisation="0",
            VDIs=[],
            PBDs=[],
            other_config={},
            sm_config={},
        )
        for host in hosts:
            pbd = self.PBD_create(
                {"host": host, "SR": sr, "device_config": device_config, "other_config": {}}
            )
            self.get("PBD", pbd)["currently_attached"] = True
        return sr

    def _add_vm(self, **fields: Any) -> str:
        record: Record = {
            "name_label": "",
            "name_description": "",
            "power_state": "Halted",
            "is_a_template": False,
            "is_a_snapshot": False,
            "is_control_domain": False,
            "snapshot_of": NULL,
            "snapshots": [],
            "snapshot_time": xmlrpc.client.DateTime(0),
            "resident_on": NULL,
            "affinity": NULL,
            "memory_static_min": str(64 * MIB),
            "memory_static_max": str(256 * MIB),
            "memory_dynamic_min": str(256 * MIB),
            "memory_dynamic_max": str(256 * MIB),
            "VCPUs_max": "1",
            "VCPUs_at_startup": "1",
            "VBDs": [],
            "VIFs": [],
            "suspend_VDI": NULL,
            "other_config": {},
        }
        record.update(fields)
        ref = self.add("VM", **record)
        if record["resident_on"] != NULL:
            self.get("host", record["resident_on"])["resident_VMs"].append(ref)
        return ref

    def add_template_vm(self, name: str, disk_bytes: int) -> str:
        """A ready template VM with one system disk, as a user's exported template would be."""
        vm = self._add_vm(name_label=name, is_a_template=True)
        vdi = self._new_vdi(self.sr, name_label=f"{name} disk", virtual_size=disk_bytes)
        self._new_vbd(vm, vdi, "0", bootable=True)
        return vm

    def _new_vdi(self, sr: str, **fields: Any) -> str:
        record = {
            "name_label": "",
            "name_description": "",
            "SR": sr,
            "virtual_size": "0",
            "physical_utilisation": "0",
            "type": "user",
            "sharable": False,
            "read_only": False,
            "is_a_snapshot": False,
            "snapshot_of": NULL,
            "snapshot_time": xmlrpc.client.DateTime(0),
            "VBDs": [],
            "other_config": {},
            "sm_config": {},
            "xenstore_data": {},
            "tags": [],
        }
        record.update(fields)
        record["virtual_size"] = str(record["virtual_size"])
        ref = self.add("VDI", **record)
        self.get("SR", sr)["VDIs"].append(ref)
        return ref

    def _new_vbd(self, vm: str, vdi: str, userdevice: str, *, bootable: bool = False) -> str:
        ref = self.add(
            "VBD",
            VM=vm,
            VDI=vdi,
            userdevice=userdevice,
            device="",
            bootable=bootable,
            mode="RW",
            type="Disk",
            empty=False,
            unpluggable=True,
            currently_attached=False,
            other_config={},
            qos_algorithm_type="",
            qos_algorithm_params={},
        )
        self.get("VM", vm)["VBDs"].append(ref)
        self.get("VDI", vdi)["VBDs"].append(ref)
        return ref

    # -- sessions --------------------------------------------------------------------------
    def login(self, username: str, password: str, *_version: object) -> str:
        if (username, password) != (self.username, self.password):
            raise XapiError("SESSION_AUTHENTICATION_FAILED", username, "Authentication failure")
        return self.add("session", this_user=username)

    def check_session(self, session: object) -> None:
        if str(session) not in self.db["session"]:
            raise XapiError("SESSION_INVALID", session)

    def expire_sessions(self) -> None:
        """Test hook: as after a pool master restart, every session is forgotten."""
        with self.lock:
            self.db["session"].clear()

    def write_disk(self, vdi: str, pattern: int) -> None:
        """Test hook: a guest fills the start of the disk with the byte `pattern`."""
        with self.lock:
            self.get("VDI", vdi)
            self.content[vdi] = pattern

    def disk_pattern(self, vdi: str) -> int:
        """Test hook: the byte the start of the disk holds (0 for a disk never written)."""
        with self.lock:
            self.get("VDI", vdi)
            return self.content.get(vdi, 0)

    def unplug_sr(self, sr: str) -> None:
        """Test hook: every PBD of the SR unplugged, as after a reboot without auto-plug."""
        with self.lock:
            for pbd in self.get("SR", sr)["PBDs"]:
                self.get("PBD", pbd)["currently_attached"] = False

    def set_host_live(self, name: str, live: bool) -> None:
        """Test hook: the host stops (or resumes) heartbeating; its metrics say so."""
        with self.lock:
            host = next(h for h in self.db["host"].values() if h["name_label"] == name)
            self.get("host_metrics", host["metrics"])["live"] = live

    # -- helpers ---------------------------------------------------------------------------
    def vm(self, ref: object) -> Record:
        return self.get("VM", ref)

    def check_power(self, ref: str, *allowed: str) -> Record:
        record = self.vm(ref)
        if record["is_a_template"] or record["is_a_snapshot"]:
            raise XapiError("VM_IS_TEMPLATE", ref)
        if record["power_state"] not in allowed:
            raise XapiError(
                "VM_BAD_POWER_STATE", ref, allowed[0].lower(), record["power_state"].lower()
            )
        return record

    def check_live(self, host: str) -> Record:
        record = self.get("host", host)
        if not self.get("host_metrics", record["metrics"])["live"]:
            raise XapiError("HOST_OFFLINE", host)
        return record

    def free_memory(self, host: str) -> int:
        record = self.get("host", host)
        total = int(self.get("host_metrics", record["metrics"])["memory_total"])
        used = sum(
            int(self.vm(vm)["memory_static_max"])
            for vm in record["resident_VMs"]
            if not self.vm(vm)["is_control_domain"]
        )
        return total - int(record["memory_overhead"]) - used

    def place(self, vm: str, host: str) -> None:
        record = self.vm(vm)
        if record["resident_on"] != NULL:
            self.get("host", record["resident_on"])["resident_VMs"].remove(vm)
        record["resident_on"] = host
        if host != NULL:
            self.get("host", host)["resident_VMs"].append(vm)

    def set_attached(self, vm: str, attached: bool) -> None:
        for vbd in self.vm(vm)["VBDs"]:
            self.get("VBD", vbd)["currently_attached"] = attached

    def halt(self, vm: str) -> None:
        """Power off: disks unplugged, off its host, any suspend image discarded."""
        record = self.vm(vm)
        self.set_attached(vm, False)
        self.place(vm, NULL)
        record["power_state"] = "Halted"
        self.drop_suspend_image(vm)

    def drop_suspend_image(self, vm: str) -> None:
        record = self.vm(vm)
        if record["suspend_VDI"] != NULL:
            self._destroy_vdi(record["suspend_VDI"])
            record["suspend_VDI"] = NULL

    def clone_vdi(self, vdi: str, *, sr: str | None = None, snapshot: bool = False) -> str:
        source = self.get("VDI", vdi)
        fields = {k: copy.deepcopy(v) for k, v in source.items() if k not in ("uuid", "VBDs", "SR")}
        fields.update(is_a_snapshot=snapshot, snapshot_of=vdi if snapshot else NULL)
        if snapshot:
            fields["snapshot_time"] = xmlrpc.client.DateTime(dt.datetime.now(dt.UTC).timetuple())
        clone = self._new_vdi(sr or source["SR"], **fields)
        if vdi in self.content:
            self.content[clone] = self.content[vdi]
        return clone

    def check_room(self, sr: str, size: int) -> None:
        """Fails unless the SR holds `size` more bytes of disks: the SM backend of a file or NFS
        SR raises its error 44 (SRNoSpace), as XenServer reports it; XAPI's own check SR_FULL."""
        record = self.get("SR", sr)
        used = sum(int(self.get("VDI", v)["virtual_size"]) for v in record["VDIs"])
        free = int(record["physical_size"]) - used
        if size > free:
            if record["type"] in ("file", "nfs"):
                raise XapiError("SR_BACKEND_FAILURE_44", "", "There is insufficient space", "")
            raise XapiError("SR_FULL", size, free)

    def check_plugged(self, sr: str) -> None:
        """A disk operation needs a host that sees the SR: `SR_NO_PBDS` when none does."""
        record = self.get("SR", sr)
        if not any(self.get("PBD", pbd)["currently_attached"] for pbd in record["PBDs"]):
            raise XapiError("SR_NO_PBDS", sr)

    def disk_vbds(self, vm: str) -> list[str]:
        return [vbd for vbd in self.vm(vm)["VBDs"] if self.get("VBD", vbd)["type"] == "Disk"]

    def disks(self, vm: str) -> list[Record]:
        return [self.get("VBD", vbd) for vbd in self.disk_vbds(vm)]

    # -- VM --------------------------------------------------------------------------------
    def VM_clone(self, vm: str, new_name: str) -> str:
        source = self.vm(vm)
        if source["power_state"] != "Halted":
            raise XapiError("VM_BAD_POWER_STATE", vm, "halted", source["power_state"].lower())
        fields = {
            k: copy.deepcopy(v)
            for k, v in source.items()
            if k not in ("uuid", "VBDs", "VIFs", "snapshots", "resident_on")
        }
        fields.update(name_label=new_name, is_control_domain=False)
        clone = self._add_vm(**fields)
        for vbd in self.disks(vm):
            self._new_vbd(clone, self.clone_vdi(vbd["VDI"]), vbd["userdevice"])
        return clone

    def VM_provision(self, vm: str) -> str:
        """Turn the `disks` provisioning spec of a (cloned) template into VDIs and VBDs."""
        record = self.vm(vm)
        spec = record["other_config"].get("disks")
        if spec:
            pool = next(iter(self.db["pool"].values()))
            for disk in ElementTree.fromstring(spec).iter("disk"):
                sr = disk.get("sr") or pool["default_SR"]
                self.get("SR", sr)
                vdi = self._new_vdi(
                    sr,
                    name_label=f"{record['name_label']} {disk.get('device')}",
                    virtual_size=disk.get("size", "0"),
                    type=disk.get("type", "user"),
                )
                self._new_vbd(
                    vm, vdi, disk.get("device", "0"), bootable=disk.get("bootable") == "true"
                )
            del record["other_config"]["disks"]
        return ""

    def VM_set_memory_limits(
        self, vm: str, static_min: str, static_max: str, dynamic_min: str, dynamic_max: str
    ) -> str:
        values = [as_int(v, "memory") for v in (static_min, dynamic_min, dynamic_max, static_max)]
        if values != sorted(values):
            raise XapiError(
                "MEMORY_CONSTRAINT_VIOLATION",
                "Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= "
                "static_max",
            )
        record = self.vm(vm)
        if not record["is_a_template"]:
            self.check_power(vm, "Halted")
        for key, value in zip(
            ("memory_static_min", "memory_dynamic_min", "memory_dynamic_max", "memory_static_max"),
            values,
            strict=True,
        ):
            record[key] = str(value)
        return ""

    def VM_set_VCPUs_max(self, vm: str, value: str) -> str:
        record = self.vm(vm)
        if record["power_state"] != "Halted":
            raise XapiError("VM_BAD_POWER_STATE", vm, "halted", record["power_state"].lower())
        count = as_int(value, "VCPUs_max")
        if count < 1 or count < int(record["VCPUs_at_startup"]):
            raise XapiError(
                "VALUE_NOT_SUPPORTED", "VCPUs_max", str(value), "below VCPUs_at_startup"
            )
        record["VCPUs_max"] = str(count)
        return ""

    def VM_set_VCPUs_at_startup(self, vm: str, value: str) -> str:
        record = self.vm(vm)
        count = as_int(value, "VCPUs_at_startup")
        if count < 1 or count > int(record["VCPUs_max"]):
            raise XapiError("VALUE_NOT_SUPPORTED", "VCPUs_at_startup", str(value), "above max")
        record["VCPUs_at_startup"] = str(count)
        return ""

    def VM_set_is_a_template(self, vm: str, value: bool) -> str:
        self.vm(vm)["is_a_template"] = bool(value)
        return ""

    def VM_start_on(self, vm: str, host: str, start_paused: bool, force: bool) -> str:
        record = self.check_power(vm, "Halted")
        self.check_live(host)
        needed = int(record["memory_static_max"])
        free = self.free_memory(host)
        if needed > free:
            raise XapiError("HOST_NOT_ENOUGH_FREE_MEMORY", needed, free)
        self.place(vm, host)
        record["power_state"] = "Paused" if start_paused else "Running"
        self.set_attached(vm, True)
        return ""

    def VM_start(self, vm: str, start_paused: bool, force: bool) -> str:
        record = self.vm(vm)
        host = record["affinity"]
        if host == NULL or not self.db["host"].get(host):
            host = next(iter(self.db["host"]))
        return self.VM_start_on(vm, host, start_paused, force)

    def VM_clean_shutdown(self, vm: str) -> str:
        self.check_power(vm, "Running")
        self.halt(vm)
        return ""

    def VM_hard_shutdown(self, vm: str) -> str:
        self.check_power(vm, "Running", "Paused", "Suspended")
        self.halt(vm)
        return ""

    def VM_clean_reboot(self, vm: str) -> str:
        self.check_power(vm, "Running")
        return ""

    def VM_hard_reboot(self, vm: str) -> str:
        self.check_power(vm, "Running", "Paused")
        return ""

    def VM_resume_on(self, vm: str, host: str, start_paused: bool, force: bool) -> str:
        record = self.check_power(vm, "Suspended")
        self.check_live(host)
        self.place(vm, host)
        record["power_state"] = "Paused" if start_paused else "Running"
        self.drop_suspend_image(vm)
        self.set_attached(vm, True)
        return ""

    def VM_resume(self, vm: str, start_paused: bool, force: bool) -> str:
        record = self.vm(vm)
        host = record["affinity"] if record["affinity"] != NULL else next(iter(self.db["host"]))
        return self.VM_resume_on(vm, host, start_paused, force)

    def VM_unpause(self, vm: str) -> str:
        self.check_power(vm, "Paused")["power_state"] = "Running"
        return ""

    def VM_destroy(self, vm: str) -> str:
        record = self.vm(vm)
        if record["is_control_domain"]:
            raise XapiError("OPERATION_NOT_ALLOWED", "cannot destroy a control domain")
        if record["power_state"] != "Halted" and not record["is_a_snapshot"]:
            raise XapiError("VM_BAD_POWER_STATE", vm, "halted", record["power_state"].lower())
        for vbd in list(record["VBDs"]):
            self._destroy_vbd(vbd)
        for vif in list(record["VIFs"]):
            self.db["VIF"].pop(vif, None)
        if record["snapshot_of"] in self.db["VM"]:
            self.vm(record["snapshot_of"])["snapshots"].remove(vm)
        for snapshot in record["snapshots"]:
            self.vm(snapshot)["snapshot_of"] = NULL
        del self.db["VM"][vm]
        return ""

    def _destroy_vbd(self, vbd: str) -> None:
        record = self.db["VBD"].pop(vbd)
        self.vm(record["VM"])["VBDs"].remove(vbd)
        with contextlib.suppress(XapiError, ValueError):
            self.get("VDI", record["VDI"])["VBDs"].remove(vbd)

    def _snapshot(self, vm: str, name: str, *, memory: bool) -> str:
        record = self.vm(vm)
        if record["is_a_template"] or record["is_a_snapshot"]:
            raise XapiError("VM_IS_TEMPLATE", vm)
        if memory:
            self.check_power(vm, "Running")
        fields = {
            k: copy.deepcopy(v)
            for k, v in record.items()
            if k not in ("uuid", "VBDs", "VIFs", "snapshots", "resident_on")
        }
        fields.update(
            name_label=name,
            is_a_snapshot=True,
            snapshot_of=vm,
            power_state="Suspended" if memory else "Halted",
            snapshot_time=xmlrpc.client.DateTime(dt.datetime.now(dt.UTC).timetuple()),
        )
        snapshot = self._add_vm(**fields)
        for vbd in self.disks(vm):
            self._new_vbd(snapshot, self.clone_vdi(vbd["VDI"], snapshot=True), vbd["userdevice"])
        if memory:
            suspend = self._new_vdi(
                record_sr(self, vm),
                name_label="Suspend image",
                type="suspend",
                virtual_size=record["memory_static_max"],
            )
            self.vm(snapshot)["suspend_VDI"] = suspend
        record["snapshots"].append(snapshot)
        return snapshot

    def VM_snapshot(self, vm: str, new_name: str, *_ignore_vdis: object) -> str:
        return self._snapshot(vm, new_name, memory=False)

    def VM_checkpoint(self, vm: str, new_name: str) -> str:
        return self._snapshot(vm, new_name, memory=True)

    def VM_revert(self, snapshot: str) -> str:
        """Replace the VM's disks with clones of the snapshot's, destroying the current ones."""
        record = self.vm(snapshot)
        if not record["is_a_snapshot"] or record["snapshot_of"] not in self.db["VM"]:
            raise XapiError("VM_REVERT_FAILED", snapshot, record["snapshot_of"])
        vm = record["snapshot_of"]
        if self.vm(vm)["power_state"] != "Halted":
            self.halt(vm)
        for vbd in self.disk_vbds(vm):
            old_vdi = self.get("VBD", vbd)["VDI"]
            self._destroy_vbd(vbd)
            self._destroy_vdi(old_vdi)
        for disk in self.disks(snapshot):
            clone = self.clone_vdi(disk["VDI"])
            self.get("VDI", clone)["name_label"] = self.get("VDI", disk["VDI"])["name_label"]
            self._new_vbd(vm, clone, disk["userdevice"], bootable=disk["userdevice"] == "0")
        if record["power_state"] == "Suspended":
            self.vm(vm)["power_state"] = "Suspended"
            self.vm(vm)["suspend_VDI"] = self.clone_vdi(record["suspend_VDI"])
        return ""

    def VM_pool_migrate(self, vm: str, host: str, options: dict[str, str]) -> str:
        record = self.check_power(vm, "Running")
        self.check_live(host)
        if record["resident_on"] == host:
            raise XapiError("OPERATION_NOT_ALLOWED", "VM is already resident on that host")
        needed = int(record["memory_static_max"])
        free = self.free_memory(host)
        if needed > free:
            raise XapiError("HOST_NOT_ENOUGH_FREE_MEMORY", needed, free)
        self.place(vm, host)
        return ""

    # -- VDI / VBD / VIF -------------------------------------------------------------------
    def VDI_create(self, args: Record) -> str:
        """XAPI's VDI.create: a record with the fields that have no default (see the top)."""
        for name, kind in _VDI_CREATE_FIELDS.items():
            if name in args:
                value = args[name]
            elif name in _VDI_CREATE_DEFAULTS:
                value = _VDI_CREATE_DEFAULTS[name]
            else:
                raise XapiError("FIELD_TYPE_ERROR", name)
            if not isinstance(value, kind) or (name == "type" and value not in _VDI_TYPES):
                raise XapiError("FIELD_TYPE_ERROR", name)
        sr = str(args["SR"])
        self.get("SR", sr)
        size = as_int(args["virtual_size"], "virtual_size")
        self.check_plugged(sr)
        self.check_room(sr, size)
        fields = {k: copy.deepcopy(v) for k, v in args.items() if k in _VDI_CREATE_FIELDS}
        fields.update(
            {k: copy.deepcopy(v) for k, v in _VDI_CREATE_DEFAULTS.items() if k not in args}
        )
        del fields["SR"], fields["virtual_size"]
        return self._new_vdi(sr, virtual_size=size, **fields)

    def VDI_snapshot(self, vdi: str, driver_params: object = None) -> str:
        """A point-in-time snapshot VDI in the disk's SR, attached or not (XAPI snapshots live)."""
        self.check_plugged(self.get("VDI", vdi)["SR"])
        return self.clone_vdi(vdi, snapshot=True)

    def VDI_copy(self, vdi: str, sr: str, base_vdi: str = NULL, into_vdi: str = NULL) -> str:
        """A full copy into `sr`, or over `into_vdi`. XAPI creates the new VDI with the source's
        name, description, `other_config` and tags (never its `sm_config`), writable."""
        source = self.get("VDI", vdi)
        if base_vdi != NULL:
            self.get("VDI", base_vdi)
        self.check_plugged(source["SR"])
        if into_vdi != NULL:
            target = self.get("VDI", into_vdi)
            self.check_plugged(target["SR"])
            if int(target["virtual_size"]) < int(source["virtual_size"]):
                raise XapiError("VDI_TOO_SMALL", into_vdi, source["virtual_size"])
            if any(self.get("VBD", vbd)["currently_attached"] for vbd in target["VBDs"]):
                raise XapiError("VDI_IN_USE", into_vdi, "copy")
            self.content.pop(into_vdi, None)
            if vdi in self.content:
                self.content[into_vdi] = self.content[vdi]
            return into_vdi
        self.get("SR", sr)
        self.check_plugged(sr)
        self.check_room(sr, int(source["virtual_size"]))
        copied = self.clone_vdi(vdi, sr=sr)
        self.get("VDI", copied).update(sm_config={}, read_only=False)
        return copied

    def VDI_resize(self, vdi: str, size: str) -> str:
        record = self.get("VDI", vdi)
        new_size = as_int(size, "size")
        self.check_plugged(record["SR"])
        if any(self.get("VBD", vbd)["currently_attached"] for vbd in record["VBDs"]):
            raise XapiError("VDI_IN_USE", vdi, "resize")
        if new_size < int(record["virtual_size"]):
            raise XapiError("VDI_TOO_SMALL", vdi, record["virtual_size"])
        record["virtual_size"] = str(new_size)
        return ""

    def VDI_destroy(self, vdi: str) -> str:
        record = self.get("VDI", vdi)
        self.check_plugged(record["SR"])
        if record["VBDs"]:
            raise XapiError("VDI_IN_USE", vdi, "destroy")
        self._destroy_vdi(vdi)
        return ""

    def _destroy_vdi(self, vdi: str) -> None:
        record = self.db["VDI"].pop(vdi)
        self.content.pop(vdi, None)
        self.get("SR", record["SR"])["VDIs"].remove(vdi)

    # -- SR / PBD --------------------------------------------------------------------------
    def SR_create(
        self,
        host: str,
        device_config: dict[str, str],
        physical_size: object,
        name_label: str,
        name_description: str,
        type: str,
        content_type: str,
        shared: bool,
        sm_config: dict[str, str],
    ) -> str:
        """A new SR on storage the hosts reach, plugged where it is visible."""
        self.check_live(host)
        as_int(physical_size, "physical_size")
        needed = {"nfs": ("server", "serverpath"), "file": ("location",)}.get(type)
        if needed is None:
            raise XapiError("SR_UNKNOWN_DRIVER", type)
        missing = [key for key in needed if not device_config.get(key)]
        if missing:
            raise XapiError(
                "SR_BACKEND_FAILURE", "", "", f"device_config lacks {', '.join(missing)}"
            )
        return self._new_sr(
            list(self.db["host"]) if shared else [host],
            name_label=name_label,
            name_description=name_description,
            type=type,
            device_config=dict(device_config),
            # NFS and file SRs report the size of the store, not what the caller asked for.
            physical_size=256 * GIB,
            shared=bool(shared),
            content_type=content_type,
        )

    def PBD_create(self, args: Record) -> str:
        host = str(args.get("host"))
        sr = str(args.get("SR"))
        self.get("host", host)
        record = self.get("SR", sr)
        if any(self.get("PBD", pbd)["host"] == host for pbd in record["PBDs"]):
            raise XapiError("PBD_EXISTS", sr, host)
        ref = self.add(
            "PBD",
            host=host,
            SR=sr,
            device_config=dict(args.get("device_config", {})),
            currently_attached=False,
            other_config=dict(args.get("other_config", {})),
        )
        record["PBDs"].append(ref)
        return ref

    def PBD_plug(self, pbd: str) -> str:
        record = self.get("PBD", pbd)
        self.check_live(record["host"])
        record["currently_attached"] = True
        return ""

    def PBD_unplug(self, pbd: str) -> str:
        self.get("PBD", pbd)["currently_attached"] = False
        return ""

    def VBD_create(self, args: Record) -> str:
        vm = str(args.get("VM"))
        vdi = str(args.get("VDI"))
        self.vm(vm)
        self.get("VDI", vdi)
        userdevice = str(args.get("userdevice"))
        if any(vbd["userdevice"] == userdevice for vbd in self.disks(vm)):
            raise XapiError("DEVICE_ALREADY_EXISTS", userdevice)
        ref = self._new_vbd(vm, vdi, userdevice, bootable=bool(args.get("bootable")))
        record = self.get("VBD", ref)
        record.update(
            mode=args.get("mode", "RW"),
            type=args.get("type", "Disk"),
            other_config=args.get("other_config", {}),
        )
        return ref

    def VBD_plug(self, vbd: str) -> str:
        record = self.get("VBD", vbd)
        self.check_power(record["VM"], "Running")
        if record["currently_attached"]:
            raise XapiError("DEVICE_ALREADY_ATTACHED", vbd)
        record["currently_attached"] = True
        return ""

    def VBD_unplug(self, vbd: str) -> str:
        record = self.get("VBD", vbd)
        self.check_power(record["VM"], "Running")
        if not record["currently_attached"]:
            raise XapiError("DEVICE_ALREADY_DETACHED", vbd)
        record["currently_attached"] = False
        return ""

    def VBD_destroy(self, vbd: str) -> str:
        if self.get("VBD", vbd)["currently_attached"]:
            raise XapiError("DEVICE_ALREADY_ATTACHED", vbd)
        self._destroy_vbd(vbd)
        return ""

    def VIF_create(self, args: Record) -> str:
        vm = str(args.get("VM"))
        network = str(args.get("network"))
        self.vm(vm)
        self.get("network", network)
        device = str(args.get("device"))
        if any(self.get("VIF", v)["device"] == device for v in self.vm(vm)["VIFs"]):
            raise XapiError("DEVICE_ALREADY_EXISTS", device)
        ref = self.add(
            "VIF",
            VM=vm,
            network=network,
            device=device,
            MAC=str(args.get("MAC", "")),
            MTU=str(args.get("MTU", "1500")),
            other_config=args.get("other_config", {}),
            currently_attached=False,
        )
        self.vm(vm)["VIFs"].append(ref)
        self.get("network", network)["VIFs"].append(ref)
        return ref


#: VDI.create's record: the fields and their XML-RPC types; those with a default in XAPI's
#: datamodel may be left out.
_VDI_CREATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name_label": str,
    "name_description": str,
    "SR": str,
    "virtual_size": (str, int),
    "type": str,
    "sharable": bool,
    "read_only": bool,
    "other_config": dict,
    "xenstore_data": dict,
    "sm_config": dict,
    "tags": list,
}
_VDI_CREATE_DEFAULTS: dict[str, Any] = {"xenstore_data": {}, "sm_config": {}, "tags": []}
_VDI_TYPES = {
    "system",
    "user",
    "ephemeral",
    "suspend",
    "crashdump",
    "ha_statefile",
    "metadata",
    "redo_log",
    "rrd",
    "pvs_cache",
    "cbt_metadata",
}


def record_sr(pool: XapiPool, vm: str) -> str:
    """The SR of a VM's first disk (where XAPI puts a checkpoint's suspend image)."""
    for vbd in pool.disks(vm):
        return str(pool.get("VDI", vbd["VDI"])["SR"])
    return pool.sr


# Fields a client may set with `<class>.set_<field>` (XAPI's read-write fields we need).
_WRITABLE = {
    "VM": {"name_label", "name_description", "other_config", "affinity"},
    "VDI": {"name_label", "name_description", "other_config"},
    "VBD": {"other_config"},
    "SR": {"name_label", "name_description", "other_config"},
    "PBD": {"other_config"},
    "host": {"other_config"},
}
# Calls that run as tasks when called through `Async.` (and any other call, as XAPI allows).
_HANDLERS: dict[str, Callable[..., Any]] = {
    "VM." + name[3:]: getattr(XapiPool, name) for name in dir(XapiPool) if name.startswith("VM_")
}
_HANDLERS.update(
    {
        f"{prefix}.{name[len(prefix) + 1 :]}": getattr(XapiPool, name)
        for prefix in ("VDI", "VBD", "VIF", "SR", "PBD")
        for name in dir(XapiPool)
        if name.startswith(prefix + "_")
    }
)


class XapiDispatcher:
    """Turns XML-RPC calls into pool operations and XAPI's reply envelopes."""

    def __init__(self, pool: XapiPool, task_delay: float) -> None:
        self.pool = pool
        self.task_delay = task_delay

    def _dispatch(self, method: str, params: tuple[Any, ...]) -> Record:
        try:
            return {"Status": "Success", "Value": self.call(method, params)}
        except XapiError as error:
            return {"Status": "Failure", "ErrorDescription": error.description}

    def call(self, method: str, params: tuple[Any, ...]) -> Any:
        pool = self.pool
        with pool.lock:
            pool.calls.append(method)
            if method == "session.login_with_password":
                return pool.login(*params)
            if not params:
                raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, 1, 0)
            session, *args = params
            pool.check_session(session)
            if method == "session.logout":
                pool.db["session"].pop(str(session), None)
                return ""
            if method.startswith("Async."):
                return self._start_task(method.removeprefix("Async."), args)
            return self._sync(method, args)

    def _sync(self, method: str, args: list[Any]) -> Any:
        pool = self.pool
        cls, _, name = method.partition(".")
        if method in _HANDLERS:
            return _HANDLERS[method](pool, *args)
        if method.startswith("task."):
            return self._task(name, args)
        if cls not in pool.db or cls == "session":
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        table = pool.db[cls]
        if name == "get_all":
            return list(table)
        if name == "get_all_records":
            return {ref: copy.deepcopy(record) for ref, record in table.items()}
        if name == "get_record":
            return copy.deepcopy(pool.get(cls, _one(method, args)))
        if name == "get_by_uuid":
            wanted = _one(method, args)
            for ref, record in table.items():
                if record["uuid"] == wanted:
                    return ref
            raise XapiError("UUID_INVALID", cls, wanted)
        if name == "get_by_name_label":
            wanted = _one(method, args)
            return [ref for ref, record in table.items() if record.get("name_label") == wanted]
        if name.startswith("get_"):
            field = name.removeprefix("get_")
            record = pool.get(cls, _one(method, args))
            if field not in record:
                raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
            return copy.deepcopy(record[field])
        if name.startswith(("set_", "add_to_", "remove_from_")) and len(args) >= 2:
            return self._write(cls, name, method, args)
        raise XapiError("MESSAGE_METHOD_UNKNOWN", method)

    def _write(self, cls: str, name: str, method: str, args: list[Any]) -> str:
        pool = self.pool
        record = pool.get(cls, args[0])
        for verb in ("set_", "add_to_", "remove_from_"):
            if name.startswith(verb):
                field = name.removeprefix(verb)
                break
        if field not in _WRITABLE.get(cls, set()):
            raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
        if verb == "set_":
            if field == "affinity" and args[1] != NULL:
                pool.get("host", args[1])
            record[field] = copy.deepcopy(args[1])
        elif verb == "add_to_":
            if len(args) != 3:
                raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, 3, len(args))
            if args[1] in record[field]:
                raise XapiError("MAP_DUPLICATE_KEY", cls, field, args[0], args[1])
            record[field][args[1]] = args[2]
        else:
            record[field].pop(args[1], None)
        return ""

    # -- tasks -----------------------------------------------------------------------------
    def _start_task(self, method: str, args: list[Any]) -> str:
        pool = self.pool
        if method not in _HANDLERS:
            raise XapiError("MESSAGE_METHOD_UNKNOWN", f"Async.{method}")
        task = pool.add(
            "task",
            name_label=f"Async.{method}",
            status="pending",
            progress=0.0,
            result="",
            error_info=[],
        )
        if method in pool.stalled:
            return task

        def run() -> None:
            with pool.lock:
                record = pool.db["task"].get(task)
                if record is None or record["status"] != "pending":
                    return
                try:
                    value = _HANDLERS[method](pool, *args)
                except XapiError as error:
                    record.update(status="failure", error_info=error.description)
                else:
                    record.update(status="success", result=_value_element(value), progress=1.0)

        timer = threading.Timer(self.task_delay, run)
        timer.daemon = True
        timer.start()
        return task

    def _task(self, name: str, args: list[Any]) -> Any:
        pool = self.pool
        task = pool.get("task", _one(f"task.{name}", args))
        if name == "get_status":
            return task["status"]
        if name == "get_result":
            return task["result"]
        if name == "get_error_info":
            return task["error_info"]
        if name == "get_record":
            return copy.deepcopy(task)
        if name == "cancel":
            if task["status"] == "pending":
                task.update(status="cancelled", error_info=["TASK_CANCELLED", args[0]])
            return ""
        if name == "destroy":
            del pool.db["task"][str(args[0])]
            return ""
        raise XapiError("MESSAGE_METHOD_UNKNOWN", f"task.{name}")


def _one(method: str, args: list[Any]) -> Any:
    if len(args) != 1:
        raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, 2, len(args) + 1)
    return args[0]


def _value_element(value: Any) -> str:
    """XAPI's task result: the XML-RPC `<value>` of the result, strings bare, void empty."""
    if value == "":
        return ""
    if isinstance(value, str):
        return f"<value>{xml_escape(value)}</value>"
    encoded = xmlrpc.client.dumps((value,))
    return encoded[encoded.find("<value>") : encoded.rfind("</value>") + len("</value>")]


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/", "/RPC2")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


@dataclass
class XapiServer:
    """A running pool master: `url` to reach it, `pool` to look inside or inject faults."""

    url: str
    pool: XapiPool
    server: _Server

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @contextlib.contextmanager
    def stall(self, method: str) -> Iterator[None]:
        """Tasks of `method` (e.g. `VM.clean_shutdown`) stay pending while inside."""
        with self.pool.lock:
            self.pool.stalled.add(method)
        try:
            yield
        finally:
            with self.pool.lock:
                self.pool.stalled.discard(method)


def start_xapi_server(
    hosts: list[HostSpec], *, username: str, password: str, task_delay: float = 0.02
) -> XapiServer:
    pool = XapiPool(username, password, hosts)
    server = _Server(("127.0.0.1", 0), requestHandler=_Handler, logRequests=False, allow_none=False)
    server.register_instance(XapiDispatcher(pool, task_delay))
    thread = threading.Thread(target=server.serve_forever, name="xapi-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    assert isinstance(host, str)  # an AF_INET server's address, never bytes
    return XapiServer(url=f"http://{host}:{port}/", pool=pool, server=server)
