"""Inputs and outputs of the host-HA activities, shared with the monitor and the HA job.

One model per activity input; fields added later get defaults so recorded histories replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from activities.drivers.hypervisor import HostRef
from activities.host_maintenance_models import VmOnTheHost
from domain.host_ha import HaSettings
from domain.host_ha_operations import HaConfiguration, RestartVmsRequest
from domain.vm_ha import CrashedVm


class HaConfigurationStep(BaseModel):
    request: HaConfiguration
    at: datetime


class WatchedHost(BaseModel):
    host_id: UUID
    name: str
    ref: HostRef
    state: str


class WatchedHosts(BaseModel):
    settings: HaSettings = HaSettings()
    zone_id: UUID | None = None
    #: The cluster's agent's task queue (None: the control plane's).
    task_queue: str | None = None
    hosts: list[WatchedHost] = Field(default_factory=list)


class HealthProbe(BaseModel):
    hosts: list[HostRef]
    timeout_seconds: float


class HealthReport(BaseModel):
    #: host id → answered within the timeout.
    healthy: dict[str, bool]


class ActivityProbe(BaseModel):
    host: HostRef
    timeout_seconds: float


class HaObservation(BaseModel):
    """What the monitor saw of one host in one pass; `command_id` makes it count once."""

    host_id: UUID
    at: datetime
    command_id: str
    #: A health or activity check's result, or whether a fence was confirmed.
    seen: bool = False
    why: str = ""


class RestartStep(BaseModel):
    request: RestartVmsRequest
    submitted_at: datetime


class FencedHostVms(BaseModel):
    host_name: str
    vms: list[VmOnTheHost] = Field(default_factory=list)


class StopFencedVms(BaseModel):
    job_id: UUID
    host_id: UUID
    vm_ids: list[UUID]


class RestartWave(BaseModel):
    job_id: UUID
    host_name: str
    vms: list[VmOnTheHost]
    task_queue: str


class RestartDone(BaseModel):
    job_id: UUID
    result: dict[str, Any]


class RestartOutcome(BaseModel):
    request: RestartVmsRequest
    submitted_at: datetime
    error_code: int
    error_text: str
    cancelled: bool = False


class CrashRestarts(BaseModel):
    """The start jobs VM HA hands over after a power-state sync pass found HA VMs stopped."""

    sync_run_id: str
    vms: list[CrashedVm]
    task_queue: str
