"""Out-of-band management of hosts (admin only): configureOutOfBandManagement,
enable/disableOutOfBandManagementForHost and issueOutOfBandManagementPowerAction.

- `PUT /v1/hosts/{id}/out-of-band-management`: the BMC's driver and address (a short job; 200).
  A login in the body is refused with 422 naming the field: it belongs to the agent's
  configuration (`[clusters.oobm]`), never to Stratus's events.
- `POST /v1/hosts/{id}/out-of-band-management/enable|disable`: whether power actions may run.
- `POST /v1/hosts/{id}/power` (`action`: ON, OFF, CYCLE, RESET, SOFT or STATUS): a job (202);
  what the BMC reports afterwards is recorded on the host (`power_state`) and in the event log.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response, status
from starlette.concurrency import run_in_threadpool

from api.auth import AdminCaller, Caller
from api.dependencies import IdempotencyKey, Services
from api.job_submission import fingerprint, job_id_for
from api.models import HostJobAccepted, OutOfBandConfigure, OutOfBandPublic, PowerActionCreate
from api.routers.host_maintenance import find_host, refused_by_state, submit_host_job
from api.routers.infrastructure import NoCredentials, run_short_job
from api.services import CloudServices
from domain.errors import IllegalStateTransition
from domain.out_of_band import (
    CONFIGURE_JOB,
    POWER_ACTION_JOB,
    OutOfBandConfiguration,
    PowerActionRequest,
    check_may_power,
)

router = APIRouter(prefix="/v1", tags=["infrastructure"])
OOBM = "/hosts/{host_id}/out-of-band-management"


async def _configure(
    services: CloudServices,
    caller: Caller,
    host_id: UUID,
    idempotency_key: str | None,
    what: str,
    **fields: Any,
) -> OutOfBandPublic:
    host = await run_in_threadpool(find_host, services.cloud, host_id)
    if fields.get("enabled") and (host.oobm_address is None or host.oobm_driver is None):
        raise refused_by_state(
            f"host {host.name} has no out-of-band management to enable: configure its driver "
            "and address first"
        )
    job_id = job_id_for(caller, idempotency_key)
    summary = f"{what} the out-of-band management of host {host.name}"
    request = OutOfBandConfiguration(
        job_id=job_id, account_id=caller.account_id, host_id=host.id, summary=summary, **fields
    )
    result = await run_short_job(
        services,
        caller,
        CONFIGURE_JOB,
        request,
        job_id,
        resource=("Host", host.id, host.zone_id),
        summary=summary,
        request_fingerprint=fingerprint(request.model_copy(update={"job_id": host.id})),
    )
    return OutOfBandPublic(**result)


@router.put(
    OOBM,
    response_model=OutOfBandPublic,
    dependencies=[NoCredentials],
    summary="Configure how a host's BMC is reached (configureOutOfBandManagement)",
)
async def configure_out_of_band_management(
    host_id: UUID,
    body: OutOfBandConfigure,
    caller: AdminCaller,
    services: Services,
    idempotency_key: IdempotencyKey = None,
) -> OutOfBandPublic:
    return await _configure(
        services,
        caller,
        host_id,
        idempotency_key,
        "Configure",
        driver=body.driver,
        address=body.address,
    )


def _add_switch(enabled: bool) -> None:
    verb = "enable" if enabled else "disable"

    async def switch(
        host_id: UUID,
        caller: AdminCaller,
        services: Services,
        idempotency_key: IdempotencyKey = None,
    ) -> OutOfBandPublic:
        return await _configure(
            services, caller, host_id, idempotency_key, verb.capitalize(), enabled=enabled
        )

    router.add_api_route(
        f"{OOBM}/{verb}",
        switch,
        methods=["POST"],
        response_model=OutOfBandPublic,
        name=f"{verb}_out_of_band_management",
        summary=f"{verb.capitalize()} power actions through a host's BMC "
        f"({verb}OutOfBandManagementForHost)",
    )


_add_switch(True)
_add_switch(False)


@router.post(
    "/hosts/{host_id}/power",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=HostJobAccepted,
    summary="Power a host on, off, cycle, reset, soft off or read its power, through its BMC "
    "(issueOutOfBandManagementPowerAction, a job)",
)
async def issue_power_action(
    host_id: UUID,
    body: PowerActionCreate,
    caller: AdminCaller,
    services: Services,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> HostJobAccepted:
    host = await run_in_threadpool(find_host, services.cloud, host_id)
    try:
        check_may_power(host)
    except IllegalStateTransition as refusal:
        raise refused_by_state(refusal.message) from None
    job_id = job_id_for(caller, idempotency_key)
    summary = f"Power {body.action} host {host.name} through its BMC"
    return await submit_host_job(
        services,
        caller,
        response,
        host,
        job_id,
        workflow=POWER_ACTION_JOB,
        request=PowerActionRequest(
            job_id=job_id,
            account_id=caller.account_id,
            host_id=host.id,
            action=body.action,
            summary=summary,
        ),
        summary=summary,
        idempotent=idempotency_key is not None,
        details=(
            f"**BMC:** {host.oobm_driver} at {host.oobm_address}",
            f"**Action:** {body.action}",
        ),
        request_fingerprint=fingerprint(body),
    )
