"""Recurring snapshot policies (createSnapshotPolicy): a volume snapshotted hourly, daily,
weekly or monthly at a time of the policy's timezone, keeping at most `max_snaps`.

CloudStack keeps one policy per interval type per volume, and creating one again for the same
interval updates it; the policy's id is derived from the volume and the interval so the same
holds here. The schedule string is CloudStack's: HOURLY "MM", DAILY "MM:HH", WEEKLY "MM:HH:D"
(D 1-7, Sunday 1), MONTHLY "MM:HH:DD" (DD 1-28, so every month has the day). The policy
remembers the snapshots it took, oldest first, so each run can prune the oldest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import InvalidParameter
from domain.ids import derived_id
from domain.snapshot import SnapshotIntervalType

#: CloudStack's snapshot.max.hourly/daily/weekly/monthly defaults: the most a policy may keep.
MAX_SNAPS_LIMIT = {
    SnapshotIntervalType.HOURLY: 8,
    SnapshotIntervalType.DAILY: 8,
    SnapshotIntervalType.WEEKLY: 8,
    SnapshotIntervalType.MONTHLY: 8,
}


@dataclass(frozen=True)
class SnapshotSchedule:
    """A parsed schedule: when in the policy's timezone the snapshot is taken. None fields are
    'every' (an hourly policy runs every hour)."""

    minute: int
    hour: int | None = None
    #: 0 = Sunday, as Temporal's calendar spec counts.
    day_of_week: int | None = None
    day_of_month: int | None = None


def policy_id_for(volume_id: UUID, interval_type: SnapshotIntervalType) -> UUID:
    return derived_id(volume_id, f"snapshot-policy/{interval_type.value}")


def recurring_job_id(policy_id: UUID, scheduled_at: datetime) -> UUID:
    """The CreateSnapshot job of the policy's run scheduled at `scheduled_at`: the same for a
    retried or repeated run, so a run never takes two snapshots."""
    at = scheduled_at.astimezone(UTC)
    return derived_id(policy_id, f"scheduled/{at:%Y%m%dT%H%M%SZ}")


def recurring_snapshot_name(
    volume_name: str, interval: SnapshotIntervalType, scheduled_at: datetime
) -> str:
    """CloudStack's name for a scheduled snapshot: volumename_INTERVAL_yyyyMMddHHmmss (UTC)."""
    return f"{volume_name}_{interval.value}_{scheduled_at.astimezone(UTC):%Y%m%d%H%M%S}"


def parse_interval(value: str) -> SnapshotIntervalType:
    try:
        interval = SnapshotIntervalType(value.upper())
    except ValueError:
        interval = SnapshotIntervalType.MANUAL
    if interval is SnapshotIntervalType.MANUAL:
        raise InvalidParameter(
            field="interval_type", message="must be one of HOURLY, DAILY, WEEKLY, MONTHLY"
        )
    return interval


_FORMATS = {
    SnapshotIntervalType.HOURLY: ("MM", 1),
    SnapshotIntervalType.DAILY: ("MM:HH", 2),
    SnapshotIntervalType.WEEKLY: ("MM:HH:D (D 1-7, Sunday is 1)", 3),
    SnapshotIntervalType.MONTHLY: ("MM:HH:DD (DD 1-28)", 3),
}


def parse_schedule(interval: SnapshotIntervalType, schedule: str) -> SnapshotSchedule:
    """CloudStack's schedule string, checked; InvalidParameter names `schedule` and the form."""
    form, parts_wanted = _FORMATS[interval]

    def refuse() -> InvalidParameter:
        return InvalidParameter(
            field="schedule", message=f"a {interval.value} schedule is {form}, not {schedule!r}"
        )

    parts = schedule.strip().split(":")
    if len(parts) != parts_wanted or not all(p.isdigit() for p in parts):
        raise refuse()
    numbers = [int(p) for p in parts]
    minute = numbers[0]
    if not 0 <= minute <= 59:
        raise refuse()
    if interval is SnapshotIntervalType.HOURLY:
        return SnapshotSchedule(minute=minute)
    hour = numbers[1]
    if not 0 <= hour <= 23:
        raise refuse()
    if interval is SnapshotIntervalType.DAILY:
        return SnapshotSchedule(minute=minute, hour=hour)
    day = numbers[2]
    if interval is SnapshotIntervalType.WEEKLY:
        if not 1 <= day <= 7:
            raise refuse()
        return SnapshotSchedule(minute=minute, hour=hour, day_of_week=day - 1)
    if not 1 <= day <= 28:
        raise refuse()
    return SnapshotSchedule(minute=minute, hour=hour, day_of_month=day)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidParameter(
            field="timezone", message=f"unknown timezone {name!r} (use an IANA name)"
        ) from None
    return name


def check_max_snaps(interval: SnapshotIntervalType, max_snaps: int) -> int:
    limit = MAX_SNAPS_LIMIT[interval]
    if not 1 <= max_snaps <= limit:
        raise InvalidParameter(
            field="max_snaps", message=f"must be 1-{limit} for a {interval.value} policy"
        )
    return max_snaps


class SnapshotPolicy(CloudAggregate):
    @event("Created")
    def __init__(
        self,
        volume_id: UUID,
        account_id: UUID,
        zone_id: UUID,
        interval_type: str,
        schedule: str,
        timezone: str,
        max_snaps: int,
        command_id: str,
    ) -> None:
        self.volume_id = volume_id
        self.account_id = account_id
        self.zone_id = zone_id
        self.interval_type = SnapshotIntervalType(interval_type)
        self.schedule = schedule
        self.timezone = timezone
        self.max_snaps = max_snaps
        self.active = True
        #: The snapshots this policy took, oldest first.
        self.snapshot_ids: list[UUID] = []
        #: The last create/update/delete, and the settings it replaced (None: the policy did
        #: not exist or was deleted before it), so a job that fails can undo exactly its own.
        self.last_change = command_id
        self.previous_settings: tuple[str, str, int] | None = None
        self._remember(command_id)

    @property
    def parsed_schedule(self) -> SnapshotSchedule:
        return parse_schedule(self.interval_type, self.schedule)

    @property
    def settings(self) -> tuple[str, str, int]:
        """(schedule, timezone, max_snaps): what an update replaces (and its undo restores)."""
        return self.schedule, self.timezone, self.max_snaps

    def update(self, schedule: str, timezone: str, max_snaps: int, command_id: str) -> bool:
        """createSnapshotPolicy again for the same interval: the new schedule replaces it (and a
        deleted policy comes back)."""
        if self.has_applied(command_id):
            return False
        self._updated(schedule, timezone, max_snaps, command_id)
        return True

    @event("Updated")
    def _updated(self, schedule: str, timezone: str, max_snaps: int, command_id: str) -> None:
        self.previous_settings = self.settings if self.active else None
        self.last_change = command_id
        self.schedule = schedule
        self.timezone = timezone
        self.max_snaps = max_snaps
        self.active = True
        self._remember(command_id)

    def record_snapshot_taken(self, snapshot_id: UUID, command_id: str) -> None:
        if self.has_applied(command_id) or snapshot_id in self.snapshot_ids:
            return
        self._snapshot_taken(snapshot_id, command_id)

    @event("SnapshotTaken")
    def _snapshot_taken(self, snapshot_id: UUID, command_id: str) -> None:
        self.snapshot_ids.append(snapshot_id)
        self._remember(command_id)

    def undo(self, change_command_id: str, command_id: str) -> bool:
        """Put back what the change `change_command_id` replaced, if it is still the last
        change (a later one supersedes it, and is not undone)."""
        if self.has_applied(command_id) or self.last_change != change_command_id:
            return False
        previous = self.previous_settings
        if previous is None:
            return self.delete(command_id)
        self._updated(*previous, command_id)
        return True

    def delete(self, command_id: str) -> bool:
        """deleteSnapshotPolicies: no more runs; the snapshots it took are kept."""
        if self.has_applied(command_id) or not self.active:
            return False
        self._deleted(command_id)
        return True

    @event("Deleted")
    def _deleted(self, command_id: str) -> None:
        self.previous_settings = self.settings
        self.last_change = command_id
        self.active = False
        self._remember(command_id)
