"""The volume snapshot listing (listSnapshots): one row per snapshot, deleted ones kept
(flagged) so a client following a delete sees it end."""

from __future__ import annotations

from typing import Any

from domain.snapshot import Snapshot
from projections.read_model import AggregateStateProjection, ReadModelView, Row, Table, event_topics

SNAPSHOTS = Table(
    "snapshots",
    {
        "id": "uuid PRIMARY KEY",
        "volume_id": "uuid NOT NULL",
        "name": "text NOT NULL",
        "account_id": "uuid NOT NULL",
        "zone_id": "uuid NOT NULL",
        "volume_type": "text NOT NULL",
        "hypervisor": "text NOT NULL",
        "state": "text NOT NULL",
        "interval_type": "text NOT NULL",
        "policy_id": "uuid",
        "size_bytes": "bigint NOT NULL",
        "physical_size_bytes": "bigint NOT NULL",
        "on_primary": "boolean NOT NULL",
        "secondary_storage_id": "uuid",
        "is_removed": "boolean NOT NULL",
        "created": "timestamptz NOT NULL",
        "updated": "timestamptz NOT NULL",
    },
    indexes=(
        "volume_id, created, id",
        "account_id, created, id",
        "policy_id, created, id",
        "created, id",
    ),
)


class SnapshotsView(ReadModelView):
    tables = (SNAPSHOTS,)


class SnapshotsProjection(AggregateStateProjection):
    name = "snapshots_projection"
    table = SNAPSHOTS.name
    topics = event_topics(Snapshot)

    def row_of(self, snapshot: Any) -> Row:
        return {
            "id": snapshot.id,
            "volume_id": snapshot.volume_id,
            "name": snapshot.name,
            "account_id": snapshot.account_id,
            "zone_id": snapshot.zone_id,
            "volume_type": snapshot.volume_type,
            "hypervisor": snapshot.hypervisor,
            "state": snapshot.state.value,
            "interval_type": snapshot.interval_type.value,
            "policy_id": snapshot.policy_id,
            "size_bytes": snapshot.size_bytes,
            "physical_size_bytes": snapshot.physical_size_bytes,
            "on_primary": snapshot.primary_path is not None,
            "secondary_storage_id": snapshot.secondary_storage_id,
            "is_removed": snapshot.is_removed,
            "created": snapshot.created_on,
            "updated": snapshot.modified_on,
        }
