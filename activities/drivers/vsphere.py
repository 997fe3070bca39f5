"""VMware vSphere through vCenter with pyVmomi.

A VM carries its Stratus id as its vCenter instance UUID (uuid5 of the id when it is not a UUID)
and in `extraConfig` (`stratus.vm_id`), so `find_vm` is one SearchIndex call. Volumes are vmdk
files in a folder of the datastore named by the pool; a root volume from a template is a copy of
the template VM's disk (how CloudStack's VMware plugin seeds root disks), so VMs are defined
from volumes and destroying a VM detaches its disks first: disks outlive VMs, as the contract
wants. Migration is RelocateVM_Task (host to host on shared datastores).

Volume snapshots are VMDK copies, as CloudStack's VMware resource keeps them: the snapshot on
primary storage is a copy of the volume's disk on its datastore, its backup a copy on the zone's
secondary storage mounted on the host as an NFS datastore, and reverts, volumes and templates
from a snapshot are copies of that backup. A disk's size is read from its descriptor through
vCenter's datastore file access, as CloudStack reads it.

A cluster's vCenter and its credentials come from the worker's configuration
(`VCenterEndpoint`, keyed by cluster id); refs only name hosts, datastores and templates.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

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

STRATUS_UUID_NAMESPACE = uuid.UUID("6b1d1c52-6f1c-4f0a-9d43-3f7f1f3c4a10")
VM_ID_KEY = "stratus.vm_id"
SNAPSHOT_MEMORY_MARK = "stratus memory=yes"
SNAPSHOT_DISK_MARK = "stratus memory=no"
#: The description of the VM snapshot that freezes a running VM's disk while it is copied.
VOLUME_SNAPSHOT_MARK = "stratus volume snapshot"
#: That VM snapshot is named this prefix and the volume snapshot's id.
VOLUME_SNAPSHOT_PREFIX = "stratus-volume-snapshot-"
#: A disk copy is made under this name next to its destination, then renamed into place.
COPYING_SUFFIX = "-copying.vmdk"
SCSI_CONTROLLER_KEY = 1000

_POWER_STATES = {
    "poweredOn": PowerState.POWERED_ON,
    "suspended": PowerState.POWERED_ON,
    "poweredOff": PowerState.POWERED_OFF,
}
_UNSUPPORTED = (vmodl.fault.NotImplemented, vmodl.fault.NotSupported, vmodl.fault.MethodNotFound)
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
#: An extent line of a VMDK descriptor: access, size in 512-byte sectors, type, file.
_EXTENT = re.compile(r"^\s*(?:RW|RDONLY|NOACCESS)\s+(\d+)\s", re.MULTILINE)


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


def vsphere_uuid(vm_id: str) -> str:
    try:
        return str(uuid.UUID(vm_id))
    except ValueError:
        return str(uuid.uuid5(STRATUS_UUID_NAMESPACE, vm_id))


def translate_fault(error: BaseException, action: str) -> DriverError:
    """Map a vSphere fault or a transport error to the Stratus error, with vCenter's message."""
    message = getattr(error, "msg", None) or str(error) or type(error).__name__
    text = f"{action}: {message}"
    if isinstance(error, _UNSUPPORTED):
        return UnsupportedOperationError(text)
    if isinstance(error, _NO_ROOM):
        return InsufficientHostCapacityError(text)
    if isinstance(error, (*_BUSY, OSError, http.client.HTTPException)):
        return ResourceUnavailableError(text)
    return DriverError(text, retryable=False)


def volume_snapshot_vm_snapshot_name(snapshot_id: str) -> str:
    """The name of the VM snapshot a live copy for the volume snapshot `snapshot_id` is made
    under: one per volume snapshot, so every attempt (and its clean-up) finds the same one."""
    return f"{VOLUME_SNAPSHOT_PREFIX}{snapshot_id}"


def secondary_datastore_name(secondary: SecondaryStorageRef) -> str:
    """The datastore name a host mounts the zone's secondary storage under, the same on every
    host and every retry (CloudStack names it by a UUID of the export; the store id is as
    stable)."""
    return f"stratus-secondary-{secondary.store_id}"


class VSphereDriver:
    """A `HypervisorDriver` for ESXi hosts managed by vCenter."""

    hypervisor = "VMware"

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

    # -- plumbing --------------------------------------------------------------------------
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
                        sslContext=None if endpoint.verify_ssl else _unverified(),
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

    def _wait(self, task: Any, action: str) -> Any:
        deadline = time.monotonic() + self._task_timeout
        while True:
            state, result, error = _task_outcome(task)
            if state == vim.TaskInfo.State.success:
                return result
            if state == vim.TaskInfo.State.error:
                raise translate_fault(error, action)
            if time.monotonic() > deadline:
                raise DriverTimeoutError(
                    f"{action}: vCenter task {task._moId} still running after "
                    f"{self._task_timeout:g} s; the outcome is unknown"
                )
            time.sleep(0.05)

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
            uuid=vsphere_uuid(vm_id), vmSearch=True, instanceUuid=True
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

    # -- host ------------------------------------------------------------------------------
    def host_capacity(self, host: HostRef) -> HostCapacity:
        def call() -> HostCapacity:
            system = self._host_system(self._content(host), host)
            hardware = system.summary.hardware
            return HostCapacity(
                cpu_count=hardware.numCpuThreads,
                cpu_speed_mhz=hardware.cpuMhz,
                memory_mib=hardware.memorySize // (1024 * 1024),
                vm_count=len([vm for vm in system.vm if not vm.config.template]),
                extra={"cpu_model": str(hardware.cpuModel), "vendor": str(hardware.vendor)},
            )

        return self._call(f"host capacity of {host.name}", call)  # type: ignore[no-any-return]

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        def call() -> list[VirtualMachineInfo]:
            system = self._host_system(self._content(host), host)
            return [self._info(vm, host) for vm in system.vm if not vm.config.template]

        return self._call(f"list VMs on {host.name}", call)  # type: ignore[no-any-return]

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        def call() -> VirtualMachineInfo | None:
            vm = self._vm_on(self._content(host), host, vm_id)
            return None if vm is None else self._info(vm, host)

        return self._call(f"find VM {vm_id} on {host.name}", call)  # type: ignore[no-any-return]

    # -- volumes ---------------------------------------------------------------------------
    def _volume_path(self, pool: StoragePoolRef, volume_id: str) -> str:
        return f"[{pool.name}] {self._volume_folder}/{volume_id}.vmdk"

    def _disk_exists(self, content: Any, datacenter: Any, path: str) -> bool:
        try:
            content.virtualDiskManager.QueryVirtualDiskUuid(name=path, datacenter=datacenter)
        except vim.fault.FileNotFound:
            return False
        return True

    def _template_disk(self, content: Any, template_name: str) -> str:
        for vm in self._objects(content, vim.VirtualMachine):
            if vm.name == template_name:
                for device in self._disks(vm):
                    return str(device.backing.fileName)
        raise DriverError(f"template VM {template_name} (with a disk) not found in vCenter")

    def _template_source(self, content: Any, template: TemplateRef) -> str:
        """The disk a template's volumes are copied from: a template made from a snapshot names
        its disk on the secondary datastore (its url is that datastore path); any other is a
        template VM in vCenter, named by the template."""
        if template.url.startswith("["):
            return template.url
        return self._template_disk(content, template.name)

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        """A thin disk, or a copy of the template's disk grown to the asked size.

        The size answered is the disk's own (its descriptor's), so a retry answers what the
        first call made, whatever size it asks for.
        """
        action = f"create volume {spec.volume_id} on datastore {pool.name}"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, spec.volume_id)
            size = spec.size_bytes
            if spec.template is not None:
                size = max(size, spec.template.size_bytes)
            if not self._disk_exists(content, datacenter, path):
                if spec.template is not None:
                    source = self._template_source(content, spec.template)
                    self._copy_disk(
                        host, content, datacenter, source, path, action, size_bytes=size
                    )
                else:
                    self._make_folder(content, datacenter, path)
                    disk = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
                        diskType="thin", adapterType="lsiLogic", capacityKb=size // 1024
                    )
                    task = content.virtualDiskManager.CreateVirtualDisk_Task(
                        name=path, datacenter=datacenter, spec=disk
                    )
                    self._wait(task, action)
            size = self._disk_size(host, datacenter, path)
            return VolumeInfo(spec.volume_id, path, size, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        """Delete the disk and the scratch copy an interrupted copy onto its path left (a volume
        from a template or a snapshot, or a revert, copies to `<volume>-copying.vmdk` first):
        this is the saga's undo of those, and nothing else would ever remove that file."""
        action = f"delete volume {volume_id} on datastore {pool.name}"

        def call() -> None:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, volume_id)
            self._delete_disk(content, datacenter, path, action)
            self._delete_disk(content, datacenter, _scratch_path(path), action)

        self._call(action, call)

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        action = f"resize volume {volume_id} to {size_bytes} bytes"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, volume_id)
            if not self._disk_exists(content, datacenter, path):
                raise DriverError(f"volume {volume_id} is not on datastore {pool.name}")
            task = content.virtualDiskManager.ExtendVirtualDisk_Task(
                name=path,
                datacenter=datacenter,
                newCapacityKb=size_bytes // 1024,
                eagerZero=False,
            )
            self._wait(task, action)
            return VolumeInfo(volume_id, path, size_bytes, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    # -- VM lifecycle ----------------------------------------------------------------------
    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        action = f"define VM {spec.vm_id} on {host.name}"

        def call() -> VirtualMachineInfo:
            content = self._content(host)
            existing = self._lookup_vm(content, spec.vm_id)
            if existing is not None:
                return self._info(existing, host)
            system = self._host_system(content, host)
            datacenter = self._datacenter(content, host)
            datastore = spec.root_volume.path.split("]")[0].lstrip("[")
            devices: list[Any] = [_scsi_controller()]
            volumes = (spec.root_volume, *spec.data_volumes)
            devices += [_disk_add(volume, index) for index, volume in enumerate(volumes)]
            devices += [
                self._nic_add(content, datacenter, nic, index)
                for index, nic in enumerate(sorted(spec.nics, key=lambda n: n.device_id))
            ]
            config = vim.vm.ConfigSpec(
                name=spec.name,
                guestId=self._guest_id,
                numCPUs=spec.cpu_count,
                memoryMB=spec.memory_mib,
                instanceUuid=vsphere_uuid(spec.vm_id),
                extraConfig=[vim.option.OptionValue(key=VM_ID_KEY, value=spec.vm_id)],
                files=vim.vm.FileInfo(vmPathName=f"[{datastore}]"),
                deviceChange=devices,
                annotation=f"Stratus VM {spec.vm_id}",
            )
            task = datacenter.vmFolder.CreateVM_Task(
                config=config, pool=system.parent.resourcePool, host=system
            )
            return self._info(self._wait(task, action), host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def _nic_add(self, content: Any, datacenter: Any, nic: NicSpec, index: int) -> Any:
        """A vmxnet3 NIC on the distributed port group of its network and VLAN."""
        name = self._port_group(nic)
        portgroup = next(
            (
                pg
                for pg in self._objects(content, vim.dvs.DistributedVirtualPortgroup)
                if pg.name == name
            ),
            None,
        )
        if portgroup is None:
            switches = self._objects(content, vim.DistributedVirtualSwitch)
            if not switches:
                raise DriverError("no distributed switch in vCenter for Stratus port groups")
            vlan = vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec(
                vlanId=nic.vlan or 0, inherited=False
            )
            port_config = vim.dvs.VmwareDistributedVirtualSwitch.VmwarePortConfigPolicy(vlan=vlan)
            pg_spec = vim.dvs.DistributedVirtualPortgroup.ConfigSpec(
                name=name, type="earlyBinding", numPorts=8, defaultPortConfig=port_config
            )
            self._wait(switches[0].AddDVPortgroup_Task([pg_spec]), f"add port group {name}")
            portgroup = next(
                pg
                for pg in self._objects(content, vim.dvs.DistributedVirtualPortgroup)
                if pg.name == name
            )
        backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(
                portgroupKey=portgroup.key,
                switchUuid=portgroup.config.distributedVirtualSwitch.uuid,
            )
        )
        card = vim.vm.device.VirtualVmxnet3(
            key=-200 - index, backing=backing, addressType="manual", macAddress=nic.mac_address
        )
        return vim.vm.device.VirtualDeviceSpec(operation="add", device=card)

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        action = f"start VM {vm_id} on {host.name}"

        def call() -> VirtualMachineInfo:
            vm = self._vm(self._content(host), host, vm_id)
            if vm.runtime.powerState != "poweredOn":
                self._wait(vm.PowerOnVM_Task(), action)
            return self._info(vm, host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        action = f"stop VM {vm_id} on {host.name}"

        def call() -> VirtualMachineInfo:
            vm = self._vm(self._content(host), host, vm_id)
            if vm.runtime.powerState == "poweredOff":
                return self._info(vm, host)
            if not forced:
                try:
                    vm.ShutdownGuest()
                    deadline = time.monotonic() + self._shutdown_timeout
                    while vm.runtime.powerState != "poweredOff" and time.monotonic() < deadline:
                        time.sleep(0.2)
                except (vim.fault.ToolsUnavailable, vim.fault.InvalidState):
                    pass  # no tools to ask: pull the plug, as CloudStack does
            if vm.runtime.powerState != "poweredOff":
                self._wait(vm.PowerOffVM_Task(), action)
            return self._info(vm, host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        action = f"reboot VM {vm_id} on {host.name}"

        def call() -> VirtualMachineInfo:
            vm = self._vm(self._content(host), host, vm_id)
            if vm.runtime.powerState != "poweredOn":
                raise DriverError(f"VM {vm_id} is not running; it cannot be rebooted")
            try:
                vm.RebootGuest()
            except (vim.fault.ToolsUnavailable, vim.fault.InvalidState, vmodl.fault.MethodNotFound):
                # No guest to ask (no tools, or a vCenter without guest operations): reset.
                self._wait(vm.ResetVM_Task(), action)
            return self._info(vm, host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        action = f"destroy VM {vm_id} on {host.name}"

        def call() -> None:
            vm = self._vm_on(self._content(host), host, vm_id)
            if vm is None:
                return
            if vm.runtime.powerState != "poweredOff":
                self._wait(vm.PowerOffVM_Task(), action)
            # Destroy_Task deletes attached disks: detach them first, they are Stratus volumes.
            removals = [
                vim.vm.device.VirtualDeviceSpec(operation="remove", device=device)
                for device in vm.config.hardware.device
                if isinstance(device, vim.vm.device.VirtualDisk)
            ]
            if removals:
                self._wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=removals)), action)
            self._wait(vm.Destroy_Task(), action)

        self._call(action, call)

    # -- snapshots -------------------------------------------------------------------------
    @staticmethod
    def _snapshots(vm: Any) -> list[Any]:
        found: list[Any] = []
        snapshot = _properties(vm, vim.VirtualMachine, ["snapshot"]).get("snapshot")
        pending = list(snapshot.rootSnapshotList) if snapshot else []
        while pending:
            tree = pending.pop(0)
            found.append(tree)
            pending.extend(tree.childSnapshotList)
        return found

    def _snapshot_tree(self, vm: Any, snapshot_id: str) -> Any | None:
        return next((t for t in self._snapshots(vm) if t.name == snapshot_id), None)

    @staticmethod
    def _snapshot_info(tree: Any, vm_id: str) -> SnapshotInfo:
        return SnapshotInfo(tree.name, vm_id, tree.description == SNAPSHOT_MEMORY_MARK)

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        action = f"snapshot VM {vm_id} as {snapshot_id}"

        def call() -> SnapshotInfo:
            vm = self._vm(self._content(host), host, vm_id)
            tree = self._snapshot_tree(vm, snapshot_id)
            if tree is None:
                captured = memory and vm.runtime.powerState == "poweredOn"
                mark = SNAPSHOT_MEMORY_MARK if captured else SNAPSHOT_DISK_MARK
                task = vm.CreateSnapshot_Task(
                    name=snapshot_id, description=mark, memory=captured, quiesce=False
                )
                self._wait(task, action)
                tree = self._snapshot_tree(vm, snapshot_id)
            return self._snapshot_info(tree, vm_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        def call() -> list[SnapshotInfo]:
            vm = self._vm(self._content(host), host, vm_id)
            return [
                self._snapshot_info(tree, vm_id)
                for tree in self._snapshots(vm)
                if tree.description != VOLUME_SNAPSHOT_MARK  # a volume snapshot's, transient
            ]

        return self._call(f"list snapshots of VM {vm_id}", call)  # type: ignore[no-any-return]

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        action = f"revert VM {vm_id} to snapshot {snapshot_id}"

        def call() -> VirtualMachineInfo:
            vm = self._vm(self._content(host), host, vm_id)
            tree = self._snapshot_tree(vm, snapshot_id)
            if tree is None:
                raise DriverError(f"VM {vm_id} has no snapshot {snapshot_id}")
            self._wait(tree.snapshot.RevertToSnapshot_Task(), action)
            # vSphere restores the power state with the memory; make it explicit either way.
            memory = tree.description == SNAPSHOT_MEMORY_MARK
            state = vm.runtime.powerState
            if memory and state != "poweredOn":
                self._wait(vm.PowerOnVM_Task(), action)
            elif not memory and state != "poweredOff":
                self._wait(vm.PowerOffVM_Task(), action)
            return self._info(vm, host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        action = f"delete snapshot {snapshot_id} of VM {vm_id}"

        def call() -> None:
            vm = self._vm_on(self._content(host), host, vm_id)
            tree = None if vm is None else self._snapshot_tree(vm, snapshot_id)
            if tree is not None:
                self._wait(tree.snapshot.RemoveSnapshot_Task(removeChildren=False), action)

        self._call(action, call)

    # -- volume attachment -----------------------------------------------------------------
    @staticmethod
    def _disks(vm: Any) -> list[Any]:
        return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]

    @staticmethod
    def _volume_id(disk: Any) -> str:
        """The volume a disk is: its base file's name. Under VM snapshots the disk writes to a
        delta (`<volume>-000001.vmdk`) whose parent chain ends at the volume's own file."""
        backing = disk.backing
        while getattr(backing, "parent", None) is not None:
            backing = backing.parent
        return PurePosixPath(str(backing.fileName).split("] ", 1)[-1]).stem

    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        def call() -> list[VolumeAttachment]:
            vm = self._vm(self._content(host), host, vm_id)
            return [
                VolumeAttachment(vm_id, self._volume_id(disk), int(disk.unitNumber))
                for disk in self._disks(vm)
            ]

        return self._call(f"list volumes of VM {vm_id}", call)  # type: ignore[no-any-return]

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        action = f"attach volume {volume.volume_id} to VM {vm_id}"

        def call() -> VolumeAttachment:
            vm = self._vm(self._content(host), host, vm_id)
            for disk in self._disks(vm):
                if self._volume_id(disk) == volume.volume_id:
                    return VolumeAttachment(vm_id, volume.volume_id, int(disk.unitNumber))
                if disk.unitNumber == device_id:
                    raise DriverError(f"device {device_id} of VM {vm_id} is in use")
            controller = next(
                d
                for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualSCSIController)
            )
            change = _disk_add(volume, device_id, controller_key=controller.key)
            self._wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), action)
            return VolumeAttachment(vm_id, volume.volume_id, device_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        action = f"detach volume {volume_id} from VM {vm_id}"

        def call() -> None:
            vm = self._vm(self._content(host), host, vm_id)
            for disk in self._disks(vm):
                if self._volume_id(disk) == volume_id:
                    change = vim.vm.device.VirtualDeviceSpec(operation="remove", device=disk)
                    self._wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), action)

        self._call(action, call)

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
            "copying a disk between datastores is not implemented for vSphere yet "
            "(it needs a disk relocation through the datastore browser)"
        )

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        action = f"migrate VM {vm_id} from {source_host.name} to {target_host.name}"

        def call() -> VirtualMachineInfo:
            content = self._content(source_host)
            arrived = self._vm_on(content, target_host, vm_id)
            if arrived is not None:
                return self._info(arrived, target_host)
            vm = self._vm(content, source_host, vm_id)
            target = self._host_system(content, target_host)
            spec = vim.vm.RelocateSpec(host=target, pool=target.parent.resourcePool)
            self._wait(vm.RelocateVM_Task(spec=spec), action)
            return self._info(vm, target_host)

        return self._call(action, call)  # type: ignore[no-any-return]

    # -- disk files ------------------------------------------------------------------------
    def _read_datastore_file(self, host: HostRef, datacenter: Any, path: str) -> str | None:
        """A small datastore file's text through vCenter's datastore file access (`/folder`),
        with this session's cookie; None when the file does not exist."""
        endpoint = self._endpoint(host)
        with self._lock:
            si = self._sessions.get(endpoint)
        if si is None:
            # close() ran since this call's `_content`: the session (and its cookie) is gone;
            # a retry logs in again.
            raise ResourceUnavailableError(
                f"reading {path}: the session with vCenter {endpoint.host} was closed"
            )
        cookie = str(si._stub.cookie)
        datastore, relative = _split_path(path)
        query = urlencode({"dcPath": datacenter.name, "dsName": datastore})
        connection: http.client.HTTPConnection
        if endpoint.protocol == "https":
            context = ssl.create_default_context() if endpoint.verify_ssl else _unverified()
            connection = http.client.HTTPSConnection(
                endpoint.host, endpoint.port, timeout=60, context=context
            )
        else:
            connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=60)
        try:
            connection.request(
                "GET", f"/folder/{quote(relative)}?{query}", headers={"Cookie": cookie}
            )
            response = connection.getresponse()
            body = response.read(1024 * 1024)
        finally:
            connection.close()
        if response.status == http.client.NOT_FOUND:
            return None
        if response.status != http.client.OK:
            raise ResourceUnavailableError(
                f"reading {path} through vCenter's datastore access: HTTP {response.status}"
            )
        return body.decode("utf-8", errors="replace")

    def _disk_size(self, host: HostRef, datacenter: Any, path: str) -> int:
        """A disk's capacity from its descriptor's extents (how CloudStack's VMware resource
        sizes a VMDK).

        A descriptor that cannot be read or names no extent raises a retryable error rather
        than answering a size: the disk was found just before, so this is a datastore (or its
        file access) that did not answer, and a size made up here would be recorded for good
        (a 0-byte snapshot, a volume of the asked size whatever the disk's).
        """
        text = self._read_datastore_file(host, datacenter, path)
        sectors = [int(match.group(1)) for match in _EXTENT.finditer(text or "")]
        if not sectors:
            state = "is missing" if text is None else "names no extent"
            raise ResourceUnavailableError(
                f"cannot read the size of disk {path}: its descriptor {state}"
            )
        return sum(sectors) * 512

    def _make_folder(self, content: Any, datacenter: Any, path: str) -> None:
        """The folder a disk file goes in (vSphere creates no folder on a copy or a create)."""
        folder, _, _ = path.rpartition("/")
        if folder:
            with contextlib.suppress(vim.fault.FileAlreadyExists):
                content.fileManager.MakeDirectory(
                    name=folder, datacenter=datacenter, createParentDirectories=True
                )

    def _delete_disk(self, content: Any, datacenter: Any, path: str, action: str) -> None:
        """Delete a disk (descriptor and extent); one already gone is not an error."""
        if self._disk_exists(content, datacenter, path):
            with contextlib.suppress(vim.fault.FileNotFound):
                task = content.virtualDiskManager.DeleteVirtualDisk_Task(
                    name=path, datacenter=datacenter
                )
                self._wait_raw(task, action)

    def _wait_raw(self, task: Any, action: str) -> Any:
        """`_wait`, raising vCenter's own fault so a caller can tell which one it was."""
        deadline = time.monotonic() + self._task_timeout
        while True:
            state, result, error = _task_outcome(task)
            if state == vim.TaskInfo.State.success:
                return result
            if state == vim.TaskInfo.State.error:
                raise error
            if time.monotonic() > deadline:
                raise DriverTimeoutError(
                    f"{action}: vCenter task {task._moId} still running after "
                    f"{self._task_timeout:g} s; the outcome is unknown"
                )
            time.sleep(0.05)

    def _copy_disk(
        self,
        host: HostRef,
        content: Any,
        datacenter: Any,
        source: str,
        dest: str,
        action: str,
        *,
        size_bytes: int | None = None,
        replace: bool = False,
    ) -> None:
        """Copy the disk `source` to `dest` (CopyVirtualDisk_Task), so that a disk at `dest` is
        always a finished copy: the copy is made as `<dest>-copying.vmdk` and renamed into place
        (MoveVirtualDisk_Task) once whole. A retry finds either the finished disk or, after an
        interrupted attempt, a scratch copy it deletes and makes again.

        `size_bytes` grows the copy to that size first (ExtendVirtualDisk_Task); `replace` renames
        over a disk already at `dest` (a revert: the disk keeps its path) in one forced
        MoveVirtualDisk_Task, so there is never a moment with neither the old disk nor the new.

        A failed rename is retryable: the copy was whole, a retry makes it again. The scratch copy
        is kept when the rename failed and `dest` is gone (a rename that died half way): it may be
        the only copy of the disk left, and the retry's own copy replaces it.
        """
        scratch = _scratch_path(dest)
        manager = content.virtualDiskManager
        self._delete_disk(content, datacenter, scratch, action)
        self._make_folder(content, datacenter, dest)
        renaming = False
        try:
            task = manager.CopyVirtualDisk_Task(
                sourceName=source,
                sourceDatacenter=datacenter,
                destName=scratch,
                destDatacenter=datacenter,
            )
            self._wait(task, action)
            if size_bytes is not None and self._disk_size(host, datacenter, scratch) < size_bytes:
                self._extend_disk(content, datacenter, scratch, size_bytes, action)
            renaming = True
            try:
                task = manager.MoveVirtualDisk_Task(
                    sourceName=scratch,
                    sourceDatacenter=datacenter,
                    destName=dest,
                    destDatacenter=datacenter,
                    force=replace,
                )
                self._wait_raw(task, action)
            except vmodl.MethodFault as error:
                message = getattr(error, "msg", None) or type(error).__name__
                raise ResourceUnavailableError(
                    f"{action}: renaming the finished copy {scratch} to {dest} failed "
                    f"({message}); a retry copies again"
                ) from error
        except BaseException:
            # Leave no scratch copy behind a failure (best effort: a copy vCenter is still
            # making is locked; the retry deletes it), unless it may be all that is left.
            with contextlib.suppress(Exception):
                if not renaming or self._disk_exists(content, datacenter, dest):
                    self._delete_disk(content, datacenter, scratch, action)
            raise

    def _extend_disk(
        self, content: Any, datacenter: Any, path: str, size_bytes: int, action: str
    ) -> None:
        try:
            task = content.virtualDiskManager.ExtendVirtualDisk_Task(
                name=path, datacenter=datacenter, newCapacityKb=size_bytes // 1024, eagerZero=False
            )
            self._wait_raw(task, action)
        except _UNSUPPORTED as error:
            raise UnsupportedOperationError(
                f"{action}: growing the disk to {size_bytes} bytes needs "
                "VirtualDiskManager.ExtendVirtualDisk_Task, which this vCenter does not "
                "implement (govmomi's simulator does not)"
            ) from error

    def _users_of(self, content: Any, path: str) -> list[tuple[Any, Any]]:
        """The (VM, disk) pairs whose disk is the file `path`, or a delta disk of it (the VM has
        VM snapshots); template VMs are not users."""
        found: list[tuple[Any, Any]] = []
        for vm in self._objects(content, vim.VirtualMachine):
            try:
                config = vm.config
                if config is None or config.template:
                    continue
                found += [(vm, d) for d in self._disks(vm) if path in _backing_chain(d.backing)]
            except vmodl.fault.ManagedObjectNotFound:
                continue  # destroyed since the listing
        return found

    # -- volume snapshots (issue 3) --------------------------------------------------------
    # The snapshot on primary storage is `<folder>/snapshots/<snapshot id>.vmdk` on the volume's
    # datastore; on the secondary datastore backups are `snapshots/snapshot-<id>.vmdk` and
    # templates `templates/template-<id>.vmdk`, the layout the KVM driver keeps there.

    def _snapshot_path(self, pool: StoragePoolRef, snapshot_id: str) -> str:
        return f"[{pool.name}] {self._volume_folder}/snapshots/{snapshot_id}.vmdk"

    @staticmethod
    def _backup_path(datastore: str, snapshot_id: str) -> str:
        return f"[{datastore}] snapshots/snapshot-{snapshot_id}.vmdk"

    @staticmethod
    def _template_image_path(datastore: str, template_id: str) -> str:
        return f"[{datastore}] templates/template-{template_id}.vmdk"

    def _mounted_secondary(
        self, content: Any, host: HostRef, secondary: SecondaryStorageRef
    ) -> str | None:
        """The name of the datastore the host sees the zone's secondary storage as, when it is
        mounted; None when it is not. A mounted datastore the host cannot reach (its NFS server
        is down) is retryable (534): its files are there, out of reach for now."""
        name = secondary_datastore_name(secondary)
        system = self._host_system(content, host)
        for datastore in system.datastore:
            if datastore.name == name:
                if not datastore.summary.accessible:
                    raise ResourceUnavailableError(
                        f"secondary storage {secondary.name} (datastore {name}) is not "
                        f"accessible from host {host.name}"
                    )
                return name
        return None

    def _secondary_datastore(
        self, content: Any, host: HostRef, secondary: SecondaryStorageRef
    ) -> str:
        """The name of the datastore the host sees the zone's secondary storage as: found by
        name, or mounted from its NFS export (HostDatastoreSystem.CreateNasDatastore), as
        CloudStack's VMware resource mounts secondary storage on the host it works through.

        A store that is not an NFS export is refused for good; a mount that fails is retryable
        (534): ESXi says no more than that it could not mount, and an NFS server that is down
        or unreachable is the usual reason.
        """
        name = self._mounted_secondary(content, host, secondary)
        if name is not None:
            return name
        name = secondary_datastore_name(secondary)
        system = self._host_system(content, host)
        url = urlparse(secondary.url)
        if not _is_nfs(secondary):
            raise DriverError(
                f"secondary storage {secondary.name} ({secondary.url}) is not an NFS export "
                "(nfs://host/path): ESXi hosts reach secondary storage as an NFS datastore",
                retryable=False,
            )
        spec = vim.host.NasVolume.Specification(
            remoteHost=url.hostname,
            remotePath=url.path,
            localPath=name,
            accessMode="readWrite",
            type="NFS",
        )
        try:
            system.configManager.datastoreSystem.CreateNasDatastore(spec=spec)
        except (vim.fault.DuplicateName, vim.fault.AlreadyExists):
            pass  # a concurrent call mounted it meanwhile: the name is there then
        except vmodl.MethodFault as error:
            message = getattr(error, "msg", None) or type(error).__name__
            raise ResourceUnavailableError(
                f"cannot mount secondary storage {secondary.name} ({secondary.url}) on host "
                f"{host.name}: {message}"
            ) from error
        return name

    def _secondary_to_delete_from(
        self, content: Any, host: HostRef, secondary: SecondaryStorageRef
    ) -> str | None:
        """The secondary datastore a delete works on; None when nothing can be on it.

        Found by name first, so a delete mounts nothing it need not: a store that is not an NFS
        export was never mounted, nothing was ever made on it, and its delete (a saga's undo of
        a step refused for that very reason) succeeds. An NFS store not mounted here may hold
        what another host made: it is mounted, and a failure to is retryable (534).
        """
        name = self._mounted_secondary(content, host, secondary)
        if name is not None:
            return name
        if not _is_nfs(secondary):
            return None
        return self._secondary_datastore(content, host, secondary)

    def _backup_or_fail(
        self,
        content: Any,
        datacenter: Any,
        datastore: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> str:
        path = self._backup_path(datastore, snapshot_id)
        if not self._disk_exists(content, datacenter, path):
            raise DriverError(
                f"snapshot {snapshot_id} has no backup on secondary storage {secondary.name}",
                retryable=False,
            )
        return path

    def _volume_snapshot_info(
        self, host: HostRef, datacenter: Any, path: str, snapshot_id: str, volume_id: str
    ) -> VolumeSnapshotInfo:
        size = self._disk_size(host, datacenter, path)
        return VolumeSnapshotInfo(snapshot_id, volume_id, path, size)

    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        """Copy the volume's VMDK on its datastore; the copy already made is the answer.

        A disk a running VM writes to is copied the way CloudStack's VMware resource (and any
        vSphere backup) does it: a disk-only VM snapshot freezes the disk's file (writes go to a
        new delta disk from then on), the frozen file is copied, and the VM snapshot is removed
        (ESXi folds the delta back into the disk). The copy is crash-consistent, the VM runs on.
        govmomi's simulator makes VM snapshots without delta disks, but nothing writes to its
        disks either, so the copy made there is as consistent.

        Every attempt first removes the VM snapshot an earlier attempt of this volume snapshot
        left (it crashed, or its RemoveSnapshot_Task failed), whether the copy was made or not:
        left alone, its delta disk grows for ever and, the disk's backing being that delta, it
        would refuse every retry below. A disk still under VM snapshots then is refused: its file
        is not the VM's current disk. Under another volume snapshot's VM snapshot that is
        retryable (534), it goes when that copy is done; under the VM's own VM snapshots it is
        final until someone deletes them.
        """
        action = f"snapshot volume {volume_id} as {snapshot_id}"

        def call() -> VolumeSnapshotInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._snapshot_path(pool, snapshot_id)
            volume = self._volume_path(pool, volume_id)
            users = self._users_of(content, volume)
            if self._remove_live_copy_snapshot(users, snapshot_id, action):
                users = self._users_of(content, volume)  # the disks' backings changed
            if not self._disk_exists(content, datacenter, path):
                if not self._disk_exists(content, datacenter, volume):
                    raise DriverError(
                        f"volume {volume_id} is not on datastore {pool.name}", retryable=False
                    )
                for vm, disk in users:
                    if disk.backing.fileName != volume:
                        self._refuse_delta(vm, volume_id)
                running = [vm for vm, _ in users if vm.runtime.powerState != "poweredOff"]
                if running:
                    self._live_copy(
                        host, content, datacenter, running[0], volume, path, snapshot_id, action
                    )
                else:
                    self._copy_disk(host, content, datacenter, volume, path, action)
            return self._volume_snapshot_info(host, datacenter, path, snapshot_id, volume_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def _refuse_delta(self, vm: Any, volume_id: str) -> None:
        """Refuse to copy a disk `vm` reaches through a delta disk (it is under VM snapshots):
        retryably when only other volume snapshots' transient VM snapshots hold it, for good
        when the VM's own VM snapshots do (or vSphere left the delta to consolidate)."""
        trees = self._snapshots(vm)
        ours = [t.name for t in trees if t.description == VOLUME_SNAPSHOT_MARK]
        if ours and len(ours) == len(trees):
            raise ResourceUnavailableError(
                f"volume {volume_id} is under VM snapshot {ours[0]} of VM {vm.name}, which "
                "another volume snapshot copies a disk under; retry once that copy is done"
            )
        raise DriverError(
            f"volume {volume_id} is under VM snapshots of VM {vm.name} (or a delta disk vSphere "
            "has to consolidate): delete them before snapshotting the volume",
            retryable=False,
        )

    def _remove_live_copy_snapshot(
        self, users: list[tuple[Any, Any]], snapshot_id: str, action: str
    ) -> bool:
        """Remove, from each VM in `users`, the VM snapshot a live copy for `snapshot_id` is made
        under (ESXi folds its delta disk back into the disk); whether there was one.

        Idempotent: a VM snapshot removed meanwhile (by a concurrent attempt) is not an error.
        The VM snapshot of a copy an earlier attempt still makes is removed too: vSphere keeps
        the disk locked while it is copied, so that removal fails with a busy fault (534) and
        the retry comes back after it.
        """
        name = volume_snapshot_vm_snapshot_name(snapshot_id)
        removed = False
        seen: set[str] = set()
        for vm, _ in users:
            if vm._moId in seen:
                continue
            seen.add(vm._moId)
            for tree in [t for t in self._snapshots(vm) if t.name == name]:
                with contextlib.suppress(vmodl.fault.ManagedObjectNotFound):
                    task = tree.snapshot.RemoveSnapshot_Task(removeChildren=False)
                    self._wait_raw(task, action)  # `_call` maps any other fault
                removed = True
        return removed

    def _live_copy(
        self,
        host: HostRef,
        content: Any,
        datacenter: Any,
        vm: Any,
        volume: str,
        path: str,
        snapshot_id: str,
        action: str,
    ) -> None:
        """Copy `volume` while `vm` runs, under a disk-only VM snapshot (see `snapshot_volume`,
        which removes one an interrupted attempt left before it gets here)."""
        name = volume_snapshot_vm_snapshot_name(snapshot_id)
        task = vm.CreateSnapshot_Task(
            name=name, description=VOLUME_SNAPSHOT_MARK, memory=False, quiesce=False
        )
        self._wait(task, action)
        tree = self._snapshot_tree(vm, name)
        if tree is None:
            raise DriverError(f"{action}: VM snapshot {name} of VM {vm.name} vanished")
        try:
            self._copy_disk(host, content, datacenter, volume, path, action)
        finally:
            self._wait(tree.snapshot.RemoveSnapshot_Task(removeChildren=False), action)

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        """Copy the primary snapshot to the secondary datastore; the backup already there (even
        once the primary copy is gone) is the answer."""
        action = f"back up snapshot {snapshot_id} to {secondary.name}"

        def call() -> VolumeSnapshotInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            datastore = self._secondary_datastore(content, host, secondary)
            backup = self._backup_path(datastore, snapshot_id)
            if not self._disk_exists(content, datacenter, backup):
                primary = self._snapshot_path(pool, snapshot_id)
                if not self._disk_exists(content, datacenter, primary):
                    raise DriverError(
                        f"snapshot {snapshot_id} of volume {volume_id} is not on primary storage "
                        f"{pool.name}; nothing to back up",
                        retryable=False,
                    )
                self._copy_disk(host, content, datacenter, primary, backup, action)
            return self._volume_snapshot_info(host, datacenter, backup, snapshot_id, volume_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        """Delete the copy, its scratch copy, and the VM snapshot a live copy for it left (the
        saga's undo of a `snapshot_volume` that failed removing it)."""
        action = f"delete snapshot {snapshot_id} of volume {volume_id} on {pool.name}"

        def call() -> None:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            volume = self._volume_path(pool, volume_id)
            self._remove_live_copy_snapshot(self._users_of(content, volume), snapshot_id, action)
            path = self._snapshot_path(pool, snapshot_id)
            self._delete_disk(content, datacenter, path, action)
            self._delete_disk(content, datacenter, _scratch_path(path), action)

        self._call(action, call)

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        self._delete_from_secondary(
            host,
            secondary,
            lambda datastore: self._backup_path(datastore, snapshot_id),
            f"delete backup of snapshot {snapshot_id} on {secondary.name}",
        )

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        """Copy the backup over the volume's VMDK: the disk keeps its path (so a stopped VM that
        has it plugged in keeps it) and becomes the snapshot again, size included. Refused for a
        disk a running VM uses, or one under a VM's VM snapshots (they would lose their base)."""
        action = f"revert volume {volume_id} to snapshot {snapshot_id}"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            datastore = self._secondary_datastore(content, host, secondary)
            backup = self._backup_or_fail(content, datacenter, datastore, secondary, snapshot_id)
            path = self._volume_path(pool, volume_id)
            for vm, disk in self._users_of(content, path):
                if vm.runtime.powerState != "poweredOff":
                    raise DriverError(
                        f"volume {volume_id} is in use by running VM {vm.name}; stop it or "
                        "detach the volume before reverting",
                        retryable=False,
                    )
                if disk.backing.fileName != path:
                    raise DriverError(
                        f"volume {volume_id} is under VM snapshots of VM {vm.name}: delete them "
                        "before reverting the volume",
                        retryable=False,
                    )
            # No disk at `path` is a revert interrupted before its rename: the copy finishes it.
            self._copy_disk(host, content, datacenter, backup, path, action, replace=True)
            size = self._disk_size(host, datacenter, path)
            return VolumeInfo(volume_id, path, size, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        """Copy the backup to the datastore as a new volume, named as `create_volume` names
        volumes, and grown to `spec.size_bytes` where that is larger."""
        action = f"create volume {spec.volume_id} from snapshot {snapshot_id} on {pool.name}"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, spec.volume_id)
            if not self._disk_exists(content, datacenter, path):
                datastore = self._secondary_datastore(content, host, secondary)
                backup = self._backup_or_fail(
                    content, datacenter, datastore, secondary, snapshot_id
                )
                self._copy_disk(
                    host, content, datacenter, backup, path, action, size_bytes=spec.size_bytes
                )
            size = self._disk_size(host, datacenter, path)
            return VolumeInfo(spec.volume_id, path, size, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        """Copy the backup to `templates/` on the secondary datastore. The template's url is that
        disk's datastore path, which `create_volume` copies volumes from."""
        action = f"create template {template_id} from snapshot {snapshot_id}"

        def call() -> TemplateRef:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            datastore = self._secondary_datastore(content, host, secondary)
            path = self._template_image_path(datastore, template_id)
            if not self._disk_exists(content, datacenter, path):
                backup = self._backup_or_fail(
                    content, datacenter, datastore, secondary, snapshot_id
                )
                self._copy_disk(host, content, datacenter, backup, path, action)
            return TemplateRef(
                template_id=template_id,
                name=f"from-snapshot-{snapshot_id}",
                url=path,
                format="VMDK",
                size_bytes=self._disk_size(host, datacenter, path),
            )

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        self._delete_from_secondary(
            host,
            secondary,
            lambda datastore: self._template_image_path(datastore, template_id),
            f"delete template {template_id} on {secondary.name}",
        )

    def _delete_from_secondary(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        path_on: Callable[[str], str],
        action: str,
    ) -> None:
        """Delete a disk on the secondary store, and any scratch copy an interrupted copy left
        next to it; a store never mounted here holds nothing to delete."""

        def call() -> None:
            content = self._content(host)
            datastore = self._secondary_to_delete_from(content, host, secondary)
            if datastore is None:
                return
            datacenter = self._datacenter(content, host)
            path = path_on(datastore)
            self._delete_disk(content, datacenter, path, action)
            self._delete_disk(content, datacenter, _scratch_path(path), action)

        self._call(action, call)


def _scsi_controller() -> Any:
    controller = vim.vm.device.ParaVirtualSCSIController(
        key=SCSI_CONTROLLER_KEY, busNumber=0, sharedBus="noSharing"
    )
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=controller)


def _disk_add(
    volume: VolumeInfo, device_id: int, *, controller_key: int = SCSI_CONTROLLER_KEY
) -> Any:
    """Plug an existing vmdk (no file operation: the volume already exists and is kept)."""
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=volume.path, diskMode="persistent", thinProvisioned=True
    )
    disk = vim.vm.device.VirtualDisk(
        key=-100 - device_id,
        controllerKey=controller_key,
        unitNumber=device_id if device_id < 7 else device_id + 1,  # unit 7 is the controller
        capacityInKB=volume.size_bytes // 1024,
        backing=backing,
    )
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _properties(obj: Any, kind: Any, paths: list[str]) -> dict[str, Any]:
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
    values = _properties(task, vim.Task, ["info.state", "info.result", "info.error"])
    return values.get("info.state", ""), values.get("info.result"), values.get("info.error")


def _is_nfs(secondary: SecondaryStorageRef) -> bool:
    """Whether the store is an NFS export (nfs://host/path), the only kind ESXi mounts here."""
    url = urlparse(secondary.url)
    return url.scheme == "nfs" and bool(url.hostname) and bool(url.path)


def _scratch_path(path: str) -> str:
    """Where a copy onto the disk `path` is made before it is renamed into place."""
    return path.removesuffix(".vmdk") + COPYING_SUFFIX


def _split_path(path: str) -> tuple[str, str]:
    """`[datastore] folder/file.vmdk` → (`datastore`, `folder/file.vmdk`)."""
    datastore, _, relative = path.partition("] ")
    return datastore.lstrip("["), relative


def _backing_chain(backing: Any) -> list[str]:
    """A disk backing's file and its parents' (a delta disk's chain down to its base)."""
    files: list[str] = []
    while backing is not None:
        files.append(str(backing.fileName))
        backing = getattr(backing, "parent", None)
    return files
