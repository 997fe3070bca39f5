"""Aggregation windows and the arithmetic of usage: cutting intervals, hours, "1.5 Hrs".

Windows are cut in the configured timezone (`STRATUS_USAGE_TIMEZONE`), as CloudStack operators
read their usage: a record's window is a local day or a local hour of that zone, and windows
tile time, with no gap and no overlap, whatever period a query asks for. This module is the
only place windows are defined; the SQL that cuts records (`projections.usage_records`) takes
their boundaries from here, so no timezone rule is written twice.

- **Daily**: from the local midnight of a date to the local midnight of the next date. The
  "local midnight" of a date whose 00:00 never happens (America/Santiago, America/Havana,
  Asia/Beirut and America/Asuncion move their clocks at midnight in spring) is the first
  instant of that date, 01:00; of a date whose 00:00 happens twice (Havana's autumn change
  from 01:00 back to 00:00) it is the first occurrence. So a day is 23 or 25 hours on a change
  day (or 23.5/24.5 on Australia/Lord_Howe's 30-minute change), and a date that a zone skipped
  entirely (Pacific/Apia, 30 December 2011) has no window.
- **Hourly**: a window starts at every instant at which the local clock shows a whole hour,
  and at a clock change that jumps into another hour without showing its :00. So hours are
  local hours: +05:30 and +09:30/+10:30 zones (Asia/Kolkata, Australia/Adelaide) cut at :30
  UTC; the repeated hour of a whole-hour fall-back is two windows of an hour each (the clock
  shows 02:00 twice); a skipped hour has no window. Lord Howe's 30-minute change makes one
  30-minute window in spring (02:30-03:00 local: the clock jumps from 01:59 to 02:30) and one
  90-minute window in autumn (01:00-02:00 local: the clock goes from 01:59 back to 01:30 within
  the same hour).

Both rules are computed from the zone's rules (zoneinfo), never by adding 24 hours or a day to
a wall clock. A window is labelled with the local time of its first instant, offset included,
so two windows never share a label. All usage arithmetic is in integer milliseconds; raw usage
in hours is derived from milliseconds only for display.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from functools import lru_cache
from math import ceil, floor
from zoneinfo import ZoneInfo

MS_PER_HOUR = 3_600_000
_HOUR_QUANTUM = Decimal("1e-10")
_DISPLAY_QUANTUM = Decimal("1e-6")
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
#: "Just before" an instant: zone rules change on whole seconds.
_TICK = timedelta(microseconds=1)


class WindowSize(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"

    @property
    def sql_unit(self) -> str:
        return "hour" if self is WindowSize.HOURLY else "day"


@dataclass(frozen=True)
class AggregationWindow:
    size: WindowSize
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def floor(self, instant: datetime) -> datetime:
        """The start of the window holding `instant` (UTC)."""
        if self.size is WindowSize.HOURLY:
            return _hour_floor(self.zone, instant.astimezone(UTC))
        return _day_floor(self.timezone, instant.astimezone(UTC))

    def next_start(self, window_start: datetime) -> datetime:
        """The first window boundary after `window_start`: the end of the window it starts."""
        if self.size is WindowSize.HOURLY:
            return _hour_after(self.zone, window_start.astimezone(UTC))
        return _day_after(self.timezone, window_start.astimezone(UTC))

    def windows(self, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Every window overlapping [start, end), in order."""
        window_start = self.floor(start)
        while window_start < end:
            window_end = self.next_start(window_start)
            yield window_start, window_end
            window_start = window_end

    def boundaries(self, start: datetime, end: datetime) -> list[datetime]:
        """The boundaries of the windows overlapping [start, end): the first window's start,
        then each window's end (so n windows give n + 1 instants, ascending)."""
        found = [self.floor(start)]
        while found[-1] < end:
            found.append(self.next_start(found[-1]))
        return found

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


# --- local hours ----------------------------------------------------------------------------


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _into_hour(local: datetime) -> timedelta:
    return timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)


def _hour_floor(zone: ZoneInfo, instant: datetime) -> datetime:
    local = instant.astimezone(zone)
    candidate = instant - _into_hour(local)
    if _offset(zone, candidate) == local.utcoffset():
        return candidate  # the clock showed this whole hour, and nothing changed since
    change = _change_between(zone, candidate, instant)
    if _starts_an_hour(zone, change):
        return change
    return _hour_floor(zone, change - _TICK)


def _hour_after(zone: ZoneInfo, instant: datetime) -> datetime:
    local = instant.astimezone(zone)
    candidate = instant - _into_hour(local) + _HOUR
    if _offset(zone, candidate) == local.utcoffset():
        return candidate
    change = _change_between(zone, instant, candidate)
    if _starts_an_hour(zone, change):
        return change
    return _hour_after(zone, change)


def _starts_an_hour(zone: ZoneInfo, change: datetime) -> bool:
    """Whether a clock change starts an hourly window: the clock shows a whole hour right
    after it, or has jumped into another hour."""
    after = change.astimezone(zone)
    if _into_hour(after) == timedelta(0):
        return True
    before = (change - _TICK).astimezone(zone)
    return (after.date(), after.hour) != (before.date(), before.hour)


def _change_between(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first instant in (before, after] whose UTC offset differs from `before`'s (zone
    rules change on whole seconds, so a bisection over seconds finds it)."""
    old = _offset(zone, before)
    low, high = floor(before.timestamp()), ceil(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(zone, datetime.fromtimestamp(middle, UTC)) == old:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


# --- local days -----------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _day_start(timezone: str, day: date) -> datetime:
    """The first instant of a local date: its midnight, the first occurrence of a midnight the
    clock shows twice, or the first instant after a midnight the clock skips."""
    zone = ZoneInfo(timezone)
    midnight = datetime.combine(day, time())
    resolved = [midnight.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    shown = [t for t in resolved if t.astimezone(zone).replace(tzinfo=None) == midnight]
    if shown:
        return min(shown)
    # Skipped: the clock jumps over midnight between the two readings of it.
    low, high = floor(min(resolved).timestamp()), ceil(max(resolved).timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        wall = datetime.fromtimestamp(middle, UTC).astimezone(zone).replace(tzinfo=None)
        if wall >= midnight:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _day_floor(timezone: str, instant: datetime) -> datetime:
    day = instant.astimezone(ZoneInfo(timezone)).date()
    while _day_start(timezone, day) > instant:
        day -= _DAY
    while _day_start(timezone, day + _DAY) <= instant:
        day += _DAY
    return _day_start(timezone, day)


def _day_after(timezone: str, instant: datetime) -> datetime:
    day = instant.astimezone(ZoneInfo(timezone)).date() + _DAY
    while (start := _day_start(timezone, day)) <= instant:
        day += _DAY
    return start


# --- usage arithmetic -----------------------------------------------------------------------


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
