"""Inputs and outputs of the out-of-band management activities, shared with the workflows."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel

from domain.out_of_band import PowerActionRequest


class PowerActionStep(BaseModel):
    request: PowerActionRequest
    submitted_at: datetime


class BmcTarget(BaseModel):
    """Where a power action goes: the host's BMC address (never its login), and the task queue
    of the worker that holds the login (the cluster's agent, else the control plane's)."""

    host_id: UUID
    host_name: str
    driver: str
    address: str
    action: str
    task_queue: str | None = None


class PowerReading(BaseModel):
    power_state: str
    #: Whether the machine reached the state the action leads to (always, for a STATUS).
    settled: bool = True


class PowerRecorded(BaseModel):
    job_id: UUID
    host_id: UUID
    action: str
    power_state: str
    settled: bool = True


class PowerActionOutcome(BaseModel):
    request: PowerActionRequest
    submitted_at: datetime
    error_code: int
    error_text: str
    cancelled: bool = False
