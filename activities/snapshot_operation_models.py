"""Inputs and outputs of the volume snapshot activities, shared with their workflows.

Fields added later get defaults so recorded histories replay. Hypervisor-facing values reuse
the driver contract's types.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

from activities.deployment_models import VolumeRemoval
from activities.drivers.hypervisor import (
    HostRef,
    SecondaryStorageRef,
    StoragePoolRef,
    VolumeSpec,
)
from domain.volume_requests import TemplateFromSnapshotRequest


class SnapshotWork(BaseModel):
    """One thing for the hypervisor worker to do with a volume snapshot's copies."""

    host: HostRef
    volume_id: str
    snapshot_id: str
    pool: StoragePoolRef | None = None
    secondary: SecondaryStorageRef | None = None
    #: A new volume made from the snapshot.
    spec: VolumeSpec | None = None
    #: A template made from the snapshot.
    template_id: str | None = None


class SnapshotStep(BaseModel):
    """A record step of a snapshot job, with what the hypervisor reported."""

    job_id: UUID
    volume_id: UUID
    snapshot_id: UUID
    pool_id: UUID | None = None
    path: str = ""
    size_bytes: int = 0
    secondary_storage_id: UUID | None = None
    policy_id: UUID | None = None
    template_id: UUID | None = None
    reason: str = ""
    pruned: list[UUID] = Field(default_factory=list)


class SnapshotOrder(BaseModel):
    """Take a snapshot: on primary storage through `work.host`, then back it up."""

    work: SnapshotWork
    task_queue: str | None = None
    pool_id: UUID
    secondary_storage_id: UUID


class SnapshotRemovalOrder(BaseModel):
    """Delete a snapshot's copies (those it has: primary, backup, or none)."""

    snapshot_id: UUID
    primary: SnapshotWork | None = None
    backup: SnapshotWork | None = None
    task_queue: str | None = None


class RevertOrder(BaseModel):
    work: SnapshotWork
    task_queue: str | None = None


class VolumeFromSnapshotOrder(BaseModel):
    work: SnapshotWork
    task_queue: str | None = None
    pool_id: UUID
    #: The undo: delete the new disk.
    removal: VolumeRemoval


class TemplateOrder(BaseModel):
    work: SnapshotWork
    task_queue: str | None = None
    secondary_storage_id: UUID


class TemplateRecord(BaseModel):
    request: TemplateFromSnapshotRequest
    url: str
    image_format: str
    size_bytes: int
