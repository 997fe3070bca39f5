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

One module per concern: `connection` (URIs, connections, deadlines, error translation), `vms`,
`volumes`, `snapshots` (VM snapshots), `volume_snapshots` (with backups and templates),
`migration`; `driver` composes them into `LibvirtKvmDriver`.
"""

from activities.drivers.conventions import (
    SNAPSHOT_DISK_MARK,
    SNAPSHOT_MEMORY_MARK,
    STRATUS_UUID_NAMESPACE,
)
from activities.drivers.conventions import stratus_uuid as libvirt_uuid
from activities.drivers.libvirt_kvm.connection import METADATA_NS, translate_libvirt_error
from activities.drivers.libvirt_kvm.driver import LibvirtKvmDriver
from activities.drivers.libvirt_kvm.volumes import template_path

__all__ = [
    "METADATA_NS",
    "SNAPSHOT_DISK_MARK",
    "SNAPSHOT_MEMORY_MARK",
    "STRATUS_UUID_NAMESPACE",
    "LibvirtKvmDriver",
    "libvirt_uuid",
    "template_path",
    "translate_libvirt_error",
]
