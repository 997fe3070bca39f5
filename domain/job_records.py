"""A job's record, written the same way by every kind of job: submitted, its steps, its end.

The job aggregate (domain/job.py) is what an operator and a client read to follow a cloud
operation. Every decision that moves a job goes through these functions, so a deploy, a VM
operation, a volume or snapshot job, a policy change and an inventory job all record their
submission, steps and ends with the same command ids (`{job_id}/succeeded`, `/failed`,
`/cancelled`, `/completed-step`): a step that runs twice records nothing twice.

A job is recorded twice over, harmlessly: by the API when it is submitted (queued, so a client
polling right after its 202 sees it), and by the job's own first step (which finds that record,
or makes it when the submission's record was lost). Whichever comes first makes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.cloud import Cloud, Decision
from domain.job import Job, JobStatus


@dataclass(frozen=True)
class JobTicket:
    """What is known of a job before it runs: enough to record it."""

    job_id: UUID
    job_type: str
    account_id: UUID
    resource_type: str
    resource_id: UUID
    zone_id: UUID | None
    summary: str
    submitted_at: datetime
    fingerprint: str = ""
    queue_id: str = ""


def _create(ticket: JobTicket, *, queued: bool) -> Job:
    return Job.create_with_id(
        ticket.job_id,
        job_type=ticket.job_type,
        account_id=ticket.account_id,
        resource_type=ticket.resource_type,
        resource_id=ticket.resource_id,
        zone_id=ticket.zone_id,
        summary=ticket.summary,
        submitted_at=ticket.submitted_at,
        queued=queued,
        fingerprint=ticket.fingerprint,
        queue_id=ticket.queue_id,
    )


def record_submission(cloud: Cloud, ticket: JobTicket) -> Job:
    """The job as the API accepted it: queued. A job already recorded (a repeated submission,
    or a job that ran before this record was written) is returned as it is."""

    def decide(d: Decision) -> Job:
        return d.find(Job, ticket.job_id) or d.add(_create(ticket, queued=True))

    return cloud.decide(decide)


def open_job(d: Decision, ticket: JobTicket) -> Job:
    """The job's record when its turn comes: the submission's, or a new one (running)."""
    return d.find(Job, ticket.job_id) or d.add(_create(ticket, queued=False))


def enter_step(d: Decision, job_id: UUID, step: str, name: str) -> None:
    """Move the job's current step; `name` makes the command id (`{job_id}/{name}`)."""
    d.get(Job, job_id).enter_step(step, f"{job_id}/{name}")


def succeed(d: Decision, job_id: UUID, result: dict[str, Any]) -> dict[str, Any]:
    job = d.get(Job, job_id)
    job.enter_step("completed", f"{job_id}/completed-step")
    job.succeed(result, f"{job_id}/succeeded")
    return result


def end_unsuccessfully(
    d: Decision, ticket: JobTicket, error_code: int, error_text: str, *, cancelled: bool
) -> Job:
    """Failed with its CloudStack code, or cancelled; nothing changes once the job ended."""
    job = open_job(d, ticket)
    if not job.status.is_final:
        if cancelled:
            job.cancel(error_text, f"{ticket.job_id}/cancelled")
        else:
            job.fail(error_code, error_text, f"{ticket.job_id}/failed")
    return job


def record_cancelled_while_queued(cloud: Cloud, ticket: JobTicket, reason: str) -> None:
    """A job cancelled before its turn came: nothing was done, only the record ends."""
    cloud.decide(lambda d: end_unsuccessfully(d, ticket, 0, reason, cancelled=True))


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended, to be copied onto the jobs that joined it."""

    status: JobStatus
    result: dict[str, Any] | None = None
    error_code: int | None = None
    error_text: str | None = None


def outcome_of(cloud: Cloud, job_id: UUID) -> JobOutcome | None:
    job = cloud.find(Job, job_id)
    if job is None or not job.status.is_final:
        return None
    return JobOutcome(job.status, job.result, job.error_code, job.error_text)


def end_as_joined(cloud: Cloud, job_ids: Iterable[UUID], joined: UUID) -> None:
    """Jobs that asked for exactly what the queued job `joined` asked for end as it ended: a
    repeated click is answered by the one job that did the work, never run twice."""
    outcome = outcome_of(cloud, joined)
    if outcome is None:
        raise ValueError(f"job {joined} has not ended: nothing to copy yet")

    def decide(d: Decision) -> None:
        for job_id in job_ids:
            job = d.find(Job, job_id)
            if job is None or job.status.is_final:
                continue
            command = f"{job_id}/joined/{joined}"
            if outcome.status is JobStatus.SUCCEEDED:
                job.enter_step(f"joined job {joined}", f"{job_id}/completed-step")
                job.succeed({**(outcome.result or {}), "joined_job_id": str(joined)}, command)
            elif outcome.status is JobStatus.CANCELLED:
                job.cancel(f"joined job {joined}, which was cancelled", command)
            else:
                text = f"joined job {joined}, which failed: {outcome.error_text}"
                job.fail(outcome.error_code or 530, text, command)

    cloud.decide(decide)
