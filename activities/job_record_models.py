"""Inputs of the job-record activities a resource's queue runs for the jobs it holds."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel

from domain.job_requests import VmJobSubmission


class RefusedJob(BaseModel):
    """A job its queue could not take: its resource is gone."""

    submission: VmJobSubmission
    submitted_at: datetime
    reason: str


class JoinedJobs(BaseModel):
    """Jobs that asked exactly what `joined_job_id` asked while it waited: they end as it did."""

    job_ids: list[UUID]
    joined_job_id: UUID


class WithdrawnJob(BaseModel):
    """A job cancelled before its queue started it (it joined another, or was never run)."""

    submission: VmJobSubmission
    submitted_at: datetime
    reason: str
