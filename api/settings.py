"""The API's own settings, from STRATUS_* environment variables (see the README)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: 1 MiB: a thousand times the largest request body the API takes in practice.
DEFAULT_MAX_REQUEST_BODY_BYTES = 1024 * 1024


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRATUS_", extra="ignore")

    max_request_body_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BODY_BYTES,
        ge=1024,
        le=64 * 1024 * 1024,
        description="a larger request body is refused with 413 before it is read",
    )

    # Rate limiting (api/rate_limit.py): a token bucket per caller (user, or account), per API
    # replica (N replicas allow N times these), answered with 429 and Retry-After.
    api_rate_limit_enabled: bool = Field(
        default=True, description="limit the requests of each caller (off: no limit)"
    )
    api_rate_limit_per_second: float = Field(
        default=50.0,
        gt=0,
        le=100_000,
        description="requests a second each caller may make, on average, per API replica",
    )
    api_rate_limit_burst: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="requests each caller may make at once, before the rate applies",
    )
