"""Recurring snapshot policies: the jobs that create, update and delete a policy, and the
workflow each of the policy's Temporal Schedule runs starts.

CreateSnapshotPolicy records the policy, then makes its schedule (`snapshot-policy/<id>`) follow
it; if the schedule cannot be made, the policy goes back to what it was. DeleteSnapshotPolicies
records the deletion first (runs from then on skip) and deletes the schedule. RecurringSnapshot
is not a job of its own: it reads its scheduled time, asks whether to snapshot, and hands a
CreateSnapshot job (id derived from the policy and the scheduled time, so a retried run never
takes a second snapshot) to the volume's queue; the job does the snapshot and the pruning.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from activities.snapshot_policies import SnapshotPolicyActivities
    from activities.snapshot_policy_models import (
        PolicyOutcome,
        PolicyStep,
        RecurringSnapshotInput,
        RecurringSnapshotRun,
        RunPlan,
        RunPlanRequest,
        RunSubmission,
        RunSubmitted,
        ScheduleSync,
        ScheduleSynced,
    )
    from domain.job_results import SnapshotPolicyJobResult, SnapshotPolicyView
    from domain.snapshot_policy_operations import (
        CREATE_POLICY_JOB,
        DELETE_POLICY_JOB,
        RECURRING_SNAPSHOT_WORKFLOW,
        SnapshotPolicyChange,
    )

from workflows.job import JobWorkflow
from workflows.retry_policies import CONTROL_RETRY
from workflows.saga import Saga

#: Temporal's own search attribute on a scheduled run: the time it was scheduled for.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
_TIMEOUT = timedelta(seconds=60)


class _PolicyJob(JobWorkflow[SnapshotPolicyJobResult]):
    """The shared shape of the two policy jobs: record, sync the schedule, finish."""

    async def _run(self, change: SnapshotPolicyChange) -> SnapshotPolicyJobResult:
        step = PolicyStep(change=change, submitted_at=workflow.info().start_time)
        return await self._execute(
            lambda saga: self._change(step, saga),
            record_failure=lambda code, text, cancelled: self._finish(step, None, (code, text)),
            waits_for_turn=False,
        )

    async def _change(self, step: PolicyStep, saga: Saga) -> SnapshotPolicyJobResult:
        change = step.change
        policy: SnapshotPolicyView = await self._control(
            SnapshotPolicyActivities.record,
            step,
            f"record the policy {'deleted' if change.delete else ''}".strip(),
        )
        if not change.delete:
            saga.add("policy", lambda: self._undo_change(step))
        synced = await self._sync(change)
        result = SnapshotPolicyJobResult(
            snapshot_policy_id=policy.snapshot_policy_id,
            volume_id=policy.volume_id,
            interval_type=policy.interval_type,
            schedule=synced.action,
            timezone=policy.timezone,
            max_snaps=policy.max_snaps,
            active=policy.active,
            version=policy.version,
            schedule_id=synced.schedule_id,
            next_run_times=[t.isoformat() for t in synced.next_run_times],
        )
        await self._finish(step, result, None)
        return result

    async def _sync(self, change: SnapshotPolicyChange) -> ScheduleSynced:
        synced: ScheduleSynced = await self._control(
            SnapshotPolicyActivities.sync_schedule,
            ScheduleSync(policy_id=change.policy_id, task_queue=workflow.info().task_queue),
            "make the Temporal Schedule follow the policy",
        )
        return synced

    async def _undo_change(self, step: PolicyStep) -> None:
        await self._control(
            SnapshotPolicyActivities.undo_record, step, "put the policy back as it was"
        )
        try:  # the schedule follows the policy as it is back to
            await self._sync(step.change)
        except Exception as error:
            workflow.logger.warning("could not sync the schedule after the undo: %s", error)

    async def _finish(
        self,
        step: PolicyStep,
        result: SnapshotPolicyJobResult | None,
        error: tuple[int, str] | None,
    ) -> None:
        await self._control(
            SnapshotPolicyActivities.finish,
            PolicyOutcome(
                change=step.change,
                submitted_at=step.submitted_at,
                result=result,
                error_code=error[0] if error else None,
                error_text=error[1] if error else None,
            ),
            "record the job failed" if error else "record the job succeeded",
        )


@workflow.defn(name=CREATE_POLICY_JOB)
class CreateSnapshotPolicy(_PolicyJob):
    @workflow.run
    async def run(self, change: SnapshotPolicyChange) -> SnapshotPolicyJobResult:
        return await self._run(change)


@workflow.defn(name=DELETE_POLICY_JOB)
class DeleteSnapshotPolicies(_PolicyJob):
    @workflow.run
    async def run(self, change: SnapshotPolicyChange) -> SnapshotPolicyJobResult:
        return await self._run(change)


@workflow.defn(name=RECURRING_SNAPSHOT_WORKFLOW)
class RecurringSnapshot:
    @workflow.run
    async def run(self, given: RecurringSnapshotInput) -> RecurringSnapshotRun:
        info = workflow.info()
        scheduled_at = info.typed_search_attributes.get(SCHEDULED_START_TIME) or info.start_time
        plan: RunPlan = await workflow.execute_activity_method(
            SnapshotPolicyActivities.plan_run,
            RunPlanRequest(policy_id=given.policy_id, scheduled_at=scheduled_at),
            start_to_close_timeout=_TIMEOUT,
            retry_policy=CONTROL_RETRY,
            summary=f"decide the snapshot scheduled at {scheduled_at.isoformat()}",
        )
        if plan.submission is None:
            workflow.logger.info("scheduled snapshot skipped: %s", plan.skipped)
            return RecurringSnapshotRun(scheduled_at=scheduled_at.isoformat(), skipped=plan.skipped)
        submitted: RunSubmitted = await workflow.execute_activity_method(
            SnapshotPolicyActivities.submit_run,
            RunSubmission(
                submission=plan.submission,
                queue_vm_id=plan.queue_vm_id,
                task_queue=info.task_queue,
            ),
            start_to_close_timeout=_TIMEOUT,
            retry_policy=CONTROL_RETRY,
            summary=f"submit {plan.submission.summary}",
        )
        return RecurringSnapshotRun(
            scheduled_at=scheduled_at.isoformat(),
            job_id=submitted.job_id,
            queue_id=submitted.queue_id,
        )


SNAPSHOT_POLICY_WORKFLOWS: tuple[type, ...] = (
    CreateSnapshotPolicy,
    DeleteSnapshotPolicies,
    RecurringSnapshot,
)
