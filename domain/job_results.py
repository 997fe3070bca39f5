"""What a finished job answers: one result model per kind of job, with what its operation adds.

The domain's last decision of a job builds its result; the activity returns it, the workflow
returns it as the job's Temporal result, and the job's record keeps it as JSON
(`model_dump(mode="json")`), which `GET /v1/jobs/{id}` shows as `result`. The JSON keys are
those the jobs answered before they were typed, and so is their presence: a fact an operation
adds only sometimes (a deleted volume's queue may end, an expunged VM had snapshots) is left out
when it does not hold, as it was. The queue reads its facts (`removed`, the expunge delay) from
the same JSON.
"""

from __future__ import annotations

from typing import TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

from domain import job_records
from domain.cloud import Decision


class JobResult(BaseModel):
    """A finished job's result."""

    def recorded(self) -> dict[str, object]:
        """As the job's record keeps it, and the API shows it."""
        return self.model_dump(mode="json")


R = TypeVar("R", bound=JobResult)


def succeed_with(d: Decision, job_id: UUID, result: R) -> R:
    """The job succeeds with `result` (its record keeps the JSON), in the caller's decision."""
    job_records.succeed(d, job_id, result.recorded())
    return result


def _only_if_removed(removed: bool) -> bool:
    """`removed` is said only when it holds (a queue that may end); otherwise left out."""
    return not removed


# -- virtual machines ------------------------------------------------------------------------
class VmJobResult(JobResult):
    """A VM job's result: what the VM is now (start, stop, reboot, recover)."""

    virtual_machine_id: UUID
    state: str
    host_id: UUID | None = None
    ip_address: str | None = None


class DeployedVm(VmJobResult):
    root_volume_id: UUID


class DestroyedVm(VmJobResult):
    """Destroyed, recoverable until its queue expunges it after the delay."""

    expunge_delay_seconds: int


class ExpungedVm(VmJobResult):
    """Gone for good: its queue ends. The snapshots removed with it, when it had any."""

    removed: bool = True
    removed_vm_snapshot_ids: list[UUID] = Field(
        default_factory=list, exclude_if=lambda ids: not ids
    )


class MigratedVm(VmJobResult):
    source_host_id: UUID


class VmSnapshotJobResult(VmJobResult):
    """A VM snapshot job's (revert, delete): the VM, and the snapshot."""

    vm_snapshot_id: UUID


class VmSnapshotTaken(VmSnapshotJobResult):
    #: Whether the hypervisor captured the running VM's memory.
    memory: bool


class ServiceOfferingChanged(VmJobResult):
    service_offering_id: UUID
    old_service_offering_id: UUID
    cpu_count: int
    cpu_speed_mhz: int
    memory_mib: int


class VmRestored(VmJobResult):
    root_volume_id: UUID
    old_root_volume_id: UUID
    template_id: UUID


# -- volumes ---------------------------------------------------------------------------------
class VolumeJobResult(JobResult):
    """A volume job's result: what the volume is now."""

    volume_id: UUID
    state: str
    size_bytes: int
    pool_id: UUID | None = None
    virtual_machine_id: UUID | None = None
    device_id: int | None = None


class DeletedVolume(VolumeJobResult):
    """Expunged: the volume's own queue ends."""

    removed: bool = True


class VolumeFromSnapshot(VolumeJobResult):
    """A volume reverted to a snapshot, or made from one."""

    snapshot_id: UUID


# -- volume snapshots ------------------------------------------------------------------------
class SnapshotJobResult(JobResult):
    """A volume snapshot job's result: what the snapshot is now. `removed` when its volume was
    deleted: the deleted volume's queue, which served this job, may end again."""

    snapshot_id: UUID
    volume_id: UUID
    state: str
    size_bytes: int
    physical_size_bytes: int = 0
    removed: bool = Field(default=False, exclude_if=_only_if_removed)


class SnapshotTaken(SnapshotJobResult):
    #: The policy's old snapshots deleted after this one (a recurring policy's job).
    pruned: list[UUID] = Field(default_factory=list)


class TemplateFromSnapshot(JobResult):
    template_id: UUID
    snapshot_id: UUID
    name: str
    url: str
    size_bytes: int
    removed: bool = Field(default=False, exclude_if=_only_if_removed)


class QueuedJobEnd(BaseModel):
    """What a VM's or volume's queue reads from any of its jobs' results: whether the resource
    is gone (the queue ends), and a destroy's expunge delay. Every result above parses as one."""

    removed: bool = False
    expunge_delay_seconds: float | None = None


# -- snapshot policies -----------------------------------------------------------------------
class SnapshotPolicyView(JobResult):
    """A recurring snapshot policy as recorded."""

    snapshot_policy_id: UUID
    volume_id: UUID
    interval_type: str
    schedule: str
    timezone: str
    max_snaps: int
    active: bool
    version: int


class SnapshotPolicyJobResult(SnapshotPolicyView):
    """A policy job's (create/update, delete): the policy and its Temporal Schedule. As the job
    has always answered, `schedule` here says what was done to the schedule ("created",
    "updated", "deleted"), not the policy's own schedule."""

    schedule_id: str
    #: ISO 8601, as Python writes them.
    next_run_times: list[str] = Field(default_factory=list)
