"""Out-of-band management of hosts: a host's BMC (CloudStack's configureOutOfBandManagement,
enable/disableOutOfBandManagementForHost, issueOutOfBandManagementPowerAction).

Stratus records which driver reaches a host's BMC and at what address; the login is the
worker's (the agent's configuration), never an event's, a request's or a response's. Every
power action is a job, and what it found or did is an event on the host (`PowerActionRecorded`),
so the event log says who powered which host off, when, and what the BMC reported.

One power action at a time per host: a job claims the host's BMC when it begins and gives it
back when it ends, so an operator's CYCLE and the HA monitor's fencing OFF never interleave
(the second waits, retried for a while, and then fails with 536 naming the job in the way).
A claim whose job ended without giving it back (terminated from outside), or older than
`CLAIM_EXPIRES`, no longer holds the host.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from domain import job_records
from domain.cloud import Cloud, Decision
from domain.errors import IllegalStateTransition, InvalidParameter, NotFound, ResourceInUse
from domain.host import Host
from domain.job import Job
from domain.job_records import JobTicket
from domain.locations import check_address

POWER_ACTION_JOB = "IssueOutOfBandManagementPowerAction"
CONFIGURE_JOB = "ConfigureOutOfBandManagement"
#: Longer than any power action takes (it asks once, then reads until the state settles).
CLAIM_EXPIRES = timedelta(minutes=15)


class PowerActionsBusy(ResourceInUse):
    """Another power action holds the host's BMC; it ends soon, so the step is retried."""

    retryable = True


class OutOfBandDriver(StrEnum):
    """How the BMC is spoken to. `ipmitool` is CloudStack's name for IPMI 2.0 (spoken here by
    pyghmi, as ipmitool would)."""

    IPMITOOL = "ipmitool"


class PowerAction(StrEnum):
    """issueOutOfBandManagementPowerAction's actions."""

    ON = "ON"
    OFF = "OFF"
    CYCLE = "CYCLE"
    RESET = "RESET"
    SOFT = "SOFT"
    STATUS = "STATUS"


class PowerState(StrEnum):
    ON = "On"
    OFF = "Off"
    UNKNOWN = "Unknown"


class OutOfBandConfiguration(BaseModel):
    """What configureOutOfBandManagement, enable and disable ask for: any field left out stays
    as it is."""

    job_id: UUID
    account_id: UUID
    host_id: UUID
    driver: str | None = None
    address: str | None = None
    enabled: bool | None = None
    summary: str


class PowerActionRequest(BaseModel):
    job_id: UUID
    account_id: UUID
    host_id: UUID
    action: str
    summary: str


def check_driver(value: str) -> OutOfBandDriver:
    try:
        return OutOfBandDriver(value)
    except ValueError:
        raise InvalidParameter(
            f"must be one of {', '.join(OutOfBandDriver)}, not {value!r}", field="driver"
        ) from None


def check_action(value: str) -> PowerAction:
    try:
        return PowerAction(value.upper())
    except ValueError:
        raise InvalidParameter(
            f"must be one of {', '.join(PowerAction)}, not {value!r}", field="action"
        ) from None


def out_of_band_of(host: Host) -> dict[str, Any]:
    """The host's out-of-band management as listings show it."""
    return {
        "driver": host.oobm_driver,
        "address": host.oobm_address,
        "enabled": host.oobm_enabled,
        "power_state": host.power_state,
        "power_state_at": host.power_state_at,
    }


def _find(d: Decision, host_id: UUID) -> Host:
    host = d.find(Host, host_id)
    if host is None:
        raise NotFound(f"no host with id {host_id}", field="host_id")
    return host


def configure(cloud: Cloud, request: OutOfBandConfiguration) -> dict[str, Any]:
    """Record the BMC's driver and address, and whether power actions are allowed."""
    if request.driver is not None:
        check_driver(request.driver)
    if request.address is not None:
        check_address(request.address, "address")

    def decide(d: Decision) -> dict[str, Any]:
        host = _find(d, request.host_id)
        command = f"{request.job_id}/configure"
        host.configure_out_of_band(
            request.driver, request.address, request.enabled, command_id=command
        )
        return {"host_id": str(host.id), "name": host.name, **out_of_band_of(host)}

    return cloud.decide(decide)


def begin_power_action(
    cloud: Cloud, request: PowerActionRequest, submitted_at: datetime
) -> tuple[Host, PowerAction]:
    """Record the job and check the host's BMC may be asked (configured and enabled)."""
    action = check_action(request.action)

    def decide(d: Decision) -> Host:
        host = _find(d, request.host_id)
        job = job_records.open_job(
            d,
            JobTicket(
                job_id=request.job_id,
                job_type=POWER_ACTION_JOB,
                account_id=request.account_id,
                resource_type="Host",
                resource_id=host.id,
                zone_id=host.zone_id,
                summary=request.summary,
                submitted_at=submitted_at,
            ),
        )
        job.enter_step(f"asking the BMC: power {action.value}", f"{request.job_id}/begin")
        check_may_power(host)
        _claim(d, host, request.job_id, datetime.now(UTC))
        return host

    return cloud.decide(decide), action


def _claim(d: Decision, host: Host, job_id: UUID, now: datetime) -> None:
    holder = host.power_action_job_id
    if holder is not None and holder != job_id:
        job = d.find(Job, holder)
        since = host.power_action_since
        expired = since is None or now - since > CLAIM_EXPIRES
        if job is not None and not job.status.is_final and not expired:
            raise PowerActionsBusy(
                f"another power action on host {host.name} is under way (job {holder}); "
                "try again once it has ended",
                field="host_id",
            )
    host.claim_power_actions(job_id, now, f"{job_id}/claim")


def check_may_power(host: Host) -> None:
    if host.oobm_address is None or host.oobm_driver is None:
        raise IllegalStateTransition(
            f"host {host.name} has no out-of-band management configured", field="host_id"
        )
    if not host.oobm_enabled:
        raise IllegalStateTransition(
            f"out-of-band management of host {host.name} is disabled", field="host_id"
        )


def record_power(
    cloud: Cloud,
    job_id: UUID,
    host_id: UUID,
    action: str,
    power_state: str,
    *,
    settled: bool = True,
) -> dict[str, Any]:
    """What the BMC reported after the action: an event on the host and, when the machine
    reached the state the action leads to, the job's result (otherwise the job fails next,
    saying so)."""

    def decide(d: Decision) -> dict[str, Any]:
        host = _find(d, host_id)
        host.record_power_action(
            action, PowerState(power_state).value, datetime.now(UTC), job_id, f"{job_id}/power"
        )
        result = {
            "host_id": str(host.id),
            "name": host.name,
            "action": action,
            "power_state": host.power_state,
        }
        if not settled:
            return result  # the job fails next, and gives the BMC back then
        host.release_power_actions(job_id, f"{job_id}/release")
        return job_records.succeed(d, job_id, result)

    return cloud.decide(decide)


def fail_power_action(
    cloud: Cloud,
    request: PowerActionRequest,
    submitted_at: datetime,
    code: int,
    text: str,
    cancelled: bool,
) -> None:
    host = cloud.find(Host, request.host_id)
    ticket = JobTicket(
        job_id=request.job_id,
        job_type=POWER_ACTION_JOB,
        account_id=request.account_id,
        resource_type="Host",
        resource_id=request.host_id,
        zone_id=host.zone_id if host is not None else None,
        summary=request.summary,
        submitted_at=submitted_at,
    )

    def decide(d: Decision) -> None:
        held = d.find(Host, request.host_id)
        if held is not None:
            held.release_power_actions(request.job_id, f"{request.job_id}/release")
        job_records.end_unsuccessfully(d, ticket, code, text, cancelled=cancelled)

    cloud.decide(decide)
