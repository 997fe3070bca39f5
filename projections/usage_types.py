"""CloudStack's usage types, and the declarations that say which events meter them.

A usage type is metered by declaring, for one resource kind, which events *describe* the
resource (owner, zone, offering, template, size: its facts), which events *open* an interval of
usage and which *close* it. The usage projection (`projections.usage`) knows nothing about VMs
or volumes: it applies these declarations to every event. A fact that changes while an interval
is open (a volume resized, a VM scaled to another offering) splits the interval at that moment,
so each record carries the size or offering that was really in use. Adding IP_ADDRESS or
NETWORK_OFFERING later means adding a `ResourceFacts` and a `UsageDeclaration` here, nothing else.

Events that another issue is still building (an explicit VM removal, a volume resize) are looked
up by name with `optional_event`: the declaration picks them up as soon as the class exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from eventsourcing.utils import get_topic

from domain.account import Account
from domain.catalog import Template
from domain.snapshot import Snapshot, SnapshotState
from domain.virtual_machine import VirtualMachine, VmState
from domain.vm_snapshot import VmSnapshot, VmSnapshotState
from domain.volume import Volume, VolumeState

Facts = dict[str, Any]


class UsageType(IntEnum):
    """The numeric ids are part of the export format (CloudStack's usage types)."""

    RUNNING_VM = 1
    ALLOCATED_VM = 2
    IP_ADDRESS = 3
    NETWORK_BYTES_SENT = 4
    NETWORK_BYTES_RECEIVED = 5
    VOLUME = 6
    TEMPLATE = 7
    ISO = 8
    SNAPSHOT = 9
    SECURITY_GROUP = 10
    LOAD_BALANCER_POLICY = 11
    PORT_FORWARDING_RULE = 12
    NETWORK_OFFERING = 13
    VPN_USERS = 14
    VM_DISK_IO_READ = 21
    VM_DISK_IO_WRITE = 22
    VM_DISK_BYTES_READ = 23
    VM_DISK_BYTES_WRITE = 24
    VM_SNAPSHOT = 25
    VOLUME_SECONDARY = 26
    VM_SNAPSHOT_ON_PRIMARY = 27
    BACKUP = 28

    @classmethod
    def parse(cls, value: str) -> UsageType:
        """'1', 'RUNNING_VM' or 'running_vm'; ValueError for anything else."""
        text = value.strip()
        if text.isdigit():
            return cls(int(text))
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown usage type {value!r}") from None


USAGE_TYPE_DESCRIPTIONS: Mapping[UsageType, str] = {
    UsageType.RUNNING_VM: "Running Vm Usage",
    UsageType.ALLOCATED_VM: "Allocated Vm Usage",
    UsageType.IP_ADDRESS: "IP Address Usage",
    UsageType.NETWORK_BYTES_SENT: "Network Usage (Bytes Sent)",
    UsageType.NETWORK_BYTES_RECEIVED: "Network Usage (Bytes Received)",
    UsageType.VOLUME: "Volume Usage",
    UsageType.TEMPLATE: "Template Usage",
    UsageType.ISO: "ISO Usage",
    UsageType.SNAPSHOT: "Snapshot Usage",
    UsageType.SECURITY_GROUP: "Security Group Usage",
    UsageType.LOAD_BALANCER_POLICY: "Load Balancer Usage",
    UsageType.PORT_FORWARDING_RULE: "Port Forwarding Usage",
    UsageType.NETWORK_OFFERING: "Network Offering Usage",
    UsageType.VPN_USERS: "VPN users usage",
    UsageType.VM_DISK_IO_READ: "VM Disk usage(I/O Read)",
    UsageType.VM_DISK_IO_WRITE: "VM Disk usage(I/O Write)",
    UsageType.VM_DISK_BYTES_READ: "VM Disk usage(Bytes Read)",
    UsageType.VM_DISK_BYTES_WRITE: "VM Disk usage(Bytes Write)",
    UsageType.VM_SNAPSHOT: "VM Snapshot storage usage",
    UsageType.VOLUME_SECONDARY: "Volume on secondary storage usage",
    UsageType.VM_SNAPSHOT_ON_PRIMARY: "VM Snapshot on primary storage usage",
    UsageType.BACKUP: "Backup storage usage",
}


def optional_event(aggregate: type, name: str) -> type | None:
    """An event class another issue may not have added yet; None until it exists."""
    found = getattr(aggregate, name, None)
    return found if isinstance(found, type) else None


def event_of(aggregate: type, name: str) -> type:
    """An aggregate's event class by name (the classes `@event` makes are not typed)."""
    found = optional_event(aggregate, name)
    if found is None:
        raise LookupError(f"{aggregate.__name__} has no event {name}")
    return found


def _always(_: Any) -> bool:
    return True


@dataclass(frozen=True)
class EventRule:
    """Events of `event_class` for which `when(event)` holds."""

    event_class: type
    when: Callable[[Any], bool] = _always

    @property
    def topic(self) -> str:
        return get_topic(self.event_class)


def on(event_class: type | None, when: Callable[[Any], bool] = _always) -> tuple[EventRule, ...]:
    """A rule, or none while `event_class` does not exist yet (see `optional_event`)."""
    return () if event_class is None else (EventRule(event_class, when),)


@dataclass(frozen=True)
class ResourceFacts:
    """How events of one aggregate describe the metered resource (the aggregate itself).

    `extract` returns the facts an event states; they are merged into what is already known.
    Standard fact names: account_id, zone_id, name, and whatever the declarations below name as
    their offering, template and size facts.
    """

    kind: str
    event_class: type
    extract: Callable[[Any], Facts]

    @property
    def topic(self) -> str:
        return get_topic(self.event_class)


@dataclass(frozen=True)
class UsageDeclaration:
    """One metered usage type of one resource kind.

    An interval opens on an `opens` event (if none is open) and closes on a `closes` event (if
    one is open). The record fields `offering_id`, `template_id` and `size_bytes` come from the
    facts named here; when one of them changes while an interval is open, the interval is split.
    `description` is formatted with the record's fields (`resource_name`, `size_gib`, ...).
    """

    usage_type: UsageType
    kind: str
    opens: tuple[EventRule, ...]
    closes: tuple[EventRule, ...]
    description: str
    offering_fact: str | None = None
    template_fact: str | None = None
    size_fact: str | None = None
    #: Facts that must be known for usage to be metered (a template nobody owns is not billed).
    required_facts: tuple[str, ...] = field(default=("account_id", "zone_id"))

    def attributes(self, facts: Mapping[str, Any]) -> Facts:
        """The record attributes an interval carries, from the resource's facts."""
        return {
            "account_id": facts.get("account_id"),
            "zone_id": facts.get("zone_id"),
            "resource_name": facts.get("name"),
            "offering_id": facts.get(self.offering_fact) if self.offering_fact else None,
            "template_id": facts.get(self.template_fact) if self.template_fact else None,
            "size_bytes": facts.get(self.size_fact) if self.size_fact else None,
        }

    def meters(self, facts: Mapping[str, Any]) -> bool:
        return all(facts.get(name) is not None for name in self.required_facts)


# --- What the VM's and the volume's state machines mean for usage -------------------------

#: A VM is running, for RUNNING_VM, from entering Running until it is stopped: a migration or
#: a stop that fails back to Running do not interrupt it (CloudStack emits VM.STOP on Stopped).
_VM_STILL_RUNNING = frozenset({VmState.RUNNING, VmState.MIGRATING, VmState.STOPPING})
#: A volume exists on storage, for VOLUME, from Ready until destroyed.
_VOLUME_GONE = frozenset({VolumeState.DESTROY, VolumeState.EXPUNGING, VolumeState.EXPUNGED})


def _vm_enters_running(e: Any) -> bool:
    return bool(e.new_state == VmState.RUNNING)


def _vm_stops_running(e: Any) -> bool:
    return e.new_state not in _VM_STILL_RUNNING


def _vm_expunging(e: Any) -> bool:
    return bool(e.new_state == VmState.EXPUNGING)


def _volume_ready(e: Any) -> bool:
    return bool(e.new_state == VolumeState.READY)


def _volume_gone(e: Any) -> bool:
    return e.new_state in _VOLUME_GONE


def _vm_snapshot_ready(e: Any) -> bool:
    return bool(e.new_state == VmSnapshotState.READY)


def _vm_snapshot_removed(e: Any) -> bool:
    return bool(e.new_state == VmSnapshotState.REMOVED)


def _snapshot_destroyed(e: Any) -> bool:
    return bool(e.new_state == SnapshotState.DESTROYED)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


# --- Facts --------------------------------------------------------------------------------

_VolumeResized = optional_event(Volume, "Resized")

RESOURCE_FACTS: tuple[ResourceFacts, ...] = (
    ResourceFacts(
        "account",
        event_of(Account, "Created"),
        lambda e: {"name": e.name, "domain": e.domain},
    ),
    ResourceFacts(
        "virtual_machine",
        event_of(VirtualMachine, "Registered"),
        lambda e: {
            "account_id": _str(e.account_id),
            "zone_id": _str(e.zone_id),
            "name": e.name,
            "service_offering_id": _str(e.service_offering_id),
            "template_id": _str(e.template_id),
        },
    ),
    # RUNNING_VM/ALLOCATED_VM carry the offering and template: a stopped VM scaled to another
    # offering (VM.UPGRADE) or restored from another template splits its intervals there.
    ResourceFacts(
        "virtual_machine",
        event_of(VirtualMachine, "ServiceOfferingChanged"),
        lambda e: {"service_offering_id": _str(e.service_offering_id)},
    ),
    ResourceFacts(
        "virtual_machine",
        event_of(VirtualMachine, "RootVolumeReplaced"),
        lambda e: {"template_id": _str(e.template_id)},
    ),
    ResourceFacts(
        "volume",
        event_of(Volume, "Allocated"),
        lambda e: {
            "account_id": _str(e.account_id),
            "zone_id": _str(e.zone_id),
            "name": e.name,
            "disk_offering_id": _str(e.disk_offering_id),
            "template_id": _str(e.template_id),
            "size_bytes": e.size_bytes,
        },
    ),
    ResourceFacts("volume", event_of(Volume, "Created"), lambda e: {"size_bytes": e.size_bytes}),
    *(
        ()
        if _VolumeResized is None
        else (
            ResourceFacts(
                "volume",
                _VolumeResized,
                lambda e: {"size_bytes": getattr(e, "new_size_bytes", None) or e.size_bytes},
            ),
        )
    ),
    ResourceFacts(
        "vm_snapshot",
        event_of(VmSnapshot, "Allocated"),
        lambda e: {
            "account_id": _str(e.account_id),
            "zone_id": _str(e.zone_id),
            "name": e.name,
            "vm_id": _str(e.vm_id),
        },
    ),
    ResourceFacts(
        "snapshot",
        event_of(Snapshot, "Allocated"),
        lambda e: {
            "account_id": _str(e.account_id),
            "zone_id": _str(e.zone_id),
            "name": e.name,
            "volume_id": _str(e.volume_id),
        },
    ),
    ResourceFacts(
        "snapshot",
        event_of(Snapshot, "BackedUp"),
        lambda e: {"size_bytes": e.physical_size_bytes},
    ),
    ResourceFacts(
        "template",
        event_of(Template, "Registered"),
        lambda e: {
            "account_id": _str(e.account_id),
            "zone_id": _str(e.zone_id),
            "name": e.name,
            "size_bytes": e.size_bytes,
        },
    ),
)

# --- Declarations -------------------------------------------------------------------------

USAGE_DECLARATIONS: tuple[UsageDeclaration, ...] = (
    UsageDeclaration(
        UsageType.RUNNING_VM,
        "virtual_machine",
        opens=on(event_of(VirtualMachine, "Transitioned"), _vm_enters_running),
        closes=(
            *on(event_of(VirtualMachine, "Transitioned"), _vm_stops_running),
            *on(optional_event(VirtualMachine, "Removed")),
        ),
        description="{resource_name} running time",
        offering_fact="service_offering_id",
        template_fact="template_id",
    ),
    UsageDeclaration(
        UsageType.ALLOCATED_VM,
        "virtual_machine",
        opens=on(event_of(VirtualMachine, "Registered")),
        closes=(
            *on(event_of(VirtualMachine, "Transitioned"), _vm_expunging),
            *on(optional_event(VirtualMachine, "Removed")),
        ),
        description="{resource_name} allocated time",
        offering_fact="service_offering_id",
        template_fact="template_id",
    ),
    UsageDeclaration(
        UsageType.VOLUME,
        "volume",
        opens=(
            *on(event_of(Volume, "Created")),
            *on(event_of(Volume, "Transitioned"), _volume_ready),
        ),
        closes=(
            *on(event_of(Volume, "Transitioned"), _volume_gone),
            *on(optional_event(Volume, "Expunged")),
        ),
        description="Volume {resource_name} ({size_gib} GiB) usage time",
        offering_fact="disk_offering_id",
        template_fact="template_id",
        size_fact="size_bytes",
    ),
    UsageDeclaration(
        UsageType.VM_SNAPSHOT,
        "vm_snapshot",
        # From Ready (made, or back from a revert: already open) until Removed; a snapshot in
        # Error after a failed delete may still exist, so it stays metered until removed.
        opens=(
            *on(event_of(VmSnapshot, "Created"), _vm_snapshot_ready),
            *on(event_of(VmSnapshot, "Transitioned"), _vm_snapshot_ready),
        ),
        closes=on(event_of(VmSnapshot, "Transitioned"), _vm_snapshot_removed),
        description="VM snapshot {resource_name} usage time",
    ),
    UsageDeclaration(
        UsageType.SNAPSHOT,
        "snapshot",
        # From the backup on secondary storage (what is stored and billed) until Destroyed; a
        # failed delete (back to BackedUp) does not interrupt it.
        opens=on(event_of(Snapshot, "BackedUp")),
        closes=on(event_of(Snapshot, "Transitioned"), _snapshot_destroyed),
        description="Snapshot {resource_name} ({size_gib} GiB) usage time",
        size_fact="size_bytes",
    ),
    UsageDeclaration(
        UsageType.TEMPLATE,
        "template",
        opens=on(event_of(Template, "Registered")),
        closes=on(optional_event(Template, "Deleted")),
        description="Template {resource_name} ({size_gib} GiB) usage time",
        template_fact="id",
        size_fact="size_bytes",
    ),
)


@dataclass(frozen=True)
class UsageCatalog:
    """The declarations a projection applies, indexed by event topic."""

    facts: tuple[ResourceFacts, ...]
    declarations: tuple[UsageDeclaration, ...]

    def __post_init__(self) -> None:
        by_topic: dict[str, list[ResourceFacts]] = {}
        for facts in self.facts:
            by_topic.setdefault(facts.topic, []).append(facts)
        edges: dict[str, list[tuple[UsageDeclaration, EventRule, bool]]] = {}
        for declaration in self.declarations:
            for rule in declaration.opens:
                edges.setdefault(rule.topic, []).append((declaration, rule, True))
            for rule in declaration.closes:
                edges.setdefault(rule.topic, []).append((declaration, rule, False))
        object.__setattr__(self, "_facts_by_topic", by_topic)
        object.__setattr__(self, "_edges_by_topic", edges)

    def facts_for(self, event_class: type) -> list[ResourceFacts]:
        """The facts rules of an event class, or of the class it specialises (an event of a
        subclassed aggregate is a subclass of the base aggregate's event)."""
        return self._matching(event_class, self.__dict__["_facts_by_topic"])

    def edges_for(self, event_class: type) -> list[tuple[UsageDeclaration, EventRule, bool]]:
        """(declaration, rule, opens?) for each declaration the class's events may affect."""
        return self._matching(event_class, self.__dict__["_edges_by_topic"])

    def _matching(self, event_class: type, by_topic: dict[str, list[Any]]) -> list[Any]:
        cache: dict[tuple[int, type], list[Any]] = self.__dict__.setdefault("_cache", {})
        key = (id(by_topic), event_class)
        found = cache.get(key)
        if found is None:
            found = []
            for cls in event_class.__mro__:
                found.extend(by_topic.get(get_topic(cls), ()))
            cache[key] = found
        return found

    def declarations_of(self, kind: str) -> list[UsageDeclaration]:
        return [d for d in self.declarations if d.kind == kind]

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(sorted({*self.__dict__["_facts_by_topic"], *self.__dict__["_edges_by_topic"]}))

    def metered_types(self) -> frozenset[UsageType]:
        return frozenset(d.usage_type for d in self.declarations)

    def extended(
        self, facts: tuple[ResourceFacts, ...], declarations: tuple[UsageDeclaration, ...]
    ) -> UsageCatalog:
        """This catalog plus more kinds: how a new resource kind joins the projection."""
        return UsageCatalog(self.facts + facts, self.declarations + declarations)


USAGE_CATALOG = UsageCatalog(RESOURCE_FACTS, USAGE_DECLARATIONS)
