"""Inputs and outputs of the volume operation activities, shared with their workflows.

One model per activity input; fields added later get defaults so recorded histories replay.
Hypervisor-facing values reuse the driver contract's types and the deployment's models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel

from activities.deployment_models import VolumeOrder, VolumeRemoval
from activities.drivers.hypervisor import HostRef, StoragePoolRef, VolumeInfo
from domain.volume_requests import VolumeOperationRequest

Q = TypeVar("Q", bound=VolumeOperationRequest)


class VolumeJobInput(BaseModel, Generic[Q]):
    """The job's request (of the operation the activity serves) and when it was submitted
    (the job record's creation time)."""

    request: Q
    submitted_at: datetime


class VolumeJobOutcome(BaseModel):
    request: VolumeOperationRequest
    submitted_at: datetime
    error_code: int
    error_text: str
    cancelled: bool = False


class VolumePlug(BaseModel):
    """Plug a volume into (or out of) a VM on its host; `task_queue` None is the control
    plane's."""

    host: HostRef
    vm_id: str
    volume: VolumeInfo
    device_id: int
    task_queue: str | None = None


class AttachOrder(BaseModel):
    """What an attach has to do on the hypervisors, once its books are taken."""

    device_id: int
    pool_id: UUID
    hypervisor: str
    #: Set when the volume had no disk yet: make it first.
    create: VolumeOrder | None = None
    create_task_queue: str | None = None
    #: Set when the VM runs: plug the disk in on its host.
    plug: VolumePlug | None = None


class AttachStep(BaseModel):
    job_id: UUID
    volume_id: UUID
    vm_id: UUID
    pool_id: UUID
    device_id: int
    hypervisor: str = ""
    #: The disk this job made (None when it was there already).
    created: VolumeInfo | None = None


class DetachOrder(BaseModel):
    #: Set when the VM runs: unplug the disk on its host.
    unplug: VolumePlug | None = None


class VolumeStep(BaseModel):
    job_id: UUID
    volume_id: UUID


class ResizeOrder(BaseModel):
    new_size_bytes: int
    #: None: the volume has no disk yet, only the books change.
    host: HostRef | None = None
    pool: StoragePoolRef | None = None
    task_queue: str | None = None


class DiskResize(BaseModel):
    host: HostRef
    pool: StoragePoolRef
    volume_id: str
    size_bytes: int


class ResizeStep(BaseModel):
    job_id: UUID
    volume_id: UUID
    new_size_bytes: int
    #: Set once the disk is grown: an undo then records that size (a disk is never shrunk
    #: back), so the books match the disk.
    disk_size_bytes: int | None = None


class DiskCopy(BaseModel):
    host: HostRef
    source_pool: StoragePoolRef
    target_pool: StoragePoolRef
    volume_id: str


class MigrateOrder(BaseModel):
    copy_order: DiskCopy
    task_queue: str | None = None
    #: Undo of the copy, and (after the record) the deletion of the source disk.
    target_removal: VolumeRemoval
    source_removal: VolumeRemoval


class MigrateStep(BaseModel):
    job_id: UUID
    volume_id: UUID
    target_pool_id: UUID
    path: str = ""


class DeleteOrder(BaseModel):
    removal: VolumeRemoval | None = None
    task_queue: str | None = None


class RemovedVm(BaseModel):
    """A VM just expunged by `job_id`, whose data volumes are to be detached."""

    job_id: UUID
    vm_id: UUID
