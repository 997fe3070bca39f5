"""The XenServer driver, composed from one part per concern of the hypervisor contract."""

from __future__ import annotations

from activities.drivers.xenserver.migration import XenServerMigration
from activities.drivers.xenserver.restores import XenServerRestores
from activities.drivers.xenserver.vms import XenServerVms
from activities.drivers.xenserver.volumes import XenServerVolumes


class XenServerDriver(XenServerVms, XenServerVolumes, XenServerRestores, XenServerMigration):
    """A `HypervisorDriver` for XenServer / XCP-ng pools."""

    hypervisor = "XenServer"
