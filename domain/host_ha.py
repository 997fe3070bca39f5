"""Host HA: CloudStack's HA state machine for a host, as pure decisions over what the cluster's
monitor observes (domain rules, unit-tested on their own).

    Available --health fails--> Suspect --fails again--> Checking
    Checking  --a VM of the host still shows activity--> Degraded (partitioned, VMs alive: wait)
    Checking  --failures >= ratio x attempts--> Recovering (power CYCLE through the BMC)
    Recovering --healthy within recover.wait.period--> Recovered --healthy--> Available
    Recovering --threshold of cycles spent--> Fencing (power OFF, confirmed by reading it back)
    Fencing   --the BMC reports the host off--> Fenced: only now are its VMs restarted elsewhere

A healthy check brings Suspect, Checking, Degraded, Recovered and Fenced back to Available;
Fencing is finished once begun (a host that answers again half-way is still powered off, so its
VMs can never run twice). A fence the BMC cannot confirm (unreachable, wrong login) leaves the
host Fencing and is tried again with a growing delay; an operator who has made sure the host is
off may declare it fenced. Settings are CloudStack's `kvm.ha.*`, per cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from math import ceil
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

#: The longest a failed fence waits before it is tried again.
MAX_FENCE_BACKOFF_SECONDS = 3600.0


class HaState(StrEnum):
    DISABLED = "Disabled"
    INELIGIBLE = "Ineligible"
    AVAILABLE = "Available"
    SUSPECT = "Suspect"
    CHECKING = "Checking"
    DEGRADED = "Degraded"
    RECOVERING = "Recovering"
    RECOVERED = "Recovered"
    FENCING = "Fencing"
    FENCED = "Fenced"


class HaAction(StrEnum):
    """What the monitor does for a host after recording an observation."""

    NONE = "none"
    CHECK_ACTIVITY = "check_activity"
    RECOVER = "recover"
    FENCE = "fence"
    RESTART_VMS = "restart_vms"


class HaSettings(BaseModel):
    """CloudStack's KVM host-HA settings (seconds unless noted), with its defaults. Out of range
    is a 422 naming the setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    health_check_timeout: float = Field(default=10, ge=1, le=3600)
    activity_check_timeout: float = Field(default=60, ge=1, le=3600)
    activity_check_interval: float = Field(default=60, ge=1, le=3600)
    activity_check_max_attempts: int = Field(default=10, ge=1, le=100)
    activity_check_failure_ratio: float = Field(default=0.7, gt=0, le=1)
    degraded_max_period: float = Field(default=300, ge=1, le=86400)
    recover_timeout: float = Field(default=60, ge=1, le=3600)
    recover_wait_period: float = Field(default=600, ge=1, le=86400)
    recover_failure_threshold: int = Field(default=1, ge=0, le=100)
    fence_timeout: float = Field(default=60, ge=1, le=3600)
    #: How often the cluster's monitor checks its hosts (Stratus's own; not a kvm.ha setting).
    monitor_interval: float = Field(default=10, ge=1, le=3600)

    @classmethod
    def cloudstack_name(cls, field: str) -> str:
        return (
            "stratus.ha.monitor.interval"
            if field == "monitor_interval"
            else ("kvm.ha." + field.replace("_", "."))
        )


@dataclass(frozen=True)
class HaStatus:
    """Where a host is in the machine, and the counts its next decision needs."""

    state: HaState = HaState.DISABLED
    since: datetime | None = None
    reason: str = ""
    activity_attempts: int = 0
    activity_failures: int = 0
    last_activity_check: datetime | None = None
    recoveries: int = 0
    #: Recovering: the power cycle of this round is still to be sent.
    cycle_pending: bool = False
    fence_attempts: int = 0
    next_fence_at: datetime | None = None
    #: Fenced hosts: how many times (each fence restarts the VMs once).
    fences: int = 0
    #: Fenced: the HA VMs stopped by the fence, to restart (an HA job run again after one that
    #: failed finds them here: they no longer hold room on the host).
    pending_restarts: tuple[str, ...] = ()

    def recorded(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "since": self.since.isoformat() if self.since else None,
            "reason": self.reason,
            "activity_attempts": self.activity_attempts,
            "activity_failures": self.activity_failures,
            "last_activity_check": (
                self.last_activity_check.isoformat() if self.last_activity_check else None
            ),
            "recoveries": self.recoveries,
            "cycle_pending": self.cycle_pending,
            "fence_attempts": self.fence_attempts,
            "next_fence_at": self.next_fence_at.isoformat() if self.next_fence_at else None,
            "fences": self.fences,
            "pending_restarts": list(self.pending_restarts),
        }

    @classmethod
    def from_recorded(cls, data: dict[str, Any] | None) -> Self:
        if not data:
            return cls()

        def when(key: str) -> datetime | None:
            value = data.get(key)
            return datetime.fromisoformat(value) if value else None

        return cls(
            state=HaState(data["state"]),
            since=when("since"),
            reason=data.get("reason", ""),
            activity_attempts=int(data.get("activity_attempts", 0)),
            activity_failures=int(data.get("activity_failures", 0)),
            last_activity_check=when("last_activity_check"),
            recoveries=int(data.get("recoveries", 0)),
            cycle_pending=bool(data.get("cycle_pending", False)),
            fence_attempts=int(data.get("fence_attempts", 0)),
            next_fence_at=when("next_fence_at"),
            fences=int(data.get("fences", 0)),
            pending_restarts=tuple(data.get("pending_restarts", ())),
        )

    def to(self, state: HaState, now: datetime, reason: str, **counts: Any) -> HaStatus:
        """Into `state` (counts of the previous state's own kept only where given)."""
        if state is self.state:
            return replace(self, reason=reason, **counts)
        fresh = {
            "activity_attempts": 0,
            "activity_failures": 0,
            "last_activity_check": None,
            "fence_attempts": 0,
            "next_fence_at": None,
            "cycle_pending": state is HaState.RECOVERING,
            "pending_restarts": (),
        }
        if state not in (HaState.RECOVERING, HaState.FENCING, HaState.FENCED):
            fresh["recoveries"] = 0
        return replace(self, state=state, since=now, reason=reason, **{**fresh, **counts})


#: States in which a host takes no new VM: it may be failing.
NOT_PLACEABLE = frozenset(
    {
        HaState.SUSPECT,
        HaState.CHECKING,
        HaState.DEGRADED,
        HaState.RECOVERING,
        HaState.FENCING,
        HaState.FENCED,
    }
)
#: States a healthy check ends.
CLEARED_BY_HEALTH = frozenset(
    {
        HaState.SUSPECT,
        HaState.CHECKING,
        HaState.DEGRADED,
        HaState.RECOVERED,
        HaState.FENCED,
    }
)


def after_health(
    status: HaStatus,
    healthy: bool,
    now: datetime,
    settings: HaSettings,
    can_fence: bool,
    holds_vms: bool = False,
) -> HaStatus:
    """The state after a health check of the host (its agent answered for it, or not). A
    Fenced host that answers again stays Fenced while it still holds VMs in the books: its HA
    job has not stopped them yet, and they died with the fence whatever the host does now."""
    state = status.state
    if state in (HaState.DISABLED, HaState.INELIGIBLE, HaState.FENCING):
        return status
    if state is HaState.FENCED and holds_vms:
        return status
    if healthy:
        if state in CLEARED_BY_HEALTH:
            return status.to(HaState.AVAILABLE, now, "the host answers its health check")
        if state is HaState.RECOVERING:
            return status.to(HaState.RECOVERED, now, "the host answers again after a power cycle")
        return status
    if state is HaState.AVAILABLE:
        return status.to(HaState.SUSPECT, now, "the host failed its health check")
    if state is HaState.RECOVERED:
        return status.to(HaState.SUSPECT, now, "the host failed its health check after recovery")
    if state is HaState.SUSPECT:
        return status.to(HaState.CHECKING, now, "the host failed its health check again")
    if state is HaState.DEGRADED and _elapsed(status, now) >= settings.degraded_max_period:
        return status.to(HaState.CHECKING, now, "degraded for longer than degraded.max.period")
    if state is HaState.RECOVERING and _elapsed(status, now) >= settings.recover_wait_period:
        if status.recoveries >= settings.recover_failure_threshold:
            return _fence_or_stay(status, now, "the host did not recover", can_fence)
        return status.to(
            HaState.RECOVERING, now, "the host did not recover: cycling again", cycle_pending=True
        )
    return status


def after_activity(
    status: HaStatus, active: bool, now: datetime, settings: HaSettings, can_fence: bool
) -> HaStatus:
    """The state after an activity check: does anything of the host (its VMs, through the
    driver or a storage heartbeat) still show it alive?"""
    if status.state is not HaState.CHECKING:
        return status
    attempts = status.activity_attempts + 1
    failures = status.activity_failures + (0 if active else 1)
    counted = {
        "activity_attempts": attempts,
        "activity_failures": failures,
        "last_activity_check": now,
    }
    if failures >= ceil(
        settings.activity_check_failure_ratio * settings.activity_check_max_attempts
    ):
        why = f"{failures} of {attempts} activity checks found no sign of life"
        if settings.recover_failure_threshold > 0 and can_fence:
            return status.to(HaState.RECOVERING, now, why)
        return _fence_or_stay(status, now, why, can_fence)
    if attempts >= settings.activity_check_max_attempts:
        return status.to(
            HaState.DEGRADED, now, f"activity seen in {attempts - failures} of {attempts} checks"
        )
    return status.to(HaState.CHECKING, now, status.reason, **counted)


def _fence_or_stay(status: HaStatus, now: datetime, why: str, can_fence: bool) -> HaStatus:
    if can_fence:
        return status.to(HaState.FENCING, now, f"{why}: fencing", next_fence_at=now)
    return status.to(
        HaState.INELIGIBLE, now, f"{why}, but the host has no out-of-band management to fence it"
    )


def next_action(status: HaStatus, now: datetime, settings: HaSettings) -> HaAction:
    """What the monitor does for the host in its current state."""
    state = status.state
    if state is HaState.CHECKING:
        last = status.last_activity_check
        due = last is None or (now - last).total_seconds() >= settings.activity_check_interval
        return HaAction.CHECK_ACTIVITY if due else HaAction.NONE
    if state is HaState.RECOVERING and status.cycle_pending:
        return HaAction.RECOVER
    if state is HaState.FENCING and (status.next_fence_at is None or now >= status.next_fence_at):
        return HaAction.FENCE
    return HaAction.NONE


def recovery_sent(status: HaStatus, now: datetime) -> HaStatus:
    """The power cycle went out (or was tried): recover.wait.period counts from now."""
    if status.state is not HaState.RECOVERING or not status.cycle_pending:
        return status
    return replace(status, recoveries=status.recoveries + 1, since=now, cycle_pending=False)


def after_fence(
    status: HaStatus, confirmed: bool, now: datetime, why: str, timeout: float
) -> HaStatus:
    """A fence attempt's outcome: confirmed off → Fenced (its VMs to restart); otherwise still
    Fencing, the next attempt after a delay that doubles each time."""
    if status.state is not HaState.FENCING:
        return status
    if confirmed:
        return status.to(HaState.FENCED, now, why, fences=status.fences + 1)
    attempts = status.fence_attempts + 1
    delay = min(timeout * 2 ** (attempts - 1), MAX_FENCE_BACKOFF_SECONDS)
    return status.to(
        HaState.FENCING,
        now,
        f"fence attempt {attempts} not confirmed: {why}",
        fence_attempts=attempts,
        next_fence_at=now + timedelta(seconds=delay),
    )


def declared_fenced(status: HaStatus, now: datetime, by: str) -> HaStatus:
    return status.to(HaState.FENCED, now, f"declared fenced by {by}", fences=status.fences + 1)


def _elapsed(status: HaStatus, now: datetime) -> float:
    return (now - status.since).total_seconds() if status.since else float("inf")
