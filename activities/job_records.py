"""Job-record activities: what a resource's queue records for the jobs it holds but does not
run itself (a job it refuses, jobs that joined another, a job withdrawn before it started)."""

from __future__ import annotations

from temporalio import activity

from activities.errors import reports_cloud_errors
from activities.job_record_models import JoinedJobs, RefusedJob, WithdrawnJob
from domain import job_records, job_submission
from domain.cloud import Cloud


class JobRecordActivities:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @activity.defn(name="jobs.refuse")
    @reports_cloud_errors
    def refuse(self, refused: RefusedJob) -> None:
        job_submission.record_refused(
            self.cloud, refused.submission, refused.submitted_at, refused.reason
        )

    @activity.defn(name="jobs.end_as_joined")
    @reports_cloud_errors
    def end_as_joined(self, joined: JoinedJobs) -> None:
        job_records.end_as_joined(self.cloud, joined.job_ids, joined.joined_job_id)

    @activity.defn(name="jobs.withdraw")
    @reports_cloud_errors
    def withdraw(self, withdrawn: WithdrawnJob) -> None:
        job_records.record_cancelled_while_queued(
            self.cloud,
            job_submission.ticket_of(withdrawn.submission, withdrawn.submitted_at),
            withdrawn.reason,
        )
