"""The inventory read model: zones, pods, clusters, storage, offerings, templates, networks
and accounts, one row each, with the public fields of each kind in `data`.

Users (and accounts made before users existed) carry the digest of their API key in
`lookup_key`, which is how the API authenticates a caller without loading aggregates; the
digest is never returned in `data`.
"""

from __future__ import annotations

from typing import Any

from domain.account import Account
from domain.catalog import DiskOffering, ServiceOffering, Template
from domain.cluster import Cluster
from domain.domain_tree import Domain
from domain.guest_network import GuestNetwork
from domain.storage import PrimaryStorage, SecondaryStorage
from domain.user import User
from domain.zone import Pod, Zone
from projections.read_model import AggregateStateProjection, ReadModelView, Row, Table, event_topics

INVENTORY = Table(
    "inventory",
    {
        "id": "uuid PRIMARY KEY",
        "kind": "text NOT NULL",
        "name": "text NOT NULL",
        "zone_id": "uuid",
        "lookup_key": "text",
        "data": "jsonb NOT NULL",
        "created": "timestamptz NOT NULL",
        "updated": "timestamptz NOT NULL",
    },
    indexes=("kind, created, id", "lookup_key"),
)

KINDS: dict[type, str] = {
    Zone: "zone",
    Pod: "pod",
    Cluster: "cluster",
    PrimaryStorage: "primary_storage",
    SecondaryStorage: "secondary_storage",
    ServiceOffering: "service_offering",
    DiskOffering: "disk_offering",
    Template: "template",
    GuestNetwork: "network",
    Account: "account",
    Domain: "domain",
    User: "user",
}


class InventoryView(ReadModelView):
    tables = (INVENTORY,)


class InventoryProjection(AggregateStateProjection):
    name = "inventory_projection"
    table = INVENTORY.name
    topics = event_topics(*KINDS)

    def row_of(self, item: Any) -> Row:
        return inventory_row(item)


def inventory_row(item: Any) -> Row:
    """The row an inventory item has in the read model, from the aggregate itself (also what
    an API answers about an item it has just made, before the projection has it)."""
    kind = KINDS[type(item)]
    data = public_fields(item)
    return {
        "id": item.id,
        "kind": kind,
        "name": item.name,
        "zone_id": getattr(item, "zone_id", None),
        "lookup_key": (getattr(item, "api_key_sha256", None) or None),
        "data": data,
        "created": item.created_on,
        "updated": item.modified_on,
    }


#: Attributes that are bookkeeping or secrets, not inventory a user reads.
_PRIVATE = {"applied_commands", "api_key_sha256", "allocations", "stored", "reservations"}


def public_fields(item: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in vars(item).items():
        if key.startswith("_") or key in _PRIVATE:
            continue
        fields[key] = value.value if hasattr(value, "value") else value
    if isinstance(item, PrimaryStorage):
        fields["allocated_bytes"] = item.allocated_bytes
    if isinstance(item, SecondaryStorage):
        fields["used_bytes"] = item.used_bytes
    if isinstance(item, GuestNetwork):
        fields["free_addresses"] = item.free_addresses()
        fields["netmask"] = item.netmask
    return fields
