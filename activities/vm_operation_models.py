"""Inputs and outputs of the VM operation activities, shared with their workflows.

One model per activity input; fields added later get defaults so recorded histories replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

from activities.deployment_models import VmRemoval, VolumeOrder, VolumeRemoval
from activities.drivers.hypervisor import HostRef, VolumeMove
from domain.job_results import DestroyedVm
from domain.vm_requests import VmOperationRequest

Q = TypeVar("Q", bound=VmOperationRequest)


class OperationInput(BaseModel, Generic[Q]):
    """The job's request (of the operation the activity serves, or of any) and when it was
    submitted (the job record's creation time)."""

    request: Q
    submitted_at: datetime


class OperationOutcome(BaseModel):
    request: VmOperationRequest
    submitted_at: datetime
    error_code: int
    error_text: str
    cancelled: bool = False


class VmOnHost(BaseModel):
    """A VM on a host, for a hypervisor call; `task_queue` None means the control plane's."""

    host: HostRef
    vm_id: str
    task_queue: str | None = None
    forced: bool = False


class Begun(BaseModel):
    """The VM as the job found it, once its first transition is recorded."""

    state: str
    on_host: VmOnHost | None = None


class JobVm(BaseModel):
    job_id: UUID
    vm_id: UUID


class HostStep(BaseModel):
    job_id: UUID
    vm_id: UUID
    host_id: UUID
    attempt: int = 1


class PlanStartInput(BaseModel):
    job_id: UUID
    vm_id: UUID
    attempt: int
    avoid_host_ids: list[UUID] = Field(default_factory=list)
    ha_restart: bool = False


class DestroyStep(BaseModel):
    job_id: UUID
    vm_id: UUID
    expunge: bool
    expunge_delay_seconds: int


class ExpungeOrder(BaseModel):
    """What is left to delete on the hypervisors, and where."""

    vm: VmRemoval | None = None
    vm_task_queue: str | None = None
    volume: VolumeRemoval | None = None
    volume_task_queue: str | None = None


class DestroyRecorded(BaseModel):
    """complete_destroy's answer: the job's result, or None when its expunge follows."""

    result: DestroyedVm | None = None


class MigrationRequest(BaseModel):
    """plan_migration's input: the target asked for, or None for the planner's choice."""

    job_id: UUID
    vm_id: UUID
    host_id: UUID | None = None


class VmMigration(BaseModel):
    """A running VM moved between two hosts of one cluster, for the hypervisor worker."""

    source: HostRef
    target: HostRef
    vm_id: str


class VmStorageMigration(BaseModel):
    """A running VM moved to another cluster's host with its disks, for the hypervisor worker."""

    source: HostRef
    target: HostRef
    vm_id: str
    moves: list[VolumeMove]


class DiskMove(BaseModel):
    """One of the VM's volumes and the pool it moves to, in the domain's ids."""

    volume_id: UUID
    source_pool_id: UUID
    target_pool_id: UUID
    target_pool_name: str = ""


class MovedDisks(BaseModel):
    """Where the hypervisor put each moved disk: volume id → path on its new pool."""

    paths: dict[str, str]


class MigrationPlan(BaseModel):
    """Where the VM goes: the move there, and the move back that undoes it. A target in
    another cluster moves the disks too (`disk_moves`, `storage_there`, `storage_back`)."""

    source_host_id: UUID
    target_host_id: UUID
    target_host_name: str
    there: VmMigration
    back: VmMigration
    task_queue: str | None = None
    disk_moves: list[DiskMove] = Field(default_factory=list)
    storage_there: VmStorageMigration | None = None
    storage_back: VmStorageMigration | None = None


class StorageStep(BaseModel):
    """Room on the target pools for the disks that move, and their Migrating state."""

    job_id: UUID
    vm_id: UUID
    disk_moves: list[DiskMove]


class MigrationStep(BaseModel):
    job_id: UUID
    vm_id: UUID
    source_host_id: UUID
    target_host_id: UUID
    #: A migration with storage: the disks that moved and where the hypervisor put them.
    disk_moves: list[DiskMove] = Field(default_factory=list)
    paths: dict[str, str] = Field(default_factory=dict)


class SnapshotStep(BaseModel):
    job_id: UUID
    vm_id: UUID
    snapshot_id: UUID
    #: complete_snapshot: whether the hypervisor captured the running VM's memory.
    memory: bool = False


class HypervisorSnapshot(BaseModel):
    """A VM snapshot on a host, for the hypervisor worker."""

    host: HostRef
    vm_id: str
    snapshot_id: str
    memory: bool = False


class SnapshotOrder(BaseModel):
    """Where a snapshot job works: the snapshot on its host, that host's VM, and the queue."""

    snapshot: HypervisorSnapshot
    on_host: VmOnHost
    memory: bool


class OfferingChange(BaseModel):
    """change_service_offering's input: the offering the stopped VM takes."""

    job_id: UUID
    vm_id: UUID
    service_offering_id: UUID


class RestoreRequest(BaseModel):
    """begin_restore's input: the template of the new root volume (None: the VM's own)."""

    job_id: UUID
    vm_id: UUID
    template_id: UUID | None = None


class RestoreOrder(BaseModel):
    """Where the new root volume is made, and what it replaces."""

    volume: VolumeOrder
    task_queue: str | None = None
    new_volume_id: UUID
    old_volume_id: UUID
    old_template_id: UUID
    template_id: UUID
    pool_id: UUID


class RestoreStep(BaseModel):
    """A restore step on one volume: the new root volume, or the old one being deleted."""

    job_id: UUID
    vm_id: UUID
    volume_id: UUID
    template_id: UUID | None = None
    pool_id: UUID | None = None
    path: str = ""
    size_bytes: int = 0


class VolumeCleanup(BaseModel):
    """A disk to delete on a pool, through a host that reaches it; None when none is left."""

    removal: VolumeRemoval | None = None
    task_queue: str | None = None
