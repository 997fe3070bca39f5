"""Stratus's resources as CloudStack names their fields: what `/v1` answers, renamed.

Each function takes what the `/v1` route returned (its public model, or an inventory row) and
the names of the things it refers to, since CloudStack answers `zonename` beside `zoneid`.
Fields Stratus does not have are left out rather than invented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from api.cloudstack.responses import cloudstack_date
from api.models import (
    EventPublic,
    HostPublic,
    JobPublic,
    SnapshotPublic,
    VirtualMachineAdminPublic,
    VirtualMachinePublic,
    VolumeAdminPublic,
    VolumePublic,
)
from api.routers.usage import UsageRecordPublic
from api.tenancy_models import AccountPublic, DomainPublic
from projections.store import ReadStore

GIB = 1024**3
MIB = 1024**2


@dataclass
class Names:
    """Inventory rows by id, fetched once per answer for every id its entities refer to."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, reads: ReadStore, ids: Iterable[UUID | str | None]) -> Names:
        wanted = sorted({str(i) for i in ids if i})
        if not wanted:
            return cls()
        with reads.pool.connection() as conn:
            found = conn.execute(
                "SELECT id, kind, name, data FROM inventory WHERE id = ANY(%s::uuid[])",
                (wanted,),
            ).fetchall()
        return cls({str(row["id"]): row for row in found})

    def name(self, item_id: UUID | str | None) -> str | None:
        row = self.rows.get(str(item_id)) if item_id else None
        return row["name"] if row else None

    def data(self, item_id: UUID | str | None) -> Mapping[str, Any]:
        row = self.rows.get(str(item_id)) if item_id else None
        return row["data"] if row else {}


def owner(names: Names, account_id: UUID | str | None) -> dict[str, Any]:
    """`account`, `accountid`, `domainid`, `domain`: who owns a resource."""
    data = names.data(account_id)
    return _present(
        account=names.name(account_id),
        accountid=str(account_id) if account_id else None,
        domainid=str(data["domain_id"]) if data.get("domain_id") else None,
        domain=data.get("domain"),
    )


def virtual_machine(vm: VirtualMachinePublic, names: Names) -> dict[str, Any]:
    body = _present(
        id=str(vm.id),
        name=vm.name,
        displayname=vm.display_name,
        state=vm.state,
        zoneid=str(vm.zone_id),
        zonename=names.name(vm.zone_id),
        serviceofferingid=str(vm.service_offering_id),
        serviceofferingname=names.name(vm.service_offering_id),
        templateid=str(vm.template_id),
        templatename=names.name(vm.template_id),
        cpunumber=vm.cpu_count,
        cpuspeed=vm.cpu_speed_mhz,
        memory=vm.memory_mib,
        hypervisor=vm.hypervisor,
        haenable=vm.ha_enabled,
        created=cloudstack_date(vm.created),
        nic=[
            _present(
                networkid=str(vm.network_id),
                networkname=names.name(vm.network_id),
                ipaddress=vm.ip_address,
                macaddress=vm.mac_address,
                isdefault=True,
                type="Shared",
            )
        ],
        **owner(names, vm.account_id),
    )
    if isinstance(vm, VirtualMachineAdminPublic):
        body.update(_present(hostid=_str(vm.host_id), hostname=names.name(vm.host_id)))
    return body


def volume(item: VolumePublic, names: Names) -> dict[str, Any]:
    body = _present(
        id=str(item.id),
        name=item.name,
        zoneid=str(item.zone_id),
        zonename=names.name(item.zone_id),
        type=item.volume_type,
        state=item.state,
        size=item.size_bytes,
        virtualmachineid=_str(item.vm_id),
        vmname=names.name(item.vm_id),
        deviceid=item.device_id,
        diskofferingid=_str(item.disk_offering_id),
        templateid=_str(item.template_id),
        created=cloudstack_date(item.created),
        **owner(names, item.account_id),
    )
    if isinstance(item, VolumeAdminPublic):
        body.update(_present(storageid=_str(item.pool_id), storage=names.name(item.pool_id)))
    return body


def snapshot(item: SnapshotPublic, names: Names) -> dict[str, Any]:
    return _present(
        id=str(item.id),
        name=item.name,
        volumeid=str(item.volume_id),
        volumetype=item.volume_type,
        zoneid=str(item.zone_id),
        state=item.state,
        intervaltype=item.interval_type,
        snapshottype="MANUAL" if item.interval_type == "MANUAL" else "RECURRING",
        physicalsize=item.physical_size_bytes,
        virtualsize=item.size_bytes,
        created=cloudstack_date(item.created),
        **owner(names, item.account_id),
    )


def zone(row: Mapping[str, Any]) -> dict[str, Any]:
    data = row["data"]
    return _present(
        id=str(row["id"]),
        name=row["name"],
        description=data.get("description"),
        dns1=data.get("dns1"),
        internaldns1=data.get("internal_dns1"),
        networktype=data.get("network_type", "Advanced"),
        allocationstate=data.get("allocation_state", "Enabled"),
        securitygroupsenabled=False,
        localstorageenabled=False,
    )


def network(row: Mapping[str, Any]) -> dict[str, Any]:
    """The zone's shared guest network (the only kind Stratus has yet)."""
    data = row["data"]
    return _present(
        id=str(row["id"]),
        name=row["name"],
        displaytext=row["name"],
        zoneid=_str(row.get("zone_id")),
        type="Shared",
        guestiptype="Shared",
        state="Setup",
        cidr=data.get("cidr"),
        gateway=data.get("gateway"),
        netmask=data.get("netmask"),
        traffictype="Guest",
        isdefault=True,
    )


def service_offering(row: Mapping[str, Any]) -> dict[str, Any]:
    data = row["data"]
    return _present(
        id=str(row["id"]),
        name=row["name"],
        displaytext=data.get("display_text"),
        cpunumber=data.get("cpu_count"),
        cpuspeed=data.get("cpu_speed_mhz"),
        memory=data.get("memory_mib"),
        offerha=data.get("ha_enabled", False),
        hosttags=",".join(data.get("host_tags") or []) or None,
        storagetype="shared",
        iscustomized=False,
        created=cloudstack_date(row["created"]),
    )


def disk_offering(row: Mapping[str, Any]) -> dict[str, Any]:
    data = row["data"]
    return _present(
        id=str(row["id"]),
        name=row["name"],
        displaytext=data.get("display_text"),
        disksize=(data.get("size_bytes") or 0) // GIB,
        iscustomized=bool(data.get("customized")),
        storagetype="shared",
        created=cloudstack_date(row["created"]),
    )


def template(row: Mapping[str, Any], names: Names) -> dict[str, Any]:
    data = row["data"]
    return _present(
        id=str(row["id"]),
        name=row["name"],
        displaytext=data.get("display_text"),
        ispublic=bool(data.get("public", True)),
        isready=data.get("state", "Ready") == "Ready",
        isfeatured=False,
        format=data.get("format"),
        hypervisor=data.get("hypervisor"),
        ostypename=data.get("os_type"),
        size=data.get("size_bytes"),
        templatetype="USER" if data.get("account_id") else "BUILTIN",
        zoneid=_str(row.get("zone_id")),
        zonename=names.name(row.get("zone_id")),
        created=cloudstack_date(row["created"]),
        **(owner(names, data.get("account_id")) if data.get("account_id") else {}),
    )


def host(item: HostPublic, names: Names) -> dict[str, Any]:
    return _present(
        id=str(item.id),
        name=item.name,
        type="Routing",
        state=item.status,
        resourcestate=item.resource_state,
        hypervisor=item.hypervisor,
        ipaddress=item.address,
        zoneid=str(item.zone_id),
        zonename=names.name(item.zone_id),
        podid=str(item.pod_id),
        podname=names.name(item.pod_id),
        clusterid=str(item.cluster_id),
        clustername=names.name(item.cluster_id),
        cpunumber=item.cpu_count,
        cpuspeed=item.cpu_speed_mhz,
        cpuallocated=f"{100 * item.cpu_used_mhz / max(item.cpu_total_mhz, 1):.2f}%",
        memorytotal=item.memory_total_mib * MIB,
        memoryallocated=item.memory_used_mib * MIB,
        hosttags=",".join(item.tags) or None,
        created=cloudstack_date(item.created),
    )


def event(item: EventPublic, names: Names) -> dict[str, Any]:
    return _present(
        id=str(item.id),
        type=item.type,
        level=item.level,
        state=item.state,
        description=item.description,
        username=item.username,
        parentid=_str(item.job_id),
        created=cloudstack_date(item.created),
        **owner(names, item.account_id),
    )


def usage_record(item: UsageRecordPublic, names: Names) -> dict[str, Any]:
    return _present(
        account=item.account_name,
        accountid=str(item.account_id),
        domainid=_str(names.data(item.account_id).get("domain_id")),
        domain=item.domain,
        zoneid=_str(item.zone_id),
        description=item.description,
        usage=item.usage,
        usagetype=item.usage_type,
        rawusage=f"{item.raw_usage:.6f}",
        usageid=str(item.resource_id),
        name=item.resource_name,
        offeringid=_str(item.offering_id),
        templateid=_str(item.template_id),
        size=item.size_bytes,
        startdate=cloudstack_date(item.start_date),
        enddate=cloudstack_date(item.end_date),
        **({"virtualmachineid": str(item.resource_id)} if item.usage_type in (1, 2) else {}),
    )


def account(item: AccountPublic) -> dict[str, Any]:
    return _present(
        id=str(item.id),
        name=item.name,
        accounttype=item.account_type.cloudstack_id,
        roletype=item.role.replace(" ", ""),
        rolename=item.role,
        domainid=_str(item.domain_id),
        domain=item.domain,
        state=item.state,
        created=cloudstack_date(item.created),
    )


def domain(item: DomainPublic) -> dict[str, Any]:
    return _present(
        id=str(item.id),
        name=item.name,
        path=item.path,
        parentdomainid=_str(item.parent_id),
        level=item.path.count("/"),
        state=item.state,
    )


def async_job_subject(job: JobPublic) -> tuple[str | None, str | None]:
    """(jobinstancetype, jobinstanceid): the resource a job acts on, in CloudStack's words."""
    kinds = {"vm": "VirtualMachine", "volume": "Volume", "snapshot": "Snapshot", "host": "Host"}
    kind = kinds.get((job.resource_type or "").lower(), job.resource_type)
    return kind, _str(job.resource_id)


#: The attributes of `/v1` models that name another thing CloudStack answers the name of.
REFERENCES = (
    "zone_id",
    "pod_id",
    "cluster_id",
    "service_offering_id",
    "template_id",
    "network_id",
    "account_id",
    "host_id",
    "vm_id",
    "pool_id",
)


def referenced_ids(item: Any) -> list[Any]:
    return [getattr(item, name, None) for name in REFERENCES]


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None


def _present(**fields: Any) -> dict[str, Any]:
    """CloudStack leaves out a field it has no value for, rather than answering null."""
    return {key: value for key, value in fields.items() if value is not None}
