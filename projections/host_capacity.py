"""Host capacity (listHosts, listCapacity): what is reserved where."""

from __future__ import annotations

from typing import Any

from domain.host import Host
from projections.read_model import AggregateStateProjection, ReadModelView, Row, Table, event_topics

HOST_CAPACITY = Table(
    "host_capacity",
    {
        "id": "uuid PRIMARY KEY",
        "name": "text NOT NULL",
        "zone_id": "uuid NOT NULL",
        "pod_id": "uuid NOT NULL",
        "cluster_id": "uuid NOT NULL",
        "hypervisor": "text NOT NULL",
        "address": "text NOT NULL",
        "status": "text NOT NULL",
        "resource_state": "text NOT NULL",
        "cpu_count": "integer NOT NULL",
        "cpu_speed_mhz": "integer NOT NULL",
        "cpu_total_mhz": "bigint NOT NULL",
        "cpu_used_mhz": "bigint NOT NULL",
        "memory_total_mib": "bigint NOT NULL",
        "memory_used_mib": "bigint NOT NULL",
        "vm_count": "integer NOT NULL",
        "tags": "jsonb NOT NULL",
        "maintenance_job_id": "uuid",
        "maintenance_errors": "jsonb",
        "oobm_driver": "text",
        "oobm_address": "text",
        "oobm_enabled": "boolean",
        "power_state": "text",
        "power_state_at": "timestamptz",
        "ha_enabled": "boolean",
        "ha_state": "text",
        "ha_reason": "text",
        "ha_history": "jsonb",
        "created": "timestamptz NOT NULL",
        "updated": "timestamptz NOT NULL",
    },
    indexes=("zone_id, created, id", "cluster_id", "created, id"),
)


class HostCapacityView(ReadModelView):
    tables = (HOST_CAPACITY,)


class HostCapacityProjection(AggregateStateProjection):
    name = "host_capacity_projection"
    table = HOST_CAPACITY.name
    topics = event_topics(Host)

    def row_of(self, host: Any) -> Row:
        return {
            "id": host.id,
            "name": host.name,
            "zone_id": host.zone_id,
            "pod_id": host.pod_id,
            "cluster_id": host.cluster_id,
            "hypervisor": host.hypervisor,
            "address": host.address,
            "status": host.status.value,
            "resource_state": host.resource_state.value,
            "cpu_count": host.cpu_count,
            "cpu_speed_mhz": host.cpu_speed_mhz,
            "cpu_total_mhz": host.cpu_total_mhz,
            "cpu_used_mhz": host.cpu_used_mhz,
            "memory_total_mib": host.memory_mib,
            "memory_used_mib": host.memory_used_mib,
            "vm_count": len(host.reservations),
            "tags": host.tags,
            "maintenance_job_id": host.maintenance_job_id,
            "maintenance_errors": list(host.maintenance_errors),
            "oobm_driver": host.oobm_driver,
            "oobm_address": host.oobm_address,
            "oobm_enabled": host.oobm_enabled,
            "power_state": host.power_state,
            "power_state_at": host.power_state_at,
            "ha_enabled": host.ha_enabled,
            "ha_state": host.ha_state.value,
            "ha_reason": host.ha.reason,
            "ha_history": list(host.ha_history),
            "created": host.created_on,
            "updated": host.modified_on,
        }
