"""Alerts (listAlerts): what an operator must look at, raised by the control plane itself.

CloudStack's AlertManager records an alert when something goes wrong that no user asked about:
a host that cannot be fenced, a VM that HA could not bring back, a VM that crashed and was
restarted. Stratus records each as an `Alert` aggregate, raised inside the same decision as the
change that causes it, so an alert exists exactly when its cause does. Its id derives from the
cause's command id, so a retried step raises it once.

An operator archives an alert once dealt with (archiveAlerts): it leaves the default listing
but stays in the event store and in the read model.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event
from pydantic import BaseModel

from domain.aggregate import CloudAggregate
from domain.cloud import Cloud, Decision
from domain.errors import NotFound
from domain.ids import derived_id

#: The most of a cause's text an alert keeps (a BMC's error can be a page long).
MAX_DESCRIPTION = 1024
MAX_SUBJECT = 255


class AlertType(StrEnum):
    """CloudStack's alert types that Stratus raises, by their names; `code` is the number
    listAlerts reports as `type`."""

    HOST = "ALERT.HOST"
    USERVM = "ALERT.USERVM"
    SYNC = "ALERT.SYNC"
    OOBM_AUTH_ERROR = "ALERT.OOBM.AUTHERROR"
    HA_ACTION = "ALERT.HA.ACTION"

    @property
    def code(self) -> int:
        return _CODES[self]


_CODES = {
    AlertType.HOST: 7,
    AlertType.USERVM: 8,
    AlertType.SYNC: 27,
    AlertType.OOBM_AUTH_ERROR: 29,
    AlertType.HA_ACTION: 30,
}


def _clipped(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


class Alert(CloudAggregate):
    @event("Raised")
    def __init__(
        self,
        alert_type: str,
        subject: str,
        description: str,
        resource_type: str,
        resource_id: UUID,
        zone_id: UUID,
        cluster_id: UUID | None,
        raised_at: datetime,
        command_id: str,
    ) -> None:
        self.alert_type = AlertType(alert_type)
        self.subject = subject
        self.description = description
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.zone_id = zone_id
        self.cluster_id = cluster_id
        self.raised_at = raised_at
        self.archived = False
        self._remember(command_id)

    def archive(self, command_id: str) -> bool:
        """archiveAlerts: dealt with; False when it already was."""
        if self.has_applied(command_id) or self.archived:
            return False
        self._archived(command_id)
        return True

    @event("Archived")
    def _archived(self, command_id: str) -> None:
        self.archived = True
        self._remember(command_id)


def alert_id_for(command_id: str) -> UUID:
    return derived_id(command_id, "alert")


def raise_alert(
    d: Decision,
    alert_type: AlertType,
    subject: str,
    description: str,
    *,
    resource_type: str,
    resource_id: UUID,
    zone_id: UUID,
    cluster_id: UUID | None,
    at: datetime,
    command_id: str,
) -> Alert:
    """Raise an alert in the decision `d`, once per `command_id` (the cause's step)."""
    alert_id = alert_id_for(command_id)
    found = d.find(Alert, alert_id)
    if found is not None:
        return found
    return d.add(
        Alert.create_with_id(
            alert_id,
            alert_type=alert_type.value,
            subject=_clipped(subject, MAX_SUBJECT),
            description=_clipped(description, MAX_DESCRIPTION),
            resource_type=resource_type,
            resource_id=resource_id,
            zone_id=zone_id,
            cluster_id=cluster_id,
            raised_at=at,
            command_id=command_id,
        )
    )


# -- archiving, as a short admin job ------------------------------------------------------------
ARCHIVE_ALERT_JOB = "ArchiveAlert"


class ArchiveAlertRequest(BaseModel):
    job_id: UUID
    account_id: UUID
    alert_id: UUID
    summary: str


def archive(cloud: Cloud, request: ArchiveAlertRequest) -> dict[str, Any]:
    """archiveAlerts for one alert: answers its facts (archived, whether it was already)."""

    def decide(d: Decision) -> dict[str, Any]:
        alert = d.find(Alert, request.alert_id)
        if alert is None:
            raise NotFound(f"no alert with id {request.alert_id}", field="alert_id")
        alert.archive(f"{request.job_id}/archive")
        return {"id": str(alert.id), "archived": alert.archived}

    return cloud.decide(decide)
