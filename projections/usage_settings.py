"""Usage metering settings, from STRATUS_USAGE_* environment variables.

- STRATUS_USAGE_WINDOW: `hourly` (default) or `daily`, the aggregation window of records.
- STRATUS_USAGE_TIMEZONE: IANA name (default `UTC`) in which windows start at local hour or
  midnight boundaries.
- STRATUS_USAGE_TARIFF: path to a JSON or TOML tariff (`projections.tariff`); unset, summaries
  report quantities without cost.
- STRATUS_USAGE_MAX_SPAN_DAYS: the longest period one listing, summary or export may ask for.
- STRATUS_USAGE_GRACE_SECONDS: how long after its end a window stays provisional (default 300):
  an event a worker commits a little late still counts without a correction. Only final
  records are exported; listings and summaries show provisional ones, marked.

The projector and the API read the same variables, so corrections (cut per served window) and
records are cut the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from projections.usage_windows import AggregationWindow, WindowSize

DEFAULT_GRACE_SECONDS = 300


class UsageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRATUS_USAGE_", extra="ignore")

    window: WindowSize = Field(default=WindowSize.HOURLY, description="hourly or daily")
    timezone: str = Field(default="UTC", description="IANA timezone of window boundaries")
    tariff: Path | None = Field(default=None, description="JSON or TOML tariff file")
    max_span_days: int = Field(default=366, ge=1, le=3660)
    grace_seconds: int = Field(
        default=DEFAULT_GRACE_SECONDS,
        ge=0,
        le=7 * 86_400,
        description="how long after its end a window stays provisional",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown timezone {value!r}") from error
        return value

    @property
    def aggregation(self) -> AggregationWindow:
        return AggregationWindow(self.window, self.timezone)

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.grace_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UsageSettings:
        """Settings from the process environment, overridden by `env` (the projector's env)."""
        overrides = {
            key.removeprefix("STRATUS_USAGE_").lower(): value
            for key, value in (env or {}).items()
            if key.startswith("STRATUS_USAGE_")
        }
        return cls.model_validate(overrides)
