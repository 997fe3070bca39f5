"""Aggregation windows and the arithmetic of usage: cutting intervals, hours, "1.5 Hrs".

Windows are instants-based: an hourly window is one hour of real time starting at a local hour
boundary of the configured timezone (so +05:30 zones cut at :30 UTC, and the repeated local
hour of a DST fall-back is two windows); a daily window runs from one local midnight to the
next (23 or 25 hours on DST change days). All usage arithmetic is in integer milliseconds, so
the SQL that cuts records (`projections.usage_records`) and this module agree to the
millisecond; raw usage in hours is derived from milliseconds only for display.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

MS_PER_HOUR = 3_600_000
_HOUR_QUANTUM = Decimal("1e-10")
_DISPLAY_QUANTUM = Decimal("1e-6")


class WindowSize(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"

    @property
    def sql_unit(self) -> str:
        return "hour" if self is WindowSize.HOURLY else "day"

    @property
    def sql_step(self) -> str:
        return "1 hour" if self is WindowSize.HOURLY else "1 day"


@dataclass(frozen=True)
class AggregationWindow:
    size: WindowSize
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def floor(self, instant: datetime) -> datetime:
        """The start of the window holding `instant` (UTC)."""
        local = instant.astimezone(self.zone)
        if self.size is WindowSize.HOURLY:
            start = local.replace(minute=0, second=0, microsecond=0)
            # fold keeps the right offset in a repeated hour; normalise through UTC.
            return _utc(start)
        midnight = datetime(local.year, local.month, local.day, tzinfo=self.zone)
        return _utc(midnight)

    def next_start(self, window_start: datetime) -> datetime:
        """The end of the window starting at `window_start` (UTC)."""
        if self.size is WindowSize.HOURLY:
            return window_start + timedelta(hours=1)
        local = window_start.astimezone(self.zone)
        following = datetime(local.year, local.month, local.day, tzinfo=self.zone) + timedelta(
            days=1
        )
        # Wall-clock day arithmetic, then resolve the local midnight to an instant.
        return _utc(following.replace(tzinfo=self.zone))

    def windows(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Every window overlapping [start, end), in order."""
        window_start = self.floor(start)
        while window_start < end:
            window_end = self.next_start(window_start)
            yield window_start, window_end
            window_start = window_end

    def cut(
        self, started: datetime, ended: datetime, period_start: datetime, period_end: datetime
    ) -> Iterator[tuple[datetime, datetime, int]]:
        """(window start, window end, milliseconds of [started, ended) inside it) for each
        window of [period_start, period_end) the interval overlaps."""
        lower = max(started, self.floor(period_start))
        for window_start, window_end in self.windows(lower, min(ended, period_end)):
            inside = min(ended, window_end) - max(started, window_start)
            ms = _ms(inside)
            if ms > 0:
                yield window_start, window_end, ms

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone)


def _utc(local: datetime) -> datetime:
    return local.astimezone(UTC)


def _ms(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def to_ms_precision(instant: datetime) -> datetime:
    """Event timestamps are kept to the millisecond: the unit of every usage sum."""
    return instant.astimezone(UTC).replace(microsecond=instant.microsecond // 1000 * 1000)


def raw_hours(ms: int) -> float:
    """Raw usage in hours, as CloudStack's `rawusage`: exact to the millisecond (10 places)."""
    return float((Decimal(ms) / MS_PER_HOUR).quantize(_HOUR_QUANTUM, ROUND_HALF_EVEN))


def display_usage(ms: int) -> str:
    """CloudStack's `usage` text: hours with up to six decimals, no trailing zeros, " Hrs"."""
    hours = (Decimal(ms) / MS_PER_HOUR).quantize(_DISPLAY_QUANTUM, ROUND_HALF_EVEN)
    text = format(hours, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} Hrs"


def size_gib(size_bytes: int | None) -> str:
    if size_bytes is None:
        return ""
    gib = (Decimal(size_bytes) / (1024**3)).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    text = format(gib, "f").rstrip("0").rstrip(".")
    return text or "0"
