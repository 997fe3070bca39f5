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

One module per concern: `connection` (endpoints, sessions, tasks, fault translation), `vms`
(with `devices`), `disks` (VMDK files), `volumes`, `snapshots` (VM snapshots),
`volume_snapshots`, `secondary_storage` (backups and templates), `migration`; `driver`
composes them into `VSphereDriver`.
"""

from activities.drivers.conventions import (
    SNAPSHOT_DISK_MARK,
    SNAPSHOT_MEMORY_MARK,
    STRATUS_UUID_NAMESPACE,
)
from activities.drivers.conventions import stratus_uuid as vsphere_uuid
from activities.drivers.vsphere.connection import VM_ID_KEY, VCenterEndpoint, translate_fault
from activities.drivers.vsphere.devices import SCSI_CONTROLLER_KEY
from activities.drivers.vsphere.disks import COPYING_SUFFIX
from activities.drivers.vsphere.driver import VSphereDriver
from activities.drivers.vsphere.secondary_storage import secondary_datastore_name
from activities.drivers.vsphere.snapshots import (
    VOLUME_SNAPSHOT_MARK,
    VOLUME_SNAPSHOT_PREFIX,
    volume_snapshot_vm_snapshot_name,
)

__all__ = [
    "COPYING_SUFFIX",
    "SCSI_CONTROLLER_KEY",
    "SNAPSHOT_DISK_MARK",
    "SNAPSHOT_MEMORY_MARK",
    "STRATUS_UUID_NAMESPACE",
    "VM_ID_KEY",
    "VOLUME_SNAPSHOT_MARK",
    "VOLUME_SNAPSHOT_PREFIX",
    "VCenterEndpoint",
    "VSphereDriver",
    "secondary_datastore_name",
    "translate_fault",
    "volume_snapshot_vm_snapshot_name",
    "vsphere_uuid",
]
