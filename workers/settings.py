"""Stratus settings, from STRATUS_* environment variables (see the README).

Left unset, the database and Temporal are embedded: `stratus up` starts a private PostgreSQL
and the Temporal dev server under the state folder. Set them to use external ones.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: An admin key shorter than this is refused: it guards every account and the whole cloud.
MIN_ADMIN_API_KEY_LENGTH = 32


class Settings(BaseSettings):
    # A refused setting is reported without its value: the admin key is a secret.
    model_config = SettingsConfigDict(
        env_prefix="STRATUS_", extra="ignore", hide_input_in_errors=True
    )

    database_url: str | None = Field(
        default=None,
        description="libpq URL of the PostgreSQL holding the event store and read models; "
        "unset: an embedded server under the state folder",
    )
    temporal_address: str | None = Field(
        default=None, description="host:port of a Temporal frontend; unset: embedded dev server"
    )
    temporal_namespace: str = "default"
    temporal_port: int = Field(default=7233, description="port of the embedded dev server")
    temporal_ui_port: int = Field(default=8233, description="port of the embedded web UI")
    temporal_ui_url: str | None = Field(
        default=None, description="base URL of the Temporal web UI, for job links"
    )
    task_queue: str = Field(default="stratus-control", description="control-plane task queue")
    state_dir: Path = Field(default=Path(".stratus"), description="where embedded state lives")
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    admin_api_key: str | None = Field(
        default=None,
        min_length=MIN_ADMIN_API_KEY_LENGTH,
        description="admin API key for a new cloud, at least 32 characters; unset: generated "
        "and saved in the state folder",
    )
    admin_secret_key: str | None = Field(
        default=None,
        min_length=MIN_ADMIN_API_KEY_LENGTH,
        description="the admin's secret key (signs CloudStack requests); unset: generated and "
        "saved in the state folder",
    )
    credentials_key: str | None = Field(
        default=None,
        description="Fernet key encrypting users' secret keys in the database; unset: "
        "generated and saved in the state folder",
    )
    seed_demo_cloud: bool = Field(default=True, description="seed the demo cloud on `up`")
    activity_threads: int = Field(default=32, ge=1, le=512)
    expunge_delay_seconds: int = Field(
        default=86400, ge=0, description="how long a destroyed VM stays recoverable (expunge.delay)"
    )

    @property
    def ui_url(self) -> str:
        return self.temporal_ui_url or f"http://localhost:{self.temporal_ui_port}"
