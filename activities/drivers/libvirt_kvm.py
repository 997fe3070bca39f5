"""KVM hosts through libvirt: the backend CloudStack's KVM agent drives, called directly.

A VM is a libvirt domain whose UUID is the Stratus vm id (or a uuid5 of it when the id is not a
UUID), so `find_vm` is one lookup and defining twice finds the first domain. Volumes are
`<volume_id>.qcow2` files in a libvirt storage pool, backed by the template image when one is
given. Snapshots are internal qcow2 snapshots named by their Stratus id. Data disks hang off a
virtio-scsi controller because SCSI hot-unplug completes without the guest's help, which a
virtio-blk unplug does not.

The connection URI of each host comes from the worker's configuration: a mapping by host id or
a template filled from the host ref (`qemu+tls://{address}/system`). Credentials, if any, live in
libvirt's own client configuration, never in a ref.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse
from xml.etree import ElementTree

import libvirt

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


def _quiet(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; ours carry the message instead."""


libvirt.registerErrorHandler(_quiet, None)

#: Our XML namespace for the domain metadata that carries the Stratus id.
METADATA_NS = "https://stratus.cloud/xmlns/libvirt/vm/1"
#: uuid5 namespace for Stratus ids that are not UUIDs themselves.
STRATUS_UUID_NAMESPACE = uuid.UUID("6b1d1c52-6f1c-4f0a-9d43-3f7f1f3c4a10")
SNAPSHOT_MEMORY_MARK = "stratus memory=yes"
SNAPSHOT_DISK_MARK = "stratus memory=no"

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
_NOT_FOUND = {
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


def libvirt_uuid(vm_id: str) -> str:
    """The domain UUID for a Stratus vm id: the id itself when it is a UUID."""
    try:
        return str(uuid.UUID(vm_id))
    except ValueError:
        return str(uuid.uuid5(STRATUS_UUID_NAMESPACE, vm_id))


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


class LibvirtKvmDriver:
    """A `HypervisorDriver` over libvirt, for KVM (or TCG, or libvirt's test driver)."""

    hypervisor = "KVM"

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

    # -- plumbing --------------------------------------------------------------------------
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
            return conn.lookupByUUIDString(libvirt_uuid(vm_id))
        except libvirt.libvirtError as error:
            if error.get_error_code() in _NOT_FOUND:
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

    # -- host ------------------------------------------------------------------------------
    def host_capacity(self, host: HostRef) -> HostCapacity:
        def call() -> HostCapacity:
            conn = self._connection(host)
            model, memory_mib, cpus, mhz, *_ = conn.getInfo()
            return HostCapacity(
                cpu_count=cpus,
                cpu_speed_mhz=mhz,
                memory_mib=memory_mib,
                vm_count=conn.numOfDomains(),
                extra={"cpu_model": str(model), "libvirt_version": str(conn.getLibVersion())},
            )

        return self._run(f"host capacity of {host.name}", call)

    def list_vms(self, host: HostRef) -> list[VirtualMachineInfo]:
        def call() -> list[VirtualMachineInfo]:
            conn = self._connection(host)
            return [self._info(domain, host) for domain in conn.listAllDomains()]

        return self._run(f"list VMs on {host.name}", call)

    def find_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo | None:
        def call() -> VirtualMachineInfo | None:
            domain = self._lookup_domain(self._connection(host), vm_id)
            return None if domain is None else self._info(domain, host)

        return self._run(f"find VM {vm_id} on {host.name}", call)

    # -- volumes ---------------------------------------------------------------------------
    def _pool(self, conn: libvirt.virConnect, pool: StoragePoolRef) -> libvirt.virStoragePool:
        """The libvirt pool for a Stratus pool, defined as a directory pool on first use."""
        try:
            storage = conn.storagePoolLookupByName(pool.name)
        except libvirt.libvirtError as error:
            if error.get_error_code() not in _NOT_FOUND:
                raise
            xml = (
                f"<pool type='dir'><name>{_escape(pool.name)}</name>"
                f"<target><path>{_escape(pool.path)}</path></target></pool>"
            )
            storage = conn.storagePoolDefineXML(xml, 0)
            storage.build(0)
            storage.setAutostart(1)
        if not storage.isActive():
            storage.create(0)
        # Another host may have written to shared storage since we last looked.
        storage.refresh(0)
        return storage

    @staticmethod
    def _volume_name(volume_id: str) -> str:
        return f"{volume_id}.qcow2"

    @staticmethod
    def _lookup_volume(
        storage: libvirt.virStoragePool, volume_id: str
    ) -> libvirt.virStorageVol | None:
        try:
            return storage.storageVolLookupByName(LibvirtKvmDriver._volume_name(volume_id))
        except libvirt.libvirtError as error:
            if error.get_error_code() in _NOT_FOUND:
                return None
            raise

    @staticmethod
    def _volume_info(
        volume: libvirt.virStorageVol, volume_id: str, pool: StoragePoolRef
    ) -> VolumeInfo:
        _, capacity, _ = volume.info()
        return VolumeInfo(
            volume_id=volume_id, path=volume.path(), size_bytes=capacity, pool_id=pool.pool_id
        )

    def create_volume(self, host: HostRef, pool: StoragePoolRef, spec: VolumeSpec) -> VolumeInfo:
        def call() -> VolumeInfo:
            storage = self._pool(self._connection(host), pool)
            existing = self._lookup_volume(storage, spec.volume_id)
            if existing is not None:
                return self._volume_info(existing, spec.volume_id, pool)
            size = spec.size_bytes
            backing = ""
            if spec.template is not None:
                size = max(size, spec.template.size_bytes)
                backing = (
                    f"<backingStore><path>{_escape(template_path(spec.template.url))}</path>"
                    f"<format type='{spec.template.format.lower()}'/></backingStore>"
                )
            xml = (
                f"<volume><name>{self._volume_name(spec.volume_id)}</name>"
                f"<capacity unit='bytes'>{size}</capacity>"
                f"<target><format type='qcow2'/></target>{backing}</volume>"
            )
            volume = storage.createXML(xml, 0)
            return self._volume_info(volume, spec.volume_id, pool)

        return self._run(f"create volume {spec.volume_id} in pool {pool.name}", call)

    def delete_volume(self, host: HostRef, pool: StoragePoolRef, volume_id: str) -> None:
        def call() -> None:
            volume = self._lookup_volume(self._pool(self._connection(host), pool), volume_id)
            if volume is not None:
                volume.delete(0)

        self._run(f"delete volume {volume_id} in pool {pool.name}", call)

    def resize_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, size_bytes: int
    ) -> VolumeInfo:
        def call() -> VolumeInfo:
            conn = self._connection(host)
            volume = self._lookup_volume(self._pool(conn, pool), volume_id)
            if volume is None:
                raise DriverError(f"volume {volume_id} is not in pool {pool.name}")
            current = volume.info()[1]
            if size_bytes < current:
                raise DriverError(
                    f"volume {volume_id} is {current} bytes; shrinking to {size_bytes} is refused"
                )
            if size_bytes > current:
                user = self._running_user_of(conn, volume.path())
                if user is not None:
                    # QEMU holds the image open: grow it through the running VM.
                    domain, target = user
                    domain.blockResize(target, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                else:
                    volume.resize(size_bytes, 0)
            return self._volume_info(volume, volume_id, pool)

        return self._run(f"resize volume {volume_id} to {size_bytes} bytes", call)

    @staticmethod
    def _running_user_of(
        conn: libvirt.virConnect, path: str
    ) -> tuple[libvirt.virDomain, str] | None:
        for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            for disk in _disks(domain.XMLDesc(0)):
                if disk.path == path:
                    return domain, disk.target
        return None

    # -- VM lifecycle ----------------------------------------------------------------------
    def define_vm(self, host: HostRef, spec: VirtualMachineSpec) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            conn = self._connection(host)
            existing = self._lookup_domain(conn, spec.vm_id)
            if existing is not None:
                return self._info(existing, host)
            domain = conn.defineXML(self._domain_xml(spec))
            return self._info(domain, host)

        return self._run(f"define VM {spec.vm_id} on {host.name}", call)

    def _domain_xml(self, spec: VirtualMachineSpec) -> str:
        disks = [_disk_xml(spec.root_volume, 0)] + [
            _disk_xml(volume, index) for index, volume in enumerate(spec.data_volumes, start=1)
        ]
        nics = [self._nic_xml(nic) for nic in sorted(spec.nics, key=lambda n: n.device_id)]
        return f"""<domain type='{self._domain_type}'>
  <name>{_escape(spec.name)}</name>
  <uuid>{libvirt_uuid(spec.vm_id)}</uuid>
  <title>{_escape(spec.name)}</title>
  <metadata><stratus:vm xmlns:stratus='{METADATA_NS}' id='{_escape(spec.vm_id)}'/></metadata>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.cpu_count}</vcpu>
  <cputune><shares>{max(2, spec.cpu_count * spec.cpu_speed_mhz)}</shares></cputune>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    {"".join(disks)}
    {"".join(nics)}
    <console type='pty'/>
  </devices>
</domain>"""

    def _nic_xml(self, nic: NicSpec) -> str:
        vlan = f"<vlan><tag id='{nic.vlan}'/></vlan>" if nic.vlan is not None else ""
        return (
            f"<interface type='network'><mac address='{_escape(nic.mac_address)}'/>"
            f"<source network='{_escape(self._network_source(nic))}'/>{vlan}"
            f"<model type='virtio'/></interface>"
        )

    def start_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            if not domain.isActive():
                domain.create()
            return self._info(domain, host)

        return self._run(f"start VM {vm_id} on {host.name}", call)

    def stop_vm(self, host: HostRef, vm_id: str, *, forced: bool = False) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            if domain.isActive() and not forced:
                domain.shutdown()
                deadline = time.monotonic() + self._shutdown_timeout
                while domain.isActive() and time.monotonic() < deadline:
                    time.sleep(0.2)
            if domain.isActive():
                try:
                    domain.destroy()
                except libvirt.libvirtError as error:
                    # It may have gone down by itself between the check and the destroy.
                    if domain.isActive():
                        raise error
            return self._info(domain, host)

        return self._run(f"stop VM {vm_id} on {host.name}", call)

    def reboot_vm(self, host: HostRef, vm_id: str) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            if not domain.isActive():
                raise DriverError(f"VM {vm_id} is not running; it cannot be rebooted")
            domain.reboot(0)
            return self._info(domain, host)

        return self._run(f"reboot VM {vm_id} on {host.name}", call)

    def destroy_vm(self, host: HostRef, vm_id: str) -> None:
        def call() -> None:
            domain = self._lookup_domain(self._connection(host), vm_id)
            if domain is None:
                return
            if domain.isActive():
                domain.destroy()
            _undefine(domain)

        self._run(f"destroy VM {vm_id} on {host.name}", call)

    # -- snapshots -------------------------------------------------------------------------
    @staticmethod
    def _snapshot_info(snapshot: libvirt.virDomainSnapshot, vm_id: str) -> SnapshotInfo:
        root = ElementTree.fromstring(snapshot.getXMLDesc(0))
        return SnapshotInfo(
            snapshot_id=snapshot.getName(),
            vm_id=vm_id,
            memory=(root.findtext("description") or "") == SNAPSHOT_MEMORY_MARK,
        )

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        def call() -> SnapshotInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            try:
                return self._snapshot_info(domain.snapshotLookupByName(snapshot_id), vm_id)
            except libvirt.libvirtError as error:
                if error.get_error_code() not in _NOT_FOUND:
                    raise
            # An internal snapshot of a running domain always holds its memory; a disk-only
            # one is marked so and reverted to a stopped VM.
            captured = memory and domain.isActive()
            mark = SNAPSHOT_MEMORY_MARK if captured else SNAPSHOT_DISK_MARK
            xml = (
                f"<domainsnapshot><name>{_escape(snapshot_id)}</name>"
                f"<description>{mark}</description></domainsnapshot>"
            )
            snapshot = domain.snapshotCreateXML(xml, 0)
            return self._snapshot_info(snapshot, vm_id)

        return self._run(f"snapshot VM {vm_id} as {snapshot_id}", call)

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        def call() -> list[SnapshotInfo]:
            domain = self._domain(self._connection(host), host, vm_id)
            return [self._snapshot_info(s, vm_id) for s in domain.listAllSnapshots(0)]

        return self._run(f"list snapshots of VM {vm_id}", call)

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            snapshot = domain.snapshotLookupByName(snapshot_id)
            info = self._snapshot_info(snapshot, vm_id)
            domain.revertToSnapshot(snapshot, 0)
            if not info.memory and domain.isActive():
                domain.destroy()
            return self._info(domain, host)

        return self._run(f"revert VM {vm_id} to snapshot {snapshot_id}", call)

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        def call() -> None:
            domain = self._lookup_domain(self._connection(host), vm_id)
            if domain is None:
                return
            try:
                snapshot = domain.snapshotLookupByName(snapshot_id)
            except libvirt.libvirtError as error:
                if error.get_error_code() in _NOT_FOUND:
                    return
                raise
            snapshot.delete(0)

        self._run(f"delete snapshot {snapshot_id} of VM {vm_id}", call)

    # -- volume attachment -----------------------------------------------------------------
    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        def call() -> list[VolumeAttachment]:
            domain = self._domain(self._connection(host), host, vm_id)
            return [
                VolumeAttachment(vm_id=vm_id, volume_id=disk.volume_id, device_id=disk.device_id)
                for disk in _disks(domain.XMLDesc(0))
            ]

        return self._run(f"list volumes of VM {vm_id}", call)

    @staticmethod
    def _device_flags(domain: libvirt.virDomain) -> int:
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if domain.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        return flags

    def attach_volume(
        self, host: HostRef, vm_id: str, volume: VolumeInfo, *, device_id: int
    ) -> VolumeAttachment:
        def call() -> VolumeAttachment:
            domain = self._domain(self._connection(host), host, vm_id)
            for disk in _disks(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)):
                if disk.volume_id == volume.volume_id:
                    return VolumeAttachment(vm_id, volume.volume_id, disk.device_id)
                if disk.device_id == device_id:
                    raise DriverError(
                        f"device {device_id} of VM {vm_id} holds volume {disk.volume_id}"
                    )
            domain.attachDeviceFlags(_disk_xml(volume, device_id), self._device_flags(domain))
            return VolumeAttachment(vm_id, volume.volume_id, device_id)

        return self._run(f"attach volume {volume.volume_id} to VM {vm_id}", call)

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        def call() -> None:
            domain = self._domain(self._connection(host), host, vm_id)
            for disk in _disks(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)):
                if disk.volume_id == volume_id:
                    domain.detachDeviceFlags(disk.xml, self._device_flags(domain))
                    return

        self._run(f"detach volume {volume_id} from VM {vm_id}", call)

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
            "copying a disk between primary storage pools is not implemented for KVM yet "
            "(it needs a storage-to-storage copy through the host or secondary storage)"
        )

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            source = self._connection(source_host)
            target = self._connection(target_host)
            domain = self._lookup_domain(source, vm_id)
            if domain is None:
                arrived = self._lookup_domain(target, vm_id)
                if arrived is not None:
                    return self._info(arrived, target_host)  # a retry after success
                raise DriverError(f"VM {vm_id} is on neither {source_host.name} nor target")
            flags = libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            if domain.isActive():
                flags |= libvirt.VIR_MIGRATE_LIVE
            else:
                flags |= libvirt.VIR_MIGRATE_OFFLINE
            if self._unsafe_migration:
                flags |= libvirt.VIR_MIGRATE_UNSAFE
            params: dict[str, str] = {}
            if self._migration_uri and domain.isActive():
                params[libvirt.VIR_MIGRATE_PARAM_URI] = self._migration_uri.format(
                    address=target_host.address, name=target_host.name
                )
            migrated = domain.migrate3(target, params, flags)
            return self._info(migrated, target_host)

        return self._run(f"migrate VM {vm_id} from {source_host.name} to {target_host.name}", call)

    # -- volume snapshots (issue 3) --------------------------------------------------------
    # A primary snapshot is a standalone qcow2 clone of the disk in its own pool
    # (`snapshot-<id>.qcow2`, the template's backing chain flattened into it). Its backup is a
    # clone into a directory pool on secondary storage (`<secondary>/snapshots`), templates go
    # to `<secondary>/templates`: the layout CloudStack's KVM agent keeps on its NFS store.

    @staticmethod
    def _snapshot_name(snapshot_id: str) -> str:
        return f"snapshot-{snapshot_id}.qcow2"

    @staticmethod
    def _template_name(template_id: str) -> str:
        return f"template-{template_id}.qcow2"

    def _secondary_pool(
        self, conn: libvirt.virConnect, secondary: SecondaryStorageRef, folder: str
    ) -> libvirt.virStoragePool:
        """The directory pool for `<secondary.path>/<folder>`, defined on first use.

        Found by its target path first: libvirt refuses a second pool on one directory.
        """
        path = str(Path(secondary.path) / folder)
        storage = None
        for candidate in conn.listAllStoragePools(0):
            target = ElementTree.fromstring(candidate.XMLDesc(0)).findtext("./target/path")
            if target is not None and target.rstrip("/") == path.rstrip("/"):
                storage = candidate
                break
        if storage is None:
            name = f"stratus-{folder}-{secondary.store_id}"
            xml = (
                f"<pool type='dir'><name>{_escape(name)}</name>"
                f"<target><path>{_escape(path)}</path></target></pool>"
            )
            storage = conn.storagePoolDefineXML(xml, 0)
            storage.build(0)
            storage.setAutostart(1)
        if not storage.isActive():
            storage.create(0)
        storage.refresh(0)
        return storage

    @staticmethod
    def _lookup_named(storage: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
        try:
            return storage.storageVolLookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() in _NOT_FOUND:
                return None
            raise

    @staticmethod
    def _clone(
        storage: libvirt.virStoragePool,
        name: str,
        source: libvirt.virStorageVol,
        capacity: int | None = None,
    ) -> libvirt.virStorageVol:
        """A standalone qcow2 copy of `source` named `name` in `storage`, at least `capacity`."""
        size = max(capacity or 0, source.info()[1])
        xml = (
            f"<volume><name>{_escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
            f"<target><format type='qcow2'/></target></volume>"
        )
        try:
            volume = storage.createXMLFrom(xml, source, 0)
        except libvirt.libvirtError as error:
            # A half-written copy (the copy failed midway) must not be
            # mistaken for a finished one by the retry.
            leftover = LibvirtKvmDriver._lookup_named(storage, name)
            if leftover is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    leftover.delete(0)
            if (
                error.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL
                and source.storagePoolLookupByVolume().name() != storage.name()
            ):
                # We hold the source: "not found" means this storage driver looks for it in
                # the target pool only (libvirt's test driver does), i.e. no cross-pool copy.
                raise UnsupportedOperationError(
                    f"this libvirt storage driver cannot copy volume {source.name()} into pool "
                    f"{storage.name()}: it clones volumes only within one pool"
                ) from error
            raise
        if volume.info()[1] < size:
            volume.resize(size, 0)
        return volume

    @staticmethod
    def _volume_snapshot_info(
        volume: libvirt.virStorageVol, snapshot_id: str, volume_id: str
    ) -> VolumeSnapshotInfo:
        _, capacity, _ = volume.info()
        return VolumeSnapshotInfo(snapshot_id, volume_id, volume.path(), capacity)

    def snapshot_volume(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> VolumeSnapshotInfo:
        def call() -> VolumeSnapshotInfo:
            conn = self._connection(host)
            storage = self._pool(conn, pool)
            existing = self._lookup_named(storage, self._snapshot_name(snapshot_id))
            if existing is not None:
                return self._volume_snapshot_info(existing, snapshot_id, volume_id)
            volume = self._lookup_volume(storage, volume_id)
            if volume is None:
                raise DriverError(f"volume {volume_id} is not in pool {pool.name}")
            name = self._snapshot_name(snapshot_id)
            user = self._running_user_of(conn, volume.path())
            if user is None:
                clone = self._clone(storage, name, volume)
            else:
                # QEMU holds the image (and its write lock): have QEMU itself copy the disk
                # as it is now, with a push-mode backup job, while the guest runs on.
                clone = self._live_copy(storage, user[0], user[1], name)
            return self._volume_snapshot_info(clone, snapshot_id, volume_id)

        return self._run(f"snapshot volume {volume_id} as {snapshot_id}", call)

    def _live_copy(
        self,
        storage: libvirt.virStoragePool,
        domain: libvirt.virDomain,
        target: str,
        name: str,
    ) -> libvirt.virStorageVol:
        """A point-in-time copy of a running guest's disk `target` as volume `name`."""
        self._wait_for_job(domain)  # a retry may find its first attempt's job still running
        storage.refresh(0)
        existing = self._lookup_named(storage, name)
        if existing is not None:
            return existing
        path = Path(ElementTree.fromstring(storage.XMLDesc(0)).findtext("./target/path") or "")
        disks = "".join(
            f"<disk name='{_escape(disk.target)}' backup='no'/>"
            if disk.target != target
            else (
                f"<disk name='{_escape(target)}' backup='yes' type='file'>"
                f"<target file='{_escape(str(path / name))}'/><driver type='qcow2'/></disk>"
            )
            for disk in _disks(domain.XMLDesc(0))
        )
        domain.backupBegin(f"<domainbackup mode='push'><disks>{disks}</disks></domainbackup>", None)
        self._wait_for_job(domain)
        stats = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        storage.refresh(0)
        copy = self._lookup_named(storage, name)
        if stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED or copy is None:
            if copy is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    copy.delete(0)
            raise DriverError(
                f"copying disk {target} of running VM {domain.name()} failed: "
                f"{stats.get('errmsg', 'the backup job did not complete')}",
                retryable=True,
            )
        return copy

    @staticmethod
    def _wait_for_job(domain: libvirt.virDomain) -> None:
        while domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            time.sleep(0.1)

    def backup_volume_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        snapshot_id: str,
        secondary: SecondaryStorageRef,
    ) -> VolumeSnapshotInfo:
        def call() -> VolumeSnapshotInfo:
            conn = self._connection(host)
            backups = self._secondary_pool(conn, secondary, "snapshots")
            name = self._snapshot_name(snapshot_id)
            existing = self._lookup_named(backups, name)
            if existing is not None:
                return self._volume_snapshot_info(existing, snapshot_id, volume_id)
            snapshot = self._lookup_named(self._pool(conn, pool), name)
            if snapshot is None:
                raise DriverError(
                    f"snapshot {snapshot_id} of volume {volume_id} is not on primary storage "
                    f"{pool.name}; nothing to back up"
                )
            backup = self._clone(backups, name, snapshot)
            return self._volume_snapshot_info(backup, snapshot_id, volume_id)

        return self._run(f"back up snapshot {snapshot_id} to {secondary.name}", call)

    def delete_volume_snapshot(
        self, host: HostRef, pool: StoragePoolRef, volume_id: str, snapshot_id: str
    ) -> None:
        def call() -> None:
            storage = self._pool(self._connection(host), pool)
            snapshot = self._lookup_named(storage, self._snapshot_name(snapshot_id))
            if snapshot is not None:
                snapshot.delete(0)

        self._run(f"delete snapshot {snapshot_id} of volume {volume_id} in {pool.name}", call)

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        def call() -> None:
            backups = self._secondary_pool(self._connection(host), secondary, "snapshots")
            backup = self._lookup_named(backups, self._snapshot_name(snapshot_id))
            if backup is not None:
                backup.delete(0)

        self._run(f"delete backup of snapshot {snapshot_id} on {secondary.name}", call)

    def _backup(
        self, conn: libvirt.virConnect, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> libvirt.virStorageVol:
        backups = self._secondary_pool(conn, secondary, "snapshots")
        backup = self._lookup_named(backups, self._snapshot_name(snapshot_id))
        if backup is None:
            raise DriverError(
                f"snapshot {snapshot_id} has no backup on secondary storage {secondary.name}"
            )
        return backup

    def revert_volume_to_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        volume_id: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        def call() -> VolumeInfo:
            conn = self._connection(host)
            backup = self._backup(conn, secondary, snapshot_id)
            storage = self._pool(conn, pool)
            volume = self._lookup_volume(storage, volume_id)
            if volume is not None:
                user = self._running_user_of(conn, volume.path())
                if user is not None:
                    raise DriverError(
                        f"volume {volume_id} is in use by running VM {user[0].name()}; stop it "
                        "or detach the volume before reverting"
                    )
                volume.delete(0)
            # No volume here is a revert interrupted between the delete and the copy: finish it.
            # The disk becomes the snapshot again, its size included.
            reverted = self._clone(storage, self._volume_name(volume_id), backup)
            return self._volume_info(reverted, volume_id, pool)

        return self._run(f"revert volume {volume_id} to snapshot {snapshot_id}", call)

    def create_volume_from_snapshot(
        self,
        host: HostRef,
        pool: StoragePoolRef,
        spec: VolumeSpec,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> VolumeInfo:
        def call() -> VolumeInfo:
            conn = self._connection(host)
            storage = self._pool(conn, pool)
            existing = self._lookup_volume(storage, spec.volume_id)
            if existing is not None:
                return self._volume_info(existing, spec.volume_id, pool)
            backup = self._backup(conn, secondary, snapshot_id)
            name = self._volume_name(spec.volume_id)
            volume = self._clone(storage, name, backup, spec.size_bytes)
            return self._volume_info(volume, spec.volume_id, pool)

        return self._run(
            f"create volume {spec.volume_id} from snapshot {snapshot_id} in {pool.name}", call
        )

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        def call() -> TemplateRef:
            conn = self._connection(host)
            templates = self._secondary_pool(conn, secondary, "templates")
            name = self._template_name(template_id)
            image = self._lookup_named(templates, name)
            if image is None:
                image = self._clone(templates, name, self._backup(conn, secondary, snapshot_id))
            return TemplateRef(
                template_id=template_id,
                name=f"from-snapshot-{snapshot_id}",
                url=Path(image.path()).as_uri(),
                format="QCOW2",
                size_bytes=image.info()[1],
            )

        return self._run(f"create template {template_id} from snapshot {snapshot_id}", call)

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        def call() -> None:
            conn = self._connection(host)
            templates = self._secondary_pool(conn, secondary, "templates")
            image = self._lookup_named(templates, self._template_name(template_id))
            if image is not None:
                image.delete(0)

        self._run(f"delete template {template_id}", call)


# -- XML helpers ---------------------------------------------------------------------------


class _Disk:
    """A disk as read back from domain XML."""

    def __init__(self, element: ElementTree.Element) -> None:
        source = element.find("source")
        target = element.find("target")
        self.path = "" if source is None else source.get("file", "")
        self.target = "" if target is None else target.get("dev", "")
        self.volume_id = Path(self.path).name.removesuffix(".qcow2")
        self.device_id = _device_id(self.target)
        self.xml = ElementTree.tostring(element, encoding="unicode")


def _disks(domain_xml: str) -> list[_Disk]:
    root = ElementTree.fromstring(domain_xml)
    return [_Disk(e) for e in root.findall("./devices/disk[@device='disk']")]


def _device_name(device_id: int) -> str:
    """sda, sdb, ... sdz, sdaa: device 0 is the root disk."""
    letters = ""
    index = device_id
    while True:
        letters = chr(ord("a") + index % 26) + letters
        index = index // 26 - 1
        if index < 0:
            return f"sd{letters}"


def _device_id(target: str) -> int:
    index = 0
    for letter in target.removeprefix("sd").removeprefix("vd"):
        index = index * 26 + (ord(letter) - ord("a") + 1)
    return index - 1


def _disk_xml(volume: VolumeInfo, device_id: int) -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{_escape(volume.path)}'/>"
        f"<target dev='{_device_name(device_id)}' bus='scsi'/></disk>"
    )


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")
    )


def _undefine(domain: libvirt.virDomain) -> None:
    """Undefine with its snapshot metadata and managed save, falling back where unsupported."""
    try:
        domain.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
    except libvirt.libvirtError as error:
        if not isinstance(translate_libvirt_error(error, ""), UnsupportedOperationError):
            raise
        domain.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        )


def template_path(url: str) -> str:
    """Where a template image is on the host: a `file://` URL or a plain absolute path.

    Templates are copied to the host's storage before use (secondary → primary); an http URL
    here means that copy has not happened, which no retry will fix.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return parsed.path
    raise UnsupportedOperationError(
        f"template {url} must be on the host's storage first (file:// URL or path)"
    )
