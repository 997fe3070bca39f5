"""Alert activities on the control plane: archiving one (raising them happens inside the
decisions that cause them, domain/alert.py)."""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.errors import reports_cloud_errors
from domain import alert
from domain.cloud import Cloud


class AlertActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @activity.defn(name="alert.archive")
    @reports_cloud_errors
    def archive(self, request: alert.ArchiveAlertRequest) -> dict[str, Any]:
        return alert.archive(self.cloud, request)


def alert_activities(cloud: Cloud) -> list[Any]:
    return [AlertActivities(cloud).archive]
