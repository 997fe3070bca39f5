"""The job aggregate: what an operator reads to follow a cloud operation.

The job id is the Temporal workflow id; the job aggregate is the domain's record of it (who
asked, for what, which step it is in, how it ended with which CloudStack code), written by the
workflow's own activities so it is exactly as durable as the rest of the domain.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import IllegalStateTransition


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def cloudstack_jobstatus(self) -> int:
        """queryAsyncJobResult's jobstatus: 0 pending, 1 succeeded, 2 failed, 3 cancelled."""
        return CloudStackJobStatus[self.name].value if self.name in _FINAL else 0

    @property
    def is_final(self) -> bool:
        return self.name in _FINAL


class CloudStackJobStatus(IntEnum):
    IN_PROGRESS = 0
    SUCCEEDED = 1
    FAILED = 2
    CANCELLED = 3


_FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


class Job(CloudAggregate):
    #: For jobs recorded (and snapshotted) before submissions carried these.
    fingerprint: str = ""
    queue_id: str = ""
    started_at: datetime | None = None

    @event("Started")
    def __init__(
        self,
        job_type: str,
        account_id: UUID,
        resource_type: str,
        resource_id: UUID,
        zone_id: UUID | None,
        summary: str,
        submitted_at: datetime,
        queued: bool = False,
        fingerprint: str = "",
        queue_id: str = "",
    ) -> None:
        self.job_type = job_type
        self.account_id = account_id
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.zone_id = zone_id
        self.summary = summary
        self.submitted_at = submitted_at
        #: Recorded at submission (by the API, before any worker ran it), the job waits in its
        #: resource's queue; recorded by the job itself when its turn came, it runs.
        self.status = JobStatus.QUEUED if queued else JobStatus.RUNNING
        #: When its turn came (a job recorded by itself started when it was recorded).
        self.started_at: datetime | None = None if queued else submitted_at
        #: The request's fingerprint: the same Idempotency-Key for another request is refused.
        self.fingerprint = fingerprint
        #: The queue (workflow id) the job waits in, for a job recorded at submission.
        self.queue_id = queue_id
        self.step: str | None = None
        self.result: dict[str, Any] | None = None
        self.error_code: int | None = None
        self.error_text: str | None = None

    def enter_step(self, step: str, command_id: str) -> None:
        if self.has_applied(command_id) or self.status.is_final:
            return
        if self.status is JobStatus.QUEUED:
            # The first step of a job recorded at submission: it has left its queue.
            self._began(datetime.now(UTC))
        self._step_entered(step, command_id)

    @event("Began")
    def _began(self, started_at: datetime) -> None:
        self.status = JobStatus.RUNNING
        self.started_at = started_at

    @event("StepEntered")
    def _step_entered(self, step: str, command_id: str) -> None:
        self.step = step
        self._remember(command_id)

    @property
    def began_at(self) -> datetime:
        """When the job's turn came (for jobs recorded before this was, when it was recorded)."""
        return self.started_at or self.submitted_at

    def succeed(self, result: dict[str, Any], command_id: str) -> None:
        if self.has_applied(command_id):
            return
        self._check_open()
        self._succeeded(result, command_id)

    @event("Succeeded")
    def _succeeded(self, result: dict[str, Any], command_id: str) -> None:
        self.status = JobStatus.SUCCEEDED
        self.result = result
        self._remember(command_id)

    def fail(self, error_code: int, error_text: str, command_id: str) -> None:
        if self.has_applied(command_id):
            return
        self._check_open()
        self._failed(error_code, error_text, command_id)

    @event("Failed")
    def _failed(self, error_code: int, error_text: str, command_id: str) -> None:
        self.status = JobStatus.FAILED
        self.error_code = error_code
        self.error_text = error_text
        self._remember(command_id)

    def cancel(self, reason: str, command_id: str) -> None:
        if self.has_applied(command_id):
            return
        self._check_open()
        self._cancelled(reason, command_id)

    @event("Cancelled")
    def _cancelled(self, reason: str, command_id: str) -> None:
        self.status = JobStatus.CANCELLED
        self.error_text = reason
        self._remember(command_id)

    def _check_open(self) -> None:
        if self.status.is_final:
            raise IllegalStateTransition(f"job {self.id} already ended {self.status}")
