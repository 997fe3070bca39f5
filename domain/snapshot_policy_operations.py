"""Recurring snapshot policies as the domain sees them: the jobs that create, update and delete
a policy (createSnapshotPolicy, deleteSnapshotPolicies), and what each scheduled run decides.

A policy's job records the policy (and the job) here, then the Temporal Schedule
`snapshot-policy/<policy_id>` is made to follow the policy. Each scheduled run
(RecurringSnapshot) asks `plan_recurring_snapshot` whether to take a snapshot: only for a policy
still active whose volume has a disk and is not being deleted; it then hands a CreateSnapshot
job, whose id is derived from the policy and the scheduled time, to the volume's queue.

Submission rules: the volume must exist and be visible to the caller, and not be deleted or
being deleted. A volume still Allocated (no disk yet: a data volume gets its disk when first
attached) is accepted, unlike CloudStack, which refuses a volume that is not Ready: its runs
skip, saying why, until the disk exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel

from domain import job_records
from domain.cloud import Cloud, Decision
from domain.errors import IllegalStateTransition, NotFound
from domain.job import Job
from domain.job_records import JobTicket
from domain.job_requests import VmJobSubmission
from domain.job_results import SnapshotPolicyJobResult, SnapshotPolicyView
from domain.snapshot import SnapshotIntervalType, snapshot_id_for
from domain.snapshot_policy import (
    SnapshotPolicy,
    check_max_snaps,
    check_timezone,
    parse_interval,
    parse_schedule,
    recurring_job_id,
    recurring_snapshot_name,
)
from domain.volume import Volume, VolumeState
from domain.volume_requests import SnapshotVolumeRequest, VolumeOperation

CREATE_POLICY_JOB = "CreateSnapshotPolicy"
DELETE_POLICY_JOB = "DeleteSnapshotPolicies"
POLICY_RESOURCE = "SnapshotPolicy"
#: The workflow each schedule run starts.
RECURRING_SNAPSHOT_WORKFLOW = "RecurringSnapshot"
#: Volume states a policy is refused for, and its runs skip.
DELETED_VOLUME_STATES = frozenset(
    {VolumeState.DESTROY, VolumeState.EXPUNGING, VolumeState.EXPUNGED}
)


def schedule_id_for(policy_id: UUID | str) -> str:
    """The Temporal Schedule that runs the policy."""
    return f"snapshot-policy/{policy_id}"


class SnapshotPolicyChange(BaseModel):
    """The input of a CreateSnapshotPolicy or DeleteSnapshotPolicies job."""

    job_id: UUID
    policy_id: UUID
    volume_id: UUID
    account_id: UUID
    summary: str
    delete: bool = False
    interval_type: str = SnapshotIntervalType.DAILY.value
    schedule: str = ""
    timezone: str = "UTC"
    max_snaps: int = 1

    @property
    def job_type(self) -> str:
        return DELETE_POLICY_JOB if self.delete else CREATE_POLICY_JOB


def check_policy(
    interval_type: str, schedule: str, timezone: str, max_snaps: int
) -> SnapshotIntervalType:
    """Every field of a createSnapshotPolicy, checked; InvalidParameter names the bad one."""
    interval = parse_interval(interval_type)
    parse_schedule(interval, schedule)
    check_timezone(timezone)
    check_max_snaps(interval, max_snaps)
    return interval


def volume_refusal(name: str, state: str) -> IllegalStateTransition | None:
    if VolumeState(state) in DELETED_VOLUME_STATES:
        return IllegalStateTransition(
            f"volume {name} is deleted or being deleted ({state}): it takes no snapshot policy"
        )
    return None


# -- the policy jobs -------------------------------------------------------------------------
def _job(
    d: Decision, change: SnapshotPolicyChange, submitted_at: datetime, zone: UUID | None
) -> Job:
    return job_records.open_job(
        d,
        JobTicket(
            job_id=change.job_id,
            job_type=change.job_type,
            account_id=change.account_id,
            resource_type=POLICY_RESOURCE,
            resource_id=change.policy_id,
            zone_id=zone,
            summary=change.summary,
            submitted_at=submitted_at,
        ),
    )


def record_change(cloud: Cloud, change: SnapshotPolicyChange, submitted_at: datetime) -> None:
    """Create, update (createSnapshotPolicy again for the same interval) or delete the policy,
    with the job's record. Idempotent by `f"{job_id}/record"`."""
    command_id = f"{change.job_id}/record"

    def decide(d: Decision) -> None:
        policy = d.find(SnapshotPolicy, change.policy_id)
        if change.delete:
            if policy is None:
                raise NotFound(f"snapshot policy {change.policy_id} not found")
            _job(d, change, submitted_at, policy.zone_id).enter_step(
                "deleting the schedule", f"{change.job_id}/step"
            )
            policy.delete(command_id)
            return
        volume = d.get(Volume, change.volume_id)
        refusal = volume_refusal(volume.name, volume.state.value)
        if refusal is not None and not (policy is not None and policy.has_applied(command_id)):
            raise refusal
        if policy is None:
            d.add(
                SnapshotPolicy.create_with_id(
                    change.policy_id,
                    volume_id=volume.id,
                    account_id=volume.account_id,
                    zone_id=volume.zone_id,
                    interval_type=change.interval_type,
                    schedule=change.schedule,
                    timezone=change.timezone,
                    max_snaps=change.max_snaps,
                    command_id=command_id,
                )
            )
        else:
            policy.update(change.schedule, change.timezone, change.max_snaps, command_id)
        _job(d, change, submitted_at, volume.zone_id).enter_step(
            "scheduling the policy", f"{change.job_id}/step"
        )

    cloud.decide(decide)


def undo_change(cloud: Cloud, change: SnapshotPolicyChange) -> None:
    """A failed create/update puts back what it replaced (unless a later change superseded
    it)."""

    def decide(d: Decision) -> None:
        policy = d.find(SnapshotPolicy, change.policy_id)
        if policy is not None:
            policy.undo(f"{change.job_id}/record", f"{change.job_id}/undo-record")

    cloud.decide(decide)


def finish_job(
    cloud: Cloud,
    change: SnapshotPolicyChange,
    submitted_at: datetime,
    result: SnapshotPolicyJobResult | None,
    error: tuple[int, str] | None = None,
) -> None:
    """The job succeeded with `result`, or failed with `error` (code, text)."""

    def decide(d: Decision) -> None:
        policy = d.find(SnapshotPolicy, change.policy_id)
        job = _job(d, change, submitted_at, policy.zone_id if policy else None)
        if job.status.is_final:
            return
        if error is None:
            job.succeed(result.recorded() if result else {}, f"{change.job_id}/succeeded")
        else:
            job.fail(error[0], error[1], f"{change.job_id}/failed")

    cloud.decide(decide)


def policy_view(cloud: Cloud, policy_id: UUID) -> SnapshotPolicyView:
    policy = cloud.load(SnapshotPolicy, policy_id)
    return SnapshotPolicyView(
        snapshot_policy_id=policy.id,
        volume_id=policy.volume_id,
        interval_type=policy.interval_type.value,
        schedule=policy.schedule,
        timezone=policy.timezone,
        max_snaps=policy.max_snaps,
        active=policy.active,
        version=policy.version,
    )


# -- the scheduled runs ----------------------------------------------------------------------
@dataclass(frozen=True)
class RecurringPlan:
    """What a scheduled run does: submit `submission` to the queue of `queue_vm_id` (the
    volume's VM while attached) or of the volume itself; or skip, saying why."""

    submission: VmJobSubmission | None
    queue_vm_id: UUID | None = None
    skipped: str | None = None


def plan_recurring_snapshot(cloud: Cloud, policy_id: UUID, scheduled_at: datetime) -> RecurringPlan:
    policy = cloud.find(SnapshotPolicy, policy_id)
    if policy is None or not policy.active:
        return RecurringPlan(None, skipped=f"snapshot policy {policy_id} has been deleted")
    volume = cloud.find(Volume, policy.volume_id)
    if volume is None or volume.state in DELETED_VOLUME_STATES:
        return RecurringPlan(None, skipped=f"volume {policy.volume_id} has been deleted")
    if volume.state is VolumeState.ALLOCATED:
        return RecurringPlan(
            None, skipped=f"volume {volume.name} has no disk yet (it is made when first attached)"
        )
    job_id = recurring_job_id(policy_id, scheduled_at)
    name = recurring_snapshot_name(volume.name, policy.interval_type, scheduled_at)
    summary = f"Snapshot volume {volume.name} ({policy.interval_type.value.lower()} policy)"
    request = SnapshotVolumeRequest(
        job_id=job_id,
        volume_id=volume.id,
        account_id=policy.account_id,
        summary=summary,
        snapshot_id=snapshot_id_for(job_id),
        name=name,
        policy_id=policy_id,
    )
    details = [
        f"**Volume:** {volume.name} (`{volume.id}`)",
        f"**Snapshot:** {name} (`{request.snapshot_id}`)",
        f"**Policy:** {policy.interval_type.value} `{policy.schedule}` {policy.timezone}, "
        f"keeps {policy.max_snaps} (`{policy_id}`)",
        f"**Scheduled at:** {scheduled_at.isoformat()}",
    ]
    submission = VmJobSubmission(
        job_id=job_id,
        job_type=VolumeOperation.SNAPSHOT.job_type,
        account_id=policy.account_id,
        zone_id=policy.zone_id,
        summary=summary,
        details="\n".join(details),
        fingerprint=f"snapshot-policy/{policy_id}",
        volume=request,
    )
    return RecurringPlan(submission, queue_vm_id=volume.vm_id)
