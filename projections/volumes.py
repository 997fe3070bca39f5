"""The volume listing (listVolumes)."""

from __future__ import annotations

from typing import Any

from domain.volume import Volume
from projections.read_model import AggregateStateProjection, ReadModelView, Row, Table, event_topics

VOLUMES = Table(
    "volumes",
    {
        "id": "uuid PRIMARY KEY",
        "name": "text NOT NULL",
        "account_id": "uuid NOT NULL",
        "zone_id": "uuid NOT NULL",
        "vm_id": "uuid",
        "volume_type": "text NOT NULL",
        "state": "text NOT NULL",
        "size_bytes": "bigint NOT NULL",
        "pool_id": "uuid",
        "path": "text",
        "template_id": "uuid",
        "disk_offering_id": "uuid",
        "device_id": "integer",
        "created": "timestamptz NOT NULL",
        "updated": "timestamptz NOT NULL",
    },
    indexes=("account_id, created, id", "zone_id, created, id", "vm_id", "created, id"),
)


class VolumesView(ReadModelView):
    tables = (VOLUMES,)


class VolumesProjection(AggregateStateProjection):
    name = "volumes_projection"
    table = VOLUMES.name
    topics = event_topics(Volume)

    def row_of(self, volume: Any) -> Row:
        return {
            "id": volume.id,
            "name": volume.name,
            "account_id": volume.account_id,
            "zone_id": volume.zone_id,
            "vm_id": volume.vm_id,
            "volume_type": volume.volume_type.value,
            "state": volume.state.value,
            "size_bytes": volume.size_bytes,
            "pool_id": volume.pool_id,
            "path": volume.path,
            "template_id": volume.template_id,
            "disk_offering_id": volume.disk_offering_id,
            "device_id": volume.device_id,
            "created": volume.created_on,
            "updated": volume.modified_on,
        }
