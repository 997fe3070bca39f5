"""The vSphere driver, composed from one part per concern of the hypervisor contract."""

from __future__ import annotations

from activities.drivers.vsphere.migration import VSphereMigration
from activities.drivers.vsphere.vms import VSphereVms
from activities.drivers.vsphere.volume_snapshots import VSphereVolumeSnapshots
from activities.drivers.vsphere.volumes import VSphereVolumes


class VSphereDriver(VSphereVms, VSphereVolumes, VSphereVolumeSnapshots, VSphereMigration):
    """A `HypervisorDriver` for ESXi hosts managed by vCenter."""

    hypervisor = "VMware"
