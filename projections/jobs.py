"""The job read model (queryAsyncJobResult / listAsyncJobs)."""

from __future__ import annotations

from typing import Any

from domain.job import Job
from projections.read_model import AggregateStateProjection, ReadModelView, Row, Table, event_topics

JOBS = Table(
    "jobs",
    {
        "id": "uuid PRIMARY KEY",
        "job_type": "text NOT NULL",
        "account_id": "uuid NOT NULL",
        "resource_type": "text NOT NULL",
        "resource_id": "uuid NOT NULL",
        "zone_id": "uuid",
        "summary": "text NOT NULL",
        "status": "text NOT NULL",
        "step": "text",
        "result": "jsonb",
        "error_code": "integer",
        "error_text": "text",
        "created": "timestamptz NOT NULL",
        "completed": "timestamptz",
        "updated": "timestamptz NOT NULL",
    },
    indexes=("account_id, created, id", "resource_id", "status", "created, id"),
)


class JobsView(ReadModelView):
    tables = (JOBS,)


class JobsProjection(AggregateStateProjection):
    name = "jobs_projection"
    table = JOBS.name
    topics = event_topics(Job)

    def row_of(self, job: Any) -> Row:
        return self.row_of_job(job)

    @staticmethod
    def row_of_job(job: Job) -> Row:
        """The row a job makes (also read straight from the event store before it is
        projected)."""
        return {
            "id": job.id,
            "job_type": job.job_type,
            "account_id": job.account_id,
            "resource_type": job.resource_type,
            "resource_id": job.resource_id,
            "zone_id": job.zone_id,
            "summary": job.summary,
            "status": job.status.value,
            "step": job.step,
            "result": job.result,
            "error_code": job.error_code,
            "error_text": job.error_text,
            "created": job.submitted_at,
            "completed": job.modified_on if job.status.is_final else None,
            "updated": job.modified_on,
        }
