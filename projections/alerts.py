"""The alert listing (listAlerts): one row per alert, kept when archived (the API hides
archived alerts unless asked).

The rows are written by the event-log projection (projections/events.py), beside the event
log it already keeps: alerts are rare, and a projection of their own would hold a projector's
connections for them.
"""

from __future__ import annotations

from typing import Any

from domain.alert import Alert
from projections.read_model import Row, Table, event_topics

ALERTS = Table(
    "alerts",
    {
        "id": "uuid PRIMARY KEY",
        "type": "integer NOT NULL",
        "name": "text NOT NULL",
        "subject": "text NOT NULL",
        "description": "text NOT NULL",
        "resource_type": "text NOT NULL",
        "resource_id": "uuid NOT NULL",
        "zone_id": "uuid NOT NULL",
        "cluster_id": "uuid",
        "archived": "boolean NOT NULL",
        "created": "timestamptz NOT NULL",
    },
    indexes=("archived, created, id", "created, id", "resource_id", "type, created, id"),
)

ALERT_TOPICS = event_topics(Alert)


def alert_row(alert: Any) -> Row:
    return {
        "id": alert.id,
        "type": alert.alert_type.code,
        "name": alert.alert_type.value,
        "subject": alert.subject,
        "description": alert.description,
        "resource_type": alert.resource_type,
        "resource_id": alert.resource_id,
        "zone_id": alert.zone_id,
        "cluster_id": alert.cluster_id,
        "archived": alert.archived,
        "created": alert.raised_at,
    }
