"""What the API works with, handed over by the composition root (`workers/`)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client

from api.credentials import CredentialStore
from domain.cloud import Cloud
from domain.job_requests import EXPUNGE_DELAY_SECONDS
from projections.store import ReadStore


@dataclass
class CloudServices:
    #: The event store, for validation only: the API never appends.
    cloud: Cloud
    reads: ReadStore
    temporal: Client
    task_queue: str
    namespace: str = "default"
    temporal_ui_url: str = "http://localhost:8233"
    #: How long a `consistent=true` read waits for the read models to catch up.
    consistency_timeout: float = 10.0
    #: CloudStack's expunge.delay: how long a destroyed VM stays recoverable.
    expunge_delay_seconds: int = EXPUNGE_DELAY_SECONDS
    #: Where users' secret keys are kept, encrypted (api/credentials.py).
    credentials: CredentialStore | None = None

    @property
    def secrets(self) -> CredentialStore:
        if self.credentials is None:
            raise RuntimeError("no credential store is configured (STRATUS_CREDENTIALS_KEY)")
        return self.credentials

    def job_url(self, job_id: object) -> str:
        return f"{self.temporal_ui_url}/namespaces/{self.namespace}/workflows/{job_id}"
