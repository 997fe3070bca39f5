"""The virtual machine listing (listVirtualMachines)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

from domain.virtual_machine import VirtualMachine, VmState
from projections.read_model import AggregateStateProjection, ReadModelView, Row, Table, event_topics

VIRTUAL_MACHINES = Table(
    "virtual_machines",
    {
        "id": "uuid PRIMARY KEY",
        "name": "text NOT NULL",
        "display_name": "text NOT NULL",
        "account_id": "uuid NOT NULL",
        "zone_id": "uuid NOT NULL",
        "state": "text NOT NULL",
        "host_id": "uuid",
        "last_host_id": "uuid",
        "service_offering_id": "uuid NOT NULL",
        "template_id": "uuid NOT NULL",
        "network_id": "uuid NOT NULL",
        "hypervisor": "text NOT NULL",
        "cpu_count": "integer NOT NULL",
        "cpu_speed_mhz": "integer NOT NULL",
        "memory_mib": "integer NOT NULL",
        "ip_address": "text",
        "mac_address": "text",
        "root_volume_id": "uuid NOT NULL",
        "ha_enabled": "boolean NOT NULL",
        "last_reason": "text",
        "created_by_job": "uuid NOT NULL",
        "created": "timestamptz NOT NULL",
        "updated": "timestamptz NOT NULL",
        "is_removed": "boolean NOT NULL DEFAULT false",
        "removed": "timestamptz",
    },
    indexes=(
        "account_id, created, id",
        "zone_id, created, id",
        "state",
        "created, id",
        "last_host_id",
    ),
)


class VirtualMachinesView(ReadModelView):
    tables = (VIRTUAL_MACHINES,)

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        table = (Identifier(datastore.schema), Identifier(VIRTUAL_MACHINES.name))
        self.sql_create_statements.append(
            SQL(
                "CREATE INDEX IF NOT EXISTS virtual_machines_is_removed_created_id_idx "
                "ON {0}.{1} (is_removed, created, id)"
            ).format(*table)
        )


class VirtualMachinesProjection(AggregateStateProjection):
    name = "virtual_machines_projection"
    table = VIRTUAL_MACHINES.name
    topics = event_topics(VirtualMachine)

    def row_of(self, vm: Any) -> Row:
        return {
            "id": vm.id,
            "name": vm.name,
            "display_name": vm.display_name,
            "account_id": vm.account_id,
            "zone_id": vm.zone_id,
            "state": vm.state.value,
            "host_id": vm.host_id,
            "last_host_id": vm.last_host_id,
            "service_offering_id": vm.service_offering_id,
            "template_id": vm.template_id,
            "network_id": vm.network_id,
            "hypervisor": vm.hypervisor,
            "cpu_count": vm.cpu_count,
            "cpu_speed_mhz": vm.cpu_speed_mhz,
            "memory_mib": vm.memory_mib,
            "ip_address": vm.ip_address,
            "mac_address": vm.mac_address,
            "root_volume_id": vm.root_volume_id,
            "ha_enabled": vm.ha_enabled,
            "last_reason": vm.last_reason,
            "created_by_job": vm.created_by_job,
            "created": vm.created_on,
            "updated": vm.modified_on,
            "is_removed": vm.is_removed,
            "removed": vm.modified_on if vm.is_removed else None,
        }


def stopped_with_last_host(conn: Any, host_id: UUID, limit: int) -> list[UUID]:
    """Stopped VMs that would start on this host first (their last host): a host going into
    maintenance unassigns them."""
    rows = conn.execute(
        "SELECT id FROM virtual_machines WHERE last_host_id = %s AND state = %s "
        "AND NOT is_removed ORDER BY id LIMIT %s",
        (host_id, VmState.STOPPED.value, limit),
    ).fetchall()
    return [row["id"] for row in rows]
