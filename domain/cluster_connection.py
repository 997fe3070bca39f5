"""How a cluster's hypervisors are reached, as far as the domain may know it: addresses, never
credentials.

An admin adds a KVM cluster with the template of its hosts' libvirt URI, a VMware cluster with
its vCenter address, datacenter and vCenter cluster, a XenServer cluster with its pool master's
address, a bare-metal cluster with the BMC address of each machine. These settings are recorded
(they say what the cluster is) and shown to admins; the worker that serves the cluster's task
queue (the agent) holds the same addresses together with the credentials, in its own
configuration. For bare metal a host's address is its BMC's address. Anything that looks like
a credential is refused here, so that it can never reach an event, a workflow input or a read
model (ARCHITECTURE rule 10).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

from eventsourcing.domain import event
from pydantic import BaseModel, ConfigDict, Field

from domain.aggregate import CloudAggregate
from domain.catalog import HypervisorType
from domain.errors import InvalidParameter
from domain.ids import derived_id
from domain.locations import LocationUri, NetworkAddress, check_location
from domain.text import Name

#: The most BMCs one bare-metal cluster lists (a few racks of machines).
MAX_BMC_ADDRESSES = 1024
#: Keys that name a credential (or half of one). Matched against every key of a request body.
CREDENTIAL_KEY = re.compile(
    r"(pass(word|wd|phrase)?|pwd|secret|token|credential|api_?key|private_?key|"
    r"^user(name)?$|_user(name)?$|^login$|cert(ificate)?_?key)",
    re.IGNORECASE,
)


class ConnectionSettings(BaseModel):
    """The non-secret connection settings of a cluster; which apply depends on the hypervisor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    libvirt_uri: LocationUri | None = Field(
        default=None,
        description="KVM: libvirt URI template of the hosts, e.g. qemu+tls://{address}/system",
    )
    vcenter_address: NetworkAddress | None = Field(
        default=None, description="VMware: vCenter host name or address (host[:port])"
    )
    datacenter: Name | None = Field(default=None, description="VMware: datacenter")
    vcenter_cluster: Name | None = Field(
        default=None, description="VMware: the cluster's name in vCenter"
    )
    pool_master_address: NetworkAddress | None = Field(
        default=None, description="XenServer: the pool master's address (host[:port])"
    )
    bmc_addresses: list[NetworkAddress] = Field(
        default_factory=list,
        max_length=MAX_BMC_ADDRESSES,
        description="BareMetal: the BMC addresses (host[:port]) of the cluster's machines; "
        "a host added to the cluster is one of them (its address is its BMC's)",
    )


#: The settings each hypervisor requires and accepts.
REQUIRED: dict[HypervisorType, frozenset[str]] = {
    HypervisorType.SIMULATOR: frozenset(),
    HypervisorType.KVM: frozenset(),
    HypervisorType.VMWARE: frozenset({"vcenter_address", "datacenter", "vcenter_cluster"}),
    HypervisorType.XENSERVER: frozenset({"pool_master_address"}),
    HypervisorType.BAREMETAL: frozenset(),
}
ACCEPTED: dict[HypervisorType, frozenset[str]] = {
    HypervisorType.SIMULATOR: frozenset(),
    HypervisorType.KVM: frozenset({"libvirt_uri"}),
    HypervisorType.VMWARE: REQUIRED[HypervisorType.VMWARE],
    HypervisorType.XENSERVER: REQUIRED[HypervisorType.XENSERVER],
    HypervisorType.BAREMETAL: frozenset({"bmc_addresses"}),
}


def credential_fields(body: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Where in a (JSON) request body a key looks like a credential, as loc paths."""
    if isinstance(body, Mapping):
        for key, value in body.items():
            here = (*path, str(key))
            if CREDENTIAL_KEY.search(str(key)):
                yield here
            yield from credential_fields(value, here)
    elif isinstance(body, list):
        for index, value in enumerate(body):
            yield from credential_fields(value, (*path, str(index)))


def check_connection(hypervisor: str, settings: ConnectionSettings) -> None:
    """Refuse settings that do not fit the hypervisor, or that smuggle a credential in a URI."""
    kind = HypervisorType(hypervisor)
    given = {key for key, value in settings.model_dump().items() if value}
    for key in sorted(given - ACCEPTED[kind]):
        raise InvalidParameter(
            f"does not apply to a {kind.value} cluster (it takes: "
            f"{', '.join(sorted(ACCEPTED[kind])) or 'no connection settings'})",
            field=f"connection.{key}",
        )
    for key in sorted(REQUIRED[kind] - given):
        raise InvalidParameter(f"a {kind.value} cluster needs it", field=f"connection.{key}")
    for key in ("libvirt_uri", "vcenter_address", "pool_master_address"):
        value = getattr(settings, key)
        if value:
            check_location(value, f"connection.{key}")
    if settings.libvirt_uri and not urlparse(settings.libvirt_uri).scheme:
        raise InvalidParameter(
            "must be a libvirt URI such as qemu+tls://{address}/system",
            field="connection.libvirt_uri",
        )
    for index, address in enumerate(settings.bmc_addresses):
        if not address.strip() or "/" in address:
            raise InvalidParameter(
                "must be a bare host[:port]", field=f"connection.bmc_addresses.{index}"
            )
        check_location(address, f"connection.bmc_addresses.{index}")


def connection_id_for(cluster_id: UUID) -> UUID:
    return derived_id(cluster_id, "connection")


class ClusterConnection(CloudAggregate):
    """The recorded connection settings of one cluster (id derived from the cluster's)."""

    @event("Configured")
    def __init__(
        self,
        cluster_id: UUID,
        hypervisor: str,
        settings: dict[str, Any],
        agent_task_queue: str | None = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.hypervisor = hypervisor
        self.settings = dict(settings)
        self.agent_task_queue = agent_task_queue

    @property
    def connection(self) -> ConnectionSettings:
        # As recorded: checked by the rules in force when it was recorded, not re-judged now.
        return ConnectionSettings.model_construct(**self.settings)
