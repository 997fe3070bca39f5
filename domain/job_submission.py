"""A job handed to its resource's queue, as the records see it: which resource it is about,
and how it is recorded before its turn comes (queued) or when its queue refuses it."""

from __future__ import annotations

from datetime import datetime

from domain import job_records
from domain.cloud import Cloud
from domain.deployment import virtual_machine_id_for
from domain.errors import ErrorCode
from domain.job import Job
from domain.job_records import JobTicket
from domain.job_requests import VOLUME_RESOURCE, VmJobSubmission

VM_RESOURCE = "VirtualMachine"


def ticket_of(submission: VmJobSubmission, submitted_at: datetime) -> JobTicket:
    if submission.volume is not None:
        resource_type, resource_id = VOLUME_RESOURCE, submission.volume.volume_id
    elif submission.operation is not None:
        resource_type, resource_id = VM_RESOURCE, submission.operation.vm_id
    else:
        resource_type, resource_id = VM_RESOURCE, virtual_machine_id_for(submission.job_id)
    return JobTicket(
        job_id=submission.job_id,
        job_type=submission.job_type,
        account_id=submission.account_id,
        resource_type=resource_type,
        resource_id=resource_id,
        zone_id=submission.zone_id,
        summary=submission.summary,
        submitted_at=submitted_at,
        fingerprint=submission.fingerprint,
        queue_id=submission.queue_id,
    )


def record_submitted(cloud: Cloud, submission: VmJobSubmission, submitted_at: datetime) -> Job:
    return job_records.record_submission(cloud, ticket_of(submission, submitted_at))


def record_refused(
    cloud: Cloud, submission: VmJobSubmission, submitted_at: datetime, reason: str
) -> None:
    """The queue refused the job (its resource is gone): it fails with 431 and the reason,
    having done nothing."""
    ticket = ticket_of(submission, submitted_at)
    cloud.decide(
        lambda d: job_records.end_unsuccessfully(
            d, ticket, int(ErrorCode.PARAM_ERROR), reason, cancelled=False
        )
    )
