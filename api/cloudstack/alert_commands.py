"""listAlerts and archiveAlerts (root admin only), over `/v1/alerts`.

CloudStack answers an alert's `description` with its subject, `sent` with when it was raised,
and `type` with the alert type's number (7 HOST, 8 USERVM, 30 HA_ACTION ...). archiveAlerts is
synchronous: each alert named in `ids` is archived (a short job each), then `success`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from api.cloudstack.commands import Context, command
from api.cloudstack.params import CloudStackError
from api.cloudstack.responses import cloudstack_date, list_response, response_name
from api.errors import ApiError
from api.models import AlertPublic
from api.routers.alerts import archive_alert, get_alert, list_alerts
from domain.alert import AlertType
from domain.errors import ErrorCode

#: The most alerts one archiveAlerts may name (each is a short job).
MAX_IDS = 100


def _root_admin_only(ctx: Context) -> None:
    if not ctx.caller.is_admin:
        raise CloudStackError(int(ErrorCode.ACCOUNT_ERROR), f"{ctx.command} is for the root admin")


def alert_entity(item: AlertPublic) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "type": item.type,
        "name": item.name,
        "description": item.subject,
        "sent": cloudstack_date(item.created),
    }


@command("listAlerts")
async def list_alerts_command(ctx: Context) -> dict[str, Any]:
    _root_admin_only(ctx)
    p, (page, size) = ctx.params, ctx.params.page()
    alert_id = p.uuid("id")
    if alert_id is not None:
        try:
            found = [await get_alert(alert_id, ctx.caller, ctx.services, ctx.response)]
        except ApiError as error:  # an id that names nothing lists nothing
            if error.status != 404:
                raise
            found = []
        return list_response(ctx.command, "alert", [alert_entity(a) for a in found], len(found))
    name = p.text("name")
    known = {t.value: t for t in AlertType}
    if name is not None and name not in known:
        return list_response(ctx.command, "alert", [], 0)  # a name Stratus never raises
    listing = await list_alerts(
        ctx.caller,
        ctx.services,
        ctx.response,
        name=known[name] if name is not None else None,
        type=p.integer("type", low=0, high=99),
        resource_id=None,
        include_archived=False,
        limit=size,
        cursor=None,
        page=page,
        consistent=False,
    )
    return list_response(
        ctx.command, "alert", [alert_entity(a) for a in listing.data], listing.count
    )


@command("archiveAlerts")
async def archive_alerts_command(ctx: Context) -> dict[str, Any]:
    _root_admin_only(ctx)
    raw = ctx.params.required("ids")
    ids: list[UUID] = []
    for part in raw.split(","):
        try:
            ids.append(UUID(part.strip()))
        except ValueError:
            raise ctx.params.invalid("ids", raw, f"{part.strip()!r} is not an id") from None
    if len(ids) > MAX_IDS:
        raise ctx.params.invalid("ids", raw, f"at most {MAX_IDS} alerts at once")
    for alert_id in ids:
        await archive_alert(alert_id, ctx.caller, ctx.services, None)
    return {response_name(ctx.command): {"success": True}}
