"""Inputs and outputs of the deployment activities, shared with the workflow.

One model per activity input (fields added later get defaults, so recorded histories still
replay). Hypervisor-facing values reuse the driver contract's dataclasses.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from activities.drivers.hypervisor import (
    HostRef,
    StoragePoolRef,
    VirtualMachineSpec,
    VolumeInfo,
    VolumeSpec,
)
from domain.job_requests import DeploymentOrder


class RegisterDeploymentInput(BaseModel):
    job_id: UUID
    order: DeploymentOrder
    submitted_at: datetime
    summary: str


class RegisteredDeployment(BaseModel):
    virtual_machine_id: UUID
    root_volume_id: UUID
    hypervisor: str


class PlanInput(BaseModel):
    job_id: UUID
    attempt: int
    avoid_host_ids: list[UUID] = Field(default_factory=list)
    avoid_cluster_ids: list[UUID] = Field(default_factory=list)
    avoid_pool_ids: list[UUID] = Field(default_factory=list)


class Placement(BaseModel):
    host_id: UUID
    host_name: str
    cluster_id: UUID
    pod_id: UUID
    pool_id: UUID
    #: The task queue of the cluster's hypervisor worker; None means the control-plane queue.
    hypervisor_task_queue: str | None = None


class StepInput(BaseModel):
    """Which job, which placement attempt, where: the stable parts of a command id."""

    job_id: UUID
    attempt: int
    host_id: UUID
    pool_id: UUID


class VolumeOrder(BaseModel):
    """What the hypervisor worker needs to make the root disk."""

    host: HostRef
    pool: StoragePoolRef
    spec: VolumeSpec


class VolumeCreated(BaseModel):
    step: StepInput
    volume: VolumeInfo


class VolumeRemoval(BaseModel):
    host: HostRef
    pool: StoragePoolRef
    volume_id: str


class Nic(BaseModel):
    ip_address: str
    mac_address: str


class VmLaunch(BaseModel):
    """What the hypervisor worker needs to define and start the VM."""

    host: HostRef
    spec: VirtualMachineSpec


class LaunchedVm(BaseModel):
    """What the hypervisor reports after a launch. A pydantic model rather than the driver's
    dataclass: its types resolve when this module is imported, not lazily inside the
    workflow sandbox, where the dataclass's forward references cannot be resolved."""

    vm_id: str
    power_state: str
    host_id: str


class VmRemoval(BaseModel):
    host: HostRef
    vm_id: str


class DeploymentOutcome(BaseModel):
    job_id: UUID
    error_code: int
    error_text: str
    #: What was asked, so a job that failed before it was registered is still recorded.
    order: DeploymentOrder
    submitted_at: datetime
    summary: str
    cancelled: bool = False
