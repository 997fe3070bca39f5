"""VMware vSphere through vCenter with pyVmomi.

A VM carries its Stratus id as its vCenter instance UUID (uuid5 of the id when it is not a UUID)
and in `extraConfig` (`stratus.vm_id`), so `find_vm` is one SearchIndex call. Volumes are vmdk
files in a folder of the datastore named by the pool; a root volume from a template is a copy of
the template VM's disk (how CloudStack's VMware plugin seeds root disks), so VMs are defined
from volumes and destroying a VM detaches its disks first: disks outlive VMs, as the contract
wants. Migration is RelocateVM_Task (host to host on shared datastores).

A cluster's vCenter and its credentials come from the worker's configuration
(`VCenterEndpoint`, keyed by cluster id); refs only name hosts, datastores and templates.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

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
    SnapshotInfo,
    StoragePoolRef,
    UnsupportedOperationError,
    VirtualMachineInfo,
    VirtualMachineSpec,
    VolumeAttachment,
    VolumeInfo,
    VolumeSpec,
)

STRATUS_UUID_NAMESPACE = uuid.UUID("6b1d1c52-6f1c-4f0a-9d43-3f7f1f3c4a10")
VM_ID_KEY = "stratus.vm_id"
SNAPSHOT_MEMORY_MARK = "stratus memory=yes"
SNAPSHOT_DISK_MARK = "stratus memory=no"
SCSI_CONTROLLER_KEY = 1000

_POWER_STATES = {
    "poweredOn": PowerState.POWERED_ON,
    "suspended": PowerState.POWERED_ON,
    "poweredOff": PowerState.POWERED_OFF,
}
_UNSUPPORTED = (vmodl.fault.NotImplemented, vmodl.fault.NotSupported, vmodl.fault.MethodNotFound)
_BUSY = (
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

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        action = f"create volume {spec.volume_id} on datastore {pool.name}"

        def call() -> VolumeInfo:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, spec.volume_id)
            size = spec.size_bytes
            if spec.template is not None:
                size = max(size, spec.template.size_bytes)
            if not self._disk_exists(content, datacenter, path):
                with contextlib.suppress(vim.fault.FileAlreadyExists):
                    content.fileManager.MakeDirectory(
                        name=f"[{pool.name}] {self._volume_folder}",
                        datacenter=datacenter,
                        createParentDirectories=True,
                    )
                manager = content.virtualDiskManager
                if spec.template is not None:
                    source = self._template_disk(content, spec.template.name)
                    task = manager.CopyVirtualDisk_Task(
                        sourceName=source,
                        sourceDatacenter=datacenter,
                        destName=path,
                        destDatacenter=datacenter,
                    )
                else:
                    disk = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
                        diskType="thin", adapterType="lsiLogic", capacityKb=size // 1024
                    )
                    task = manager.CreateVirtualDisk_Task(
                        name=path, datacenter=datacenter, spec=disk
                    )
                self._wait(task, action)
            return VolumeInfo(spec.volume_id, path, size, pool.pool_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        action = f"delete volume {volume_id} on datastore {pool.name}"

        def call() -> None:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            path = self._volume_path(pool, volume_id)
            if self._disk_exists(content, datacenter, path):
                task = content.virtualDiskManager.DeleteVirtualDisk_Task(
                    name=path, datacenter=datacenter
                )
                self._wait(task, action)

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
            return [self._snapshot_info(tree, vm_id) for tree in self._snapshots(vm)]

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
        return PurePosixPath(str(disk.backing.fileName).split("] ", 1)[-1]).stem

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
