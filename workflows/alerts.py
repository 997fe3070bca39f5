"""ArchiveAlert: an operator marks an alert dealt with (a short admin job on the job base)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.alerts import AlertActivities
    from domain.alert import ARCHIVE_ALERT_JOB, ArchiveAlertRequest

from workflows.job import JobWorkflow, no_failure_record


@workflow.defn(name=ARCHIVE_ALERT_JOB)
class ArchiveAlert(JobWorkflow[dict[str, Any]]):
    @workflow.run
    async def run(self, request: ArchiveAlertRequest) -> dict[str, Any]:
        return await self._execute(
            lambda saga: self._control(
                AlertActivities.archive, request, f"archive alert {request.alert_id}"
            ),
            record_failure=no_failure_record,
            waits_for_turn=False,
        )


ALERT_WORKFLOWS: tuple[type, ...] = (ArchiveAlert,)
