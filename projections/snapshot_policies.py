"""The snapshot policy listing (listSnapshotPolicies): one row per policy; a deleted policy's
row stays, inactive, so a client following a delete sees it end (the API hides it by
default)."""

from __future__ import annotations

from typing import Any

from domain.snapshot_policy import SnapshotPolicy
from projections.read_model import AggregateStateProjection, ReadModelView, Row, Table, event_topics

SNAPSHOT_POLICIES = Table(
    "snapshot_policies",
    {
        "id": "uuid PRIMARY KEY",
        "volume_id": "uuid NOT NULL",
        "account_id": "uuid NOT NULL",
        "zone_id": "uuid NOT NULL",
        "interval_type": "text NOT NULL",
        "schedule": "text NOT NULL",
        "timezone": "text NOT NULL",
        "max_snaps": "integer NOT NULL",
        "active": "boolean NOT NULL",
        "snapshots_taken": "integer NOT NULL",
        "created": "timestamptz NOT NULL",
        "updated": "timestamptz NOT NULL",
    },
    indexes=("volume_id, created, id", "account_id, created, id", "created, id"),
)


class SnapshotPoliciesView(ReadModelView):
    tables = (SNAPSHOT_POLICIES,)


class SnapshotPoliciesProjection(AggregateStateProjection):
    name = "snapshot_policies_projection"
    table = SNAPSHOT_POLICIES.name
    topics = event_topics(SnapshotPolicy)

    def row_of(self, policy: Any) -> Row:
        return {
            "id": policy.id,
            "volume_id": policy.volume_id,
            "account_id": policy.account_id,
            "zone_id": policy.zone_id,
            "interval_type": policy.interval_type.value,
            "schedule": policy.schedule,
            "timezone": policy.timezone,
            "max_snaps": policy.max_snaps,
            "active": policy.active,
            "snapshots_taken": len(policy.snapshot_ids),
            "created": policy.created_on,
            "updated": policy.modified_on,
        }
