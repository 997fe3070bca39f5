"""The VM snapshot listing (listVMSnapshot): one row per snapshot, removed ones kept (flagged)
so a client following a delete sees it end."""

from __future__ import annotations

from typing import Any

from domain.vm_snapshot import VmSnapshot
from projections.read_model import AggregateStateProjection, ReadModelView, Row, Table, event_topics

VM_SNAPSHOTS = Table(
    "vm_snapshots",
    {
        "id": "uuid PRIMARY KEY",
        "vm_id": "uuid NOT NULL",
        "name": "text NOT NULL",
        "account_id": "uuid NOT NULL",
        "zone_id": "uuid NOT NULL",
        "state": "text NOT NULL",
        "memory": "boolean NOT NULL",
        "memory_requested": "boolean NOT NULL",
        "is_removed": "boolean NOT NULL",
        "created": "timestamptz NOT NULL",
        "updated": "timestamptz NOT NULL",
    },
    indexes=("vm_id, created, id", "account_id, created, id", "created, id"),
)


class VmSnapshotsView(ReadModelView):
    tables = (VM_SNAPSHOTS,)


class VmSnapshotsProjection(AggregateStateProjection):
    name = "vm_snapshots_projection"
    table = VM_SNAPSHOTS.name
    topics = event_topics(VmSnapshot)

    def row_of(self, snapshot: Any) -> Row:
        return {
            "id": snapshot.id,
            "vm_id": snapshot.vm_id,
            "name": snapshot.name,
            "account_id": snapshot.account_id,
            "zone_id": snapshot.zone_id,
            "state": snapshot.state.value,
            "memory": snapshot.memory,
            "memory_requested": snapshot.memory_requested,
            "is_removed": snapshot.is_removed,
            "created": snapshot.created_on,
            "updated": snapshot.modified_on,
        }
