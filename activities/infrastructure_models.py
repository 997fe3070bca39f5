"""Inputs and outputs of the inventory and power-state activities, shared with the workflows.

One model per activity input; fields added later get defaults so recorded histories replay.
Hypervisor-facing values reuse the driver contract's `HostRef`; nothing here carries a secret.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field, JsonValue

from activities.drivers.hypervisor import HostRef
from domain.infrastructure import AddHostRequest
from domain.job_results import JobResult
from domain.vm_ha import CrashedVm


class ClusterAdded(JobResult):
    """AddCluster's result: the cluster as recorded with its connection settings (never a
    secret: those are the worker's), and the id of the power-state sync started for it."""

    id: UUID
    name: str
    zone_id: UUID
    pod_id: UUID
    hypervisor: str
    cpu_overprovisioning: float
    memory_overprovisioning: float
    disable_threshold: float
    agent_task_queue: str | None = None
    allocation_state: str
    connection: dict[str, JsonValue] = Field(default_factory=dict)
    #: Set by the job once it started the sync (the recording activity does not know it).
    power_state_sync_workflow_id: str | None = Field(
        default=None, exclude_if=lambda value: value is None
    )


class StoragePoolAdded(JobResult):
    """AddStoragePool's result: the primary storage as recorded."""

    id: UUID
    name: str
    zone_id: UUID
    scope: str
    cluster_id: UUID | None = None
    pod_id: UUID | None = None
    path: str
    capacity_bytes: int
    overprovisioning: float
    tags: list[str] = Field(default_factory=list)


class HostAdded(JobResult):
    """AddHost's result: the host with the capacity its hypervisor reported (the numbers are
    strings, as the job's record has always kept them)."""

    host_id: UUID
    name: str
    cluster_id: UUID
    cpu_count: str
    cpu_speed_mhz: str
    memory_mib: str


class HostProbe(BaseModel):
    """Which host to ask for its capacity, and on which task queue its agent listens."""

    host: HostRef
    task_queue: str | None = None


class ReportedCapacity(BaseModel):
    """What a host says it has (pydantic, so it resolves outside the workflow sandbox)."""

    cpu_count: int
    cpu_speed_mhz: int
    memory_mib: int
    vm_count: int = 0
    extra: dict[str, str] = Field(default_factory=dict)


class AddHostStep(BaseModel):
    request: AddHostRequest
    submitted_at: datetime


class HostRecorded(BaseModel):
    request: AddHostRequest
    capacity: ReportedCapacity


class AddHostFailure(BaseModel):
    request: AddHostRequest
    submitted_at: datetime
    error_code: int
    error_text: str


class ClusterHosts(BaseModel):
    """A cluster's hosts as its agent needs them for a power-state listing."""

    cluster_id: UUID
    cluster_name: str
    hypervisor: str
    task_queue: str | None = None
    hosts: list[HostRef] = Field(default_factory=list)


class VmPower(BaseModel):
    vm_id: str
    power_state: str


class HostPowerReport(BaseModel):
    """One host's VMs and their power states; `error` set when the host could not be listed."""

    host_id: str
    host_name: str
    vms: list[VmPower] = Field(default_factory=list)
    error: str | None = None


class PowerReports(BaseModel):
    reports: list[HostPowerReport] = Field(default_factory=list)


class ReconcileInput(BaseModel):
    cluster_id: UUID
    run_id: str
    reports: list[HostPowerReport]
    #: When the listing was asked for (workflow time): older domain changes may be corrected.
    listed_at: datetime
    grace_seconds: float = 600.0
    clock_skew_seconds: float = 2.0


class PowerChangeRecord(BaseModel):
    vm_id: UUID
    vm_name: str
    vm_event: str
    old_state: str
    new_state: str
    host_id: UUID | None
    reason: str


class ReconcileResult(BaseModel):
    changes: list[PowerChangeRecord] = Field(default_factory=list)
    #: What VM HA restarts (the sync hands a start job for each to its queue).
    crashed: list[CrashedVm] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    unmanaged: list[str] = Field(default_factory=list)
    unreachable_hosts: list[str] = Field(default_factory=list)
    summary: str = ""
