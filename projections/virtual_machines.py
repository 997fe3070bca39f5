"""The virtual machine listing (listVirtualMachines)."""

from __future__ import annotations

from typing import Any

from domain.virtual_machine import VirtualMachine
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
    },
    indexes=("account_id, created, id", "zone_id, created, id", "state", "created, id"),
)


class VirtualMachinesView(ReadModelView):
    tables = (VIRTUAL_MACHINES,)


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
        }
