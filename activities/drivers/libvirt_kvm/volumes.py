"""Volumes on a KVM host: qcow2 files in libvirt storage pools, plugged into domains as disks.

A volume is `<volume_id>.qcow2` in the libvirt pool named as its Stratus pool (a directory pool,
defined on first use), backed by the template image when one is given. A disk a running VM holds
open is grown through that VM (QEMU owns the image then), and plugged or unplugged live as well
as in the persistent definition.
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import libvirt

from activities.drivers.conventions import RefusesVolumeCopies, shrink_refused
from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    StoragePoolRef,
    UnsupportedOperationError,
    VolumeAttachment,
    VolumeInfo,
    VolumeSpec,
)
from activities.drivers.libvirt_kvm.connection import NOT_FOUND, LibvirtConnection
from activities.drivers.libvirt_kvm.domain_xml import disk_xml, disks, escape


def volume_name(volume_id: str) -> str:
    return f"{volume_id}.qcow2"


def lookup_named(storage: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return storage.storageVolLookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() in NOT_FOUND:
            return None
        raise


def define_directory_pool(conn: libvirt.virConnect, name: str, path: str) -> libvirt.virStoragePool:
    """A new directory pool `name` on `path`, built and started with the daemon from now on."""
    xml = (
        f"<pool type='dir'><name>{escape(name)}</name>"
        f"<target><path>{escape(path)}</path></target></pool>"
    )
    storage = conn.storagePoolDefineXML(xml, 0)
    storage.build(0)
    storage.setAutostart(1)
    return storage


#: Held while a pool is looked up, defined or started (see `LibvirtVolumes._pool`).
_POOL_SETUP = threading.Lock()


def _defined_once(conn: libvirt.virConnect, pool: StoragePoolRef) -> libvirt.virStoragePool:
    try:
        return define_directory_pool(conn, pool.name, pool.path)
    except libvirt.libvirtError:
        try:  # defined meanwhile by another process on this host: use that one
            return conn.storagePoolLookupByName(pool.name)
        except libvirt.libvirtError:
            pass
        raise


def refreshed(storage: libvirt.virStoragePool) -> libvirt.virStoragePool:
    """The pool, started and rescanned: another host may have written to shared storage since
    we last looked."""
    if not storage.isActive():
        storage.create(0)
    try:
        storage.refresh(0)
    except libvirt.libvirtError as error:
        # A volume being made in it right now (another activity on this host): libvirt
        # refuses a rescan until that ends, and what it makes is known to libvirt already.
        if "asynchronous jobs running" not in str(error):
            raise
    return storage


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


class LibvirtVolumes(RefusesVolumeCopies, LibvirtConnection):
    """Creating, growing and deleting volumes, and plugging them into domains."""

    volume_copy_refusal = (
        "copying a disk between primary storage pools is not implemented for KVM yet "
        "(it needs a storage-to-storage copy through the host or secondary storage)"
    )

    def _pool(self, conn: libvirt.virConnect, pool: StoragePoolRef) -> libvirt.virStoragePool:
        """The libvirt pool for a Stratus pool, defined as a directory pool on first use.

        Two activities on one host (two deploys at once) both find no pool the first time: the
        agent's threads set a pool up one at a time, and a pool another process defined in the
        meantime is looked up rather than defined twice."""
        with _POOL_SETUP:
            try:
                storage = conn.storagePoolLookupByName(pool.name)
            except libvirt.libvirtError as error:
                if error.get_error_code() not in NOT_FOUND:
                    raise
                storage = _defined_once(conn, pool)
            return refreshed(storage)

    @staticmethod
    def _lookup_volume(
        storage: libvirt.virStoragePool, volume_id: str
    ) -> libvirt.virStorageVol | None:
        return lookup_named(storage, volume_name(volume_id))

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
                    f"<backingStore><path>{escape(template_path(spec.template.url))}</path>"
                    f"<format type='{spec.template.format.lower()}'/></backingStore>"
                )
            xml = (
                f"<volume><name>{volume_name(spec.volume_id)}</name>"
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
                raise shrink_refused(volume_id, current, size_bytes)
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
            for disk in disks(domain.XMLDesc(0)):
                if disk.path == path:
                    return domain, disk.target
        return None

    # -- attachment ------------------------------------------------------------------------
    def list_volume_attachments(self, host: HostRef, vm_id: str) -> list[VolumeAttachment]:
        def call() -> list[VolumeAttachment]:
            domain = self._domain(self._connection(host), host, vm_id)
            return [
                VolumeAttachment(vm_id=vm_id, volume_id=disk.volume_id, device_id=disk.device_id)
                for disk in disks(domain.XMLDesc(0))
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
            for disk in disks(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)):
                if disk.volume_id == volume.volume_id:
                    return VolumeAttachment(vm_id, volume.volume_id, disk.device_id)
                if disk.device_id == device_id:
                    raise DriverError(
                        f"device {device_id} of VM {vm_id} holds volume {disk.volume_id}"
                    )
            domain.attachDeviceFlags(disk_xml(volume, device_id), self._device_flags(domain))
            return VolumeAttachment(vm_id, volume.volume_id, device_id)

        return self._run(f"attach volume {volume.volume_id} to VM {vm_id}", call)

    def detach_volume(self, host: HostRef, vm_id: str, volume_id: str) -> None:
        def call() -> None:
            domain = self._domain(self._connection(host), host, vm_id)
            for disk in disks(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)):
                if disk.volume_id == volume_id:
                    domain.detachDeviceFlags(disk.xml, self._device_flags(domain))
                    return

        self._run(f"detach volume {volume_id} from VM {vm_id}", call)
