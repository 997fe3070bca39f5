"""What users choose from: service offerings, disk offerings and templates."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import InvalidParameter

GIB = 1024**3


class HypervisorType(StrEnum):
    SIMULATOR = "Simulator"
    KVM = "KVM"
    VMWARE = "VMware"
    XENSERVER = "XenServer"
    BAREMETAL = "BareMetal"


class ServiceOffering(CloudAggregate):
    @event("Created")
    def __init__(
        self,
        name: str,
        display_text: str,
        cpu_count: int,
        cpu_speed_mhz: int,
        memory_mib: int,
        ha_enabled: bool = False,
        host_tags: list[str] | None = None,
    ) -> None:
        if cpu_count <= 0 or cpu_speed_mhz <= 0 or memory_mib <= 0:
            raise InvalidParameter("cpu_count, cpu_speed_mhz and memory_mib must be positive")
        self.name = name
        self.display_text = display_text
        self.cpu_count = cpu_count
        self.cpu_speed_mhz = cpu_speed_mhz
        self.memory_mib = memory_mib
        self.ha_enabled = ha_enabled
        self.host_tags: list[str] = list(host_tags or [])
        self.active = True

    @property
    def cpu_mhz(self) -> int:
        """What a VM of this offering reserves on a host: cores × speed, as CloudStack counts."""
        return self.cpu_count * self.cpu_speed_mhz


class DiskOffering(CloudAggregate):
    @event("Created")
    def __init__(
        self, name: str, display_text: str, size_bytes: int, customized: bool = False
    ) -> None:
        if size_bytes < 0 or (size_bytes == 0 and not customized):
            raise InvalidParameter("a fixed-size disk offering needs a positive size_bytes")
        self.name = name
        self.display_text = display_text
        self.size_bytes = size_bytes
        self.customized = customized
        self.active = True


class TemplateState(StrEnum):
    READY = "Ready"
    INACTIVE = "Inactive"


class Template(CloudAggregate):
    @event("Registered")
    def __init__(
        self,
        name: str,
        display_text: str,
        hypervisor: str,
        format: str,
        os_type: str,
        url: str,
        size_bytes: int,
        zone_id: UUID | None = None,
        account_id: UUID | None = None,
        public: bool = True,
    ) -> None:
        if size_bytes <= 0:
            raise InvalidParameter("template size_bytes must be positive")
        self.name = name
        self.display_text = display_text
        self.hypervisor = HypervisorType(hypervisor)
        self.format = format
        self.os_type = os_type
        self.url = url
        self.size_bytes = size_bytes
        self.zone_id = zone_id
        self.account_id = account_id
        self.public = public
        self.state = TemplateState.READY

    def is_available_in(self, zone_id: UUID) -> bool:
        return self.state is TemplateState.READY and self.zone_id in (None, zone_id)

    def is_usable_by(self, account_id: UUID, is_admin: bool) -> bool:
        return self.public or is_admin or self.account_id == account_id
