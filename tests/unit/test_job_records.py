"""The job's record: queued or running when opened, its steps, one end (succeeded, failed with a
CloudStack code, or cancelled), every repeat of a command ignored and nothing after the end."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from domain.cloud import Cloud
from domain.errors import IllegalStateTransition
from domain.job import Job, JobStatus
from domain.job_records import (
    JobTicket,
    end_unsuccessfully,
    enter_step,
    open_job,
    record_submission,
    succeed,
)
from tests.unit.builders import new_job

#: Each way a job ends, applied with its own command id.
ENDS: dict[str, Callable[[Job, str], None]] = {
    "succeeded": lambda job, command: job.succeed({"vm_id": "x"}, command),
    "failed": lambda job, command: job.fail(533, "no host fits", command),
    "cancelled": lambda job, command: job.cancel("cancelled by admin", command),
}
FINAL = {
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}


def test_a_job_recorded_at_submission_waits_queued_until_its_first_step() -> None:
    job = new_job(queued=True)
    assert job.status is JobStatus.QUEUED and job.step is None
    job.enter_step("placing", "job/placing")
    assert (job.status, job.step) == (JobStatus.RUNNING, "placing")


def test_a_job_recorded_by_itself_runs_from_the_start() -> None:
    assert new_job().status is JobStatus.RUNNING


def test_a_repeated_step_is_recorded_once() -> None:
    job = new_job()
    job.enter_step("placing", "job/placing")
    job.enter_step("starting", "job/starting")
    version = job.version
    job.enter_step("placing", "job/placing")  # the activity ran again
    assert (job.step, job.version) == ("starting", version)


@pytest.mark.parametrize("end", ENDS)
def test_a_job_ends_once_and_a_repeat_of_its_end_is_ignored(end: str) -> None:
    job = new_job()
    ENDS[end](job, "job/end")
    version = job.version
    ENDS[end](job, "job/end")
    assert job.status is FINAL[end] and job.version == version


@pytest.mark.parametrize("first", ENDS)
@pytest.mark.parametrize("then", ENDS)
def test_an_ended_job_refuses_another_end(first: str, then: str) -> None:
    job = new_job()
    ENDS[first](job, "job/first")
    version = job.version
    with pytest.raises(IllegalStateTransition) as refused:
        ENDS[then](job, "job/then")
    assert refused.value.code == 431 and str(job.id) in refused.value.message
    assert job.status is FINAL[first] and job.version == version


@pytest.mark.parametrize("end", ENDS)
def test_a_step_after_the_end_is_ignored(end: str) -> None:
    job = new_job()
    ENDS[end](job, "job/end")
    version = job.version
    job.enter_step("late", "job/late")
    assert job.version == version and job.step is None


def test_each_end_records_what_a_client_reads() -> None:
    succeeded, failed, cancelled = new_job(), new_job(), new_job()
    ENDS["succeeded"](succeeded, "s")
    ENDS["failed"](failed, "f")
    ENDS["cancelled"](cancelled, "c")
    assert succeeded.result == {"vm_id": "x"} and succeeded.error_code is None
    assert (failed.error_code, failed.error_text) == (533, "no host fits")
    assert cancelled.error_text == "cancelled by admin"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (JobStatus.QUEUED, 0),
        (JobStatus.RUNNING, 0),
        (JobStatus.SUCCEEDED, 1),
        (JobStatus.FAILED, 2),
        (JobStatus.CANCELLED, 3),
    ],
)
def test_the_status_maps_to_cloudstacks_jobstatus(status: JobStatus, code: int) -> None:
    assert status.cloudstack_jobstatus == code
    assert status.is_final is (code != 0)


def ticket() -> JobTicket:
    return JobTicket(
        job_id=uuid.uuid4(),
        job_type="StartVirtualMachine",
        account_id=uuid.uuid4(),
        resource_type="VirtualMachine",
        resource_id=uuid.uuid4(),
        zone_id=None,
        summary="start vm",
        submitted_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def stored(cloud: Cloud, t: JobTicket) -> Counter[str]:
    """How many events of each kind the job's record holds."""
    return Counter(type(e).__name__ for e in cloud.events.get(t.job_id))


def test_a_submitted_job_is_opened_by_its_first_step_not_recorded_again(
    memory_cloud: Cloud,
) -> None:
    t = ticket()
    record_submission(memory_cloud, t)
    memory_cloud.decide(lambda d: open_job(d, t))
    memory_cloud.decide(lambda d: enter_step(d, t.job_id, "starting", "starting"))
    job = memory_cloud.load(Job, t.job_id)
    assert (job.status, job.step) == (JobStatus.RUNNING, "starting")
    assert stored(memory_cloud, t)["Started"] == 1


def test_a_job_whose_submission_record_was_lost_is_opened_running(memory_cloud: Cloud) -> None:
    t = ticket()
    memory_cloud.decide(lambda d: open_job(d, t))
    assert memory_cloud.load(Job, t.job_id).status is JobStatus.RUNNING


def test_a_success_recorded_twice_is_stored_once(memory_cloud: Cloud) -> None:
    t = ticket()
    memory_cloud.decide(lambda d: open_job(d, t))
    for _ in range(2):
        memory_cloud.decide(lambda d: succeed(d, t.job_id, {"vm_id": "x"}))
    job = memory_cloud.load(Job, t.job_id)
    assert (job.status, job.step, job.result) == (JobStatus.SUCCEEDED, "completed", {"vm_id": "x"})
    assert stored(memory_cloud, t)["Succeeded"] == 1


@pytest.mark.parametrize("cancelled", [False, True])
def test_an_unsuccessful_end_never_overwrites_an_earlier_end(
    memory_cloud: Cloud, cancelled: bool
) -> None:
    t = ticket()
    memory_cloud.decide(lambda d: open_job(d, t))
    memory_cloud.decide(lambda d: end_unsuccessfully(d, t, 534, "host down", cancelled=cancelled))
    memory_cloud.decide(lambda d: end_unsuccessfully(d, t, 530, "later", cancelled=not cancelled))
    job = memory_cloud.load(Job, t.job_id)
    assert job.status is (JobStatus.CANCELLED if cancelled else JobStatus.FAILED)
    assert job.error_text == "host down"
    assert stored(memory_cloud, t)["Failed"] + stored(memory_cloud, t)["Cancelled"] == 1
