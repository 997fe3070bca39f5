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
