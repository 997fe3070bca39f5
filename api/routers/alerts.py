"""/v1/alerts (admin only): what the control plane raised for an operator to look at
(listAlerts): a fence the BMC did not confirm, a host fenced or declared fenced, an HA VM not
brought back, a VM that crashed on a healthy host and was restarted.

Archived alerts (`POST /v1/alerts/{id}/archive`, a short job) are left out unless
`include_archived` is set.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from api.auth import AdminCaller
from api.dependencies import Consistent, Cursor, IdempotencyKey, Limit, PageNumber, Services
from api.errors import not_found
from api.job_submission import job_id_for
from api.models import AlertPublic, Listing
from api.reads import consistent_read
from api.routers.infrastructure import run_short_job
from domain.alert import ARCHIVE_ALERT_JOB, Alert, AlertType, ArchiveAlertRequest
from projections.alerts import ALERTS, alert_row

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])
TABLE = ALERTS.name


@router.get("", response_model=Listing[AlertPublic], summary="List alerts (listAlerts)")
async def list_alerts(
    _: AdminCaller,
    services: Services,
    response: Response,
    name: Annotated[AlertType | None, Query(description="e.g. ALERT.HA.ACTION")] = None,
    type: Annotated[int | None, Query(ge=0, le=99, description="e.g. 30 (HA_ACTION)")] = None,
    resource_id: UUID | None = None,
    include_archived: bool = False,
    limit: Limit = 50,
    cursor: Cursor = None,
    page: PageNumber = None,
    consistent: Consistent = False,
) -> Listing[AlertPublic]:
    await run_in_threadpool(consistent_read, services, TABLE, consistent, response)
    filters: dict[str, Any] = {
        "name": name.value if name else None,
        "type": type,
        "resource_id": resource_id,
        "archived": None if include_archived else False,
    }
    found = await run_in_threadpool(
        services.reads.page, TABLE, filters, limit=limit, cursor=cursor, page=page
    )
    return Listing[AlertPublic](
        data=[AlertPublic(**row) for row in found.data],
        count=found.count,
        next_cursor=found.next_cursor,
    )


@router.get("/{alert_id}", response_model=AlertPublic, summary="Show an alert")
async def get_alert(
    alert_id: UUID,
    _: AdminCaller,
    services: Services,
    response: Response,
    consistent: Consistent = False,
) -> AlertPublic:
    await run_in_threadpool(consistent_read, services, TABLE, consistent, response)
    row = await run_in_threadpool(services.reads.get, TABLE, alert_id)
    if row is None:
        raise not_found(f"alert {alert_id}", ("path", "alert_id"))
    return AlertPublic(**row)


@router.post(
    "/{alert_id}/archive",
    response_model=AlertPublic,
    summary="Archive an alert (archiveAlerts): dealt with, left out of the default listing",
)
async def archive_alert(
    alert_id: UUID,
    caller: AdminCaller,
    services: Services,
    idempotency_key: IdempotencyKey = None,
) -> AlertPublic:
    alert = await run_in_threadpool(services.cloud.find, Alert, alert_id)
    if alert is None:
        raise not_found(f"alert {alert_id}", ("path", "alert_id"))
    job_id = job_id_for(caller, idempotency_key)
    summary = f"Archive alert {alert.subject}"
    await run_short_job(
        services,
        caller,
        ARCHIVE_ALERT_JOB,
        ArchiveAlertRequest(
            job_id=job_id, account_id=caller.account_id, alert_id=alert.id, summary=summary
        ),
        job_id,
        resource=("Alert", alert.id, alert.zone_id),
        summary=summary,
        request_fingerprint=f"archive-alert/{alert.id}",
    )
    archived = await run_in_threadpool(services.cloud.load, Alert, alert_id)
    return AlertPublic(**alert_row(archived))
