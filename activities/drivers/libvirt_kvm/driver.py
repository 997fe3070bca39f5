"""The KVM driver, composed from one part per concern of the hypervisor contract."""

from __future__ import annotations

from activities.drivers.libvirt_kvm.migration import LibvirtMigration
from activities.drivers.libvirt_kvm.snapshots import LibvirtSnapshots
from activities.drivers.libvirt_kvm.vms import LibvirtVms
from activities.drivers.libvirt_kvm.volume_snapshots import LibvirtVolumeSnapshots


class LibvirtKvmDriver(LibvirtVms, LibvirtVolumeSnapshots, LibvirtSnapshots, LibvirtMigration):
    """A `HypervisorDriver` over libvirt, for KVM (or TCG, or libvirt's test driver)."""

    hypervisor = "KVM"
