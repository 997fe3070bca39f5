"""What the records say of a job its queue holds but never runs itself: one that repeated the
queued job before it (it ends as that one ends), one its queue refused (its resource is gone),
one withdrawn before it started; and what a submission records (queued, with its queue and the
request's fingerprint)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from domain import job_records, job_submission
from domain.cloud import Cloud, Decision
from domain.job import Job, JobStatus
from domain.job_records import JobTicket
from domain.job_requests import (
    VmJobSubmission,
    VmOperation,
    VolumeOperation,
)
from domain.vm_requests import StopVmRequest
from domain.volume_requests import ResizeVolumeRequest

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def stop_submission(vm_id: uuid.UUID | None = None, **fields: object) -> VmJobSubmission:
    job_id = uuid.uuid4()
    account = uuid.uuid4()
    vm_id = vm_id or uuid.uuid4()
    return VmJobSubmission(
        job_id=job_id,
        job_type=VmOperation.STOP.job_type,
        account_id=account,
        zone_id=uuid.uuid4(),
        summary="Stop VM web-1",
        fingerprint="stop-fingerprint",
        queue_id=f"vm/{vm_id}",
        operation=StopVmRequest(
            job_id=job_id,
            vm_id=vm_id,
            account_id=account,
            summary="Stop VM web-1",
        ),
        **fields,  # type: ignore[arg-type]
    )


def submitted(cloud: Cloud, submission: VmJobSubmission) -> Job:
    return job_submission.record_submitted(cloud, submission, NOW)


def test_a_submission_is_recorded_queued_with_its_queue_resource_and_fingerprint(
    memory_cloud: Cloud,
) -> None:
    submission = stop_submission()
    job = submitted(memory_cloud, submission)
    assert submission.operation is not None
    assert (job.status, job.queue_id, job.fingerprint) == (
        JobStatus.QUEUED,
        submission.queue_id,
        "stop-fingerprint",
    )
    assert (job.resource_type, job.resource_id) == ("VirtualMachine", submission.operation.vm_id)
    assert job.started_at is None and job.began_at == NOW


def test_a_volume_jobs_resource_is_its_volume_even_in_its_vms_queue(memory_cloud: Cloud) -> None:
    volume_id, vm_id, job_id, account = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    submission = VmJobSubmission(
        job_id=job_id,
        job_type=VolumeOperation.RESIZE.job_type,
        account_id=account,
        summary="Resize volume data",
        queue_id=f"vm/{vm_id}",
        volume=ResizeVolumeRequest(
            job_id=job_id,
            volume_id=volume_id,
            account_id=account,
            summary="Resize volume data",
            size_bytes=10 * 1024**3,
        ),
    )
    job = submitted(memory_cloud, submission)
    assert (job.resource_type, job.resource_id, job.queue_id) == (
        "Volume",
        volume_id,
        f"vm/{vm_id}",
    )


def test_submitting_again_returns_the_first_record_unchanged(memory_cloud: Cloud) -> None:
    submission = stop_submission()
    first = submitted(memory_cloud, submission)
    again = submitted(memory_cloud, submission.model_copy(update={"fingerprint": "other"}))
    assert (again.id, again.version, again.fingerprint) == (
        first.id,
        first.version,
        "stop-fingerprint",
    )


def test_a_submission_record_after_the_job_ran_changes_nothing(memory_cloud: Cloud) -> None:
    """The job can run (and end) before the API writes its submission record."""
    submission = stop_submission()
    ticket = job_submission.ticket_of(submission, NOW)
    memory_cloud.decide(lambda d: job_records.open_job(d, ticket))
    memory_cloud.decide(lambda d: job_records.succeed(d, submission.job_id, {"state": "Stopped"}))
    job = submitted(memory_cloud, submission)
    assert job.status is JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ("succeed", JobStatus.SUCCEEDED),
        ("fail", JobStatus.FAILED),
        ("cancel", JobStatus.CANCELLED),
    ],
)
def test_jobs_that_joined_another_end_as_it_ended(
    memory_cloud: Cloud, end: str, expected: JobStatus
) -> None:
    vm_id = uuid.uuid4()
    first, *joined = (stop_submission(vm_id) for _ in range(3))
    for submission in (first, *joined):
        submitted(memory_cloud, submission)
    ticket = job_submission.ticket_of(first, NOW)

    def finish(d: Decision) -> None:
        if end == "succeed":
            job_records.succeed(d, first.job_id, {"state": "Stopped"})
        else:
            job_records.end_unsuccessfully(
                d, ticket, 533, "no host fits", cancelled=end == "cancel"
            )

    memory_cloud.decide(finish)
    job_records.end_as_joined(memory_cloud, [j.job_id for j in joined], first.job_id)
    for submission in joined:
        job = memory_cloud.load(Job, submission.job_id)
        assert job.status is expected
        if expected is JobStatus.SUCCEEDED:
            assert job.result == {"state": "Stopped", "joined_job_id": str(first.job_id)}
        elif expected is JobStatus.FAILED:
            assert (job.error_code, str(first.job_id) in (job.error_text or "")) == (533, True)
    # Recording the joined ends again (a retried activity) changes nothing.
    versions = [memory_cloud.load(Job, j.job_id).version for j in joined]
    job_records.end_as_joined(memory_cloud, [j.job_id for j in joined], first.job_id)
    assert [memory_cloud.load(Job, j.job_id).version for j in joined] == versions


def test_joined_jobs_are_not_ended_before_the_job_they_joined(memory_cloud: Cloud) -> None:
    first, joined = stop_submission(), stop_submission()
    submitted(memory_cloud, first)
    submitted(memory_cloud, joined)
    with pytest.raises(ValueError, match="has not ended"):
        job_records.end_as_joined(memory_cloud, [joined.job_id], first.job_id)
    assert memory_cloud.load(Job, joined.job_id).status is JobStatus.QUEUED


def test_a_refused_job_fails_with_431_and_the_reason_having_done_nothing(
    memory_cloud: Cloud,
) -> None:
    submission = stop_submission()
    job_submission.record_refused(memory_cloud, submission, NOW, "virtual machine x was expunged")
    job = memory_cloud.load(Job, submission.job_id)
    assert (job.status, job.error_code, job.error_text, job.step) == (
        JobStatus.FAILED,
        431,
        "virtual machine x was expunged",
        None,
    )


def test_a_job_withdrawn_while_queued_is_cancelled_and_keeps_its_submission(
    memory_cloud: Cloud,
) -> None:
    submission = stop_submission()
    submitted(memory_cloud, submission)
    ticket: JobTicket = job_submission.ticket_of(submission, NOW)
    job_records.record_cancelled_while_queued(memory_cloud, ticket, "cancelled while queued")
    job = memory_cloud.load(Job, submission.job_id)
    assert (job.status, job.error_text, job.queue_id) == (
        JobStatus.CANCELLED,
        "cancelled while queued",
        submission.queue_id,
    )
