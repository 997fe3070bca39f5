"""Inputs and outputs of the snapshot policy activities, shared with their workflows.

One model per activity input; fields added later get defaults so recorded histories replay.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from domain.job_requests import VmJobSubmission
from domain.job_results import SnapshotPolicyJobResult
from domain.snapshot_policy_operations import SnapshotPolicyChange


class PolicyStep(BaseModel):
    change: SnapshotPolicyChange
    submitted_at: datetime


class PolicyOutcome(BaseModel):
    change: SnapshotPolicyChange
    submitted_at: datetime
    result: SnapshotPolicyJobResult | None = None
    error_code: int | None = None
    error_text: str | None = None


class ScheduleSync(BaseModel):
    """Make the policy's Temporal Schedule follow the policy as the event store has it now:
    created or updated while it is active, deleted once it is not."""

    policy_id: UUID
    #: The task queue the scheduled RecurringSnapshot runs on (the control plane's).
    task_queue: str


class ScheduleSynced(BaseModel):
    schedule_id: str
    #: "created", "updated" or "deleted" (also when there was nothing to delete).
    action: str
    next_run_times: list[datetime] = Field(default_factory=list)


class RecurringSnapshotInput(BaseModel):
    """What a schedule's action starts RecurringSnapshot with."""

    policy_id: UUID


class RunPlanRequest(BaseModel):
    policy_id: UUID
    scheduled_at: datetime


class RunPlan(BaseModel):
    submission: VmJobSubmission | None = None
    #: The VM whose queue takes the job (the volume is attached); None: the volume's own.
    queue_vm_id: UUID | None = None
    skipped: str | None = None


class RunSubmission(BaseModel):
    submission: VmJobSubmission
    queue_vm_id: UUID | None = None
    task_queue: str


class RunSubmitted(BaseModel):
    job_id: UUID
    queue_id: str


class RecurringSnapshotRun(BaseModel):
    """What one scheduled run did: the CreateSnapshot job it handed to the volume's queue, or
    why it skipped (what does not apply is left out)."""

    #: ISO 8601, as Python writes it.
    scheduled_at: str
    skipped: str | None = Field(default=None, exclude_if=lambda value: value is None)
    job_id: UUID | None = Field(default=None, exclude_if=lambda value: value is None)
    queue_id: str | None = Field(default=None, exclude_if=lambda value: value is None)
