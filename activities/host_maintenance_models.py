"""Inputs and outputs of the host maintenance activities, shared with the workflows.

One model per activity input; fields added later get defaults so recorded histories replay.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from domain.host_maintenance import CancelHostMaintenanceRequest, HostMaintenanceRequest


class MaintenanceStep(BaseModel):
    request: HostMaintenanceRequest
    submitted_at: datetime


class CancelStep(BaseModel):
    request: CancelHostMaintenanceRequest
    submitted_at: datetime


class HostJobStep(BaseModel):
    job_id: UUID
    host_id: UUID


class VmOnTheHost(BaseModel):
    vm_id: UUID
    name: str
    account_id: UUID
    zone_id: UUID
    ha_enabled: bool


class VmsOnTheHost(BaseModel):
    vms: list[VmOnTheHost] = Field(default_factory=list)


class Evacuation(BaseModel):
    """One wave of migrate jobs that move VMs off the host, each in its VM's queue."""

    job_id: UUID
    host_id: UUID
    host_name: str
    round_number: int
    vms: list[VmOnTheHost]
    #: The task queue the VMs' queues run on (the control plane's).
    task_queue: str


class EvacuationJob(BaseModel):
    vm_id: UUID
    vm_name: str
    job_id: UUID
    queue_id: str


class EvacuationSubmitted(BaseModel):
    jobs: list[EvacuationJob] = Field(default_factory=list)


class EvacuationEnd(BaseModel):
    vm_id: UUID
    vm_name: str
    job_id: UUID
    status: str
    error_text: str | None = None


class EvacuationEnded(BaseModel):
    ends: list[EvacuationEnd] = Field(default_factory=list)


class StepEntered(BaseModel):
    job_id: UUID
    step: str
    #: Makes the command id (`{job_id}/{name}`): the same step entered twice records once.
    name: str


class MaintenanceErrors(BaseModel):
    job_id: UUID
    host_id: UUID
    errors: list[str]


class MaintenanceOutcome(BaseModel):
    """How a maintenance (or cancel) job ended unsuccessfully, for its record."""

    job_type: str
    maintenance: HostMaintenanceRequest | None = None
    cancel: CancelHostMaintenanceRequest | None = None
    submitted_at: datetime
    error_code: int
    error_text: str
    cancelled: bool = False


class JobToCancel(BaseModel):
    job_id: UUID
    reason: str
