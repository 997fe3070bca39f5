"""Snapshot policy activities on the control plane: recording policies (decisions over the
event store), keeping each policy's Temporal Schedule in step with it, and, for each scheduled
run, deciding whether to snapshot and handing the CreateSnapshot job to the volume's queue.

The schedule and queue steps need the Temporal client: the composition root gives it to the
constructor (the worker's own client). Without one they use the client of the worker running
the activity, which is the same thing for a worker built from `workers.worker`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import reports_cloud_errors
from activities.job_queue import ActivitiesWithClient, enqueue
from activities.snapshot_policy_models import (
    PolicyOutcome,
    PolicyStep,
    RecurringSnapshotInput,
    RunPlan,
    RunPlanRequest,
    RunSubmission,
    RunSubmitted,
    ScheduleSync,
    ScheduleSynced,
)
from domain import snapshot_policy_operations as operations
from domain.cloud import Cloud
from domain.job_requests import JobAttribute, JobQueue
from domain.job_results import SnapshotPolicyView
from domain.snapshot_policy import SnapshotPolicy, SnapshotSchedule
from domain.snapshot_policy_operations import RECURRING_SNAPSHOT_WORKFLOW, schedule_id_for

#: A run that could not start within this long after its time (the server was down) is
#: dropped rather than started late; the next one comes on time.
CATCHUP_WINDOW = timedelta(hours=1)


def calendar_of(schedule: SnapshotSchedule, comment: str) -> ScheduleCalendarSpec:
    """The policy's schedule as a Temporal calendar (in the schedule's time zone)."""

    def exactly(value: int | None, every: ScheduleRange) -> list[ScheduleRange]:
        return [every] if value is None else [ScheduleRange(value)]

    return ScheduleCalendarSpec(
        second=[ScheduleRange(0)],
        minute=[ScheduleRange(schedule.minute)],
        hour=exactly(schedule.hour, ScheduleRange(0, 23)),
        day_of_month=exactly(schedule.day_of_month, ScheduleRange(1, 31)),
        day_of_week=exactly(schedule.day_of_week, ScheduleRange(0, 6)),
        comment=comment,
    )


def schedule_of(policy: SnapshotPolicy, task_queue: str) -> Schedule:
    interval = policy.interval_type.value
    described = f"{interval} {policy.schedule} {policy.timezone}"
    attributes = {
        JobAttribute.JOB_TYPE: RECURRING_SNAPSHOT_WORKFLOW,
        JobAttribute.ACCOUNT_ID: str(policy.account_id),
        JobAttribute.RESOURCE_TYPE: operations.POLICY_RESOURCE,
        JobAttribute.RESOURCE_ID: str(policy.id),
        JobAttribute.ZONE_ID: str(policy.zone_id),
    }
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RECURRING_SNAPSHOT_WORKFLOW,
            RecurringSnapshotInput(policy_id=policy.id),
            id=f"{schedule_id_for(policy.id)}/run",
            task_queue=task_queue,
            execution_timeout=timedelta(minutes=30),
            typed_search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SearchAttributeKey.for_keyword(a.value), v)
                    for a, v in attributes.items()
                ]
            ),
            static_summary=f"Scheduled snapshot of volume {policy.volume_id} ({described})",
        ),
        spec=ScheduleSpec(
            calendars=[calendar_of(policy.parsed_schedule, described)],
            time_zone_name=policy.timezone,
        ),
        # A run only submits a job (seconds): one late run is kept, never a pile of them.
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.BUFFER_ONE, catchup_window=CATCHUP_WINDOW
        ),
        state=ScheduleState(
            note=f"Snapshot policy {policy.id} of volume {policy.volume_id}: {described}, "
            f"keeps {policy.max_snaps} (policy version {policy.version})"
        ),
    )


class SnapshotPolicyActivities(ActivitiesWithClient):
    # -- the policy jobs -------------------------------------------------------------------
    @activity.defn(name="snapshot_policy.record")
    @reports_cloud_errors
    def record(self, step: PolicyStep) -> SnapshotPolicyView:
        operations.record_change(self.cloud, step.change, step.submitted_at)
        return operations.policy_view(self.cloud, step.change.policy_id)

    @activity.defn(name="snapshot_policy.undo_record")
    @reports_cloud_errors
    def undo_record(self, step: PolicyStep) -> None:
        operations.undo_change(self.cloud, step.change)

    @activity.defn(name="snapshot_policy.finish")
    @reports_cloud_errors
    def finish(self, outcome: PolicyOutcome) -> None:
        error = None
        if outcome.error_code is not None:
            error = (outcome.error_code, outcome.error_text or "failed")
        operations.finish_job(
            self.cloud, outcome.change, outcome.submitted_at, outcome.result, error
        )

    @activity.defn(name="snapshot_policy.sync_schedule")
    async def sync_schedule(self, sync: ScheduleSync) -> ScheduleSynced:
        """Idempotent: creates the schedule, or updates the one that exists, from the policy
        as it is now, so concurrent changes of one policy end with the schedule of the last."""
        policy = await asyncio.to_thread(self.cloud.find, SnapshotPolicy, sync.policy_id)
        schedule_id = schedule_id_for(sync.policy_id)
        handle = self.client.get_schedule_handle(schedule_id)
        if policy is None or not policy.active:
            try:
                await handle.delete()
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
            return ScheduleSynced(schedule_id=schedule_id, action="deleted")
        wanted = schedule_of(policy, sync.task_queue)

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=wanted)

        try:
            await self.client.create_schedule(schedule_id, wanted)
            action = "created"
        except ScheduleAlreadyRunningError:
            await handle.update(replace)
            action = "updated"
        description = await handle.describe()
        return ScheduleSynced(
            schedule_id=schedule_id,
            action=action,
            next_run_times=list(description.info.next_action_times[:3]),
        )

    # -- the scheduled runs ----------------------------------------------------------------
    @activity.defn(name="snapshot_policy.plan_run")
    @reports_cloud_errors
    def plan_run(self, request: RunPlanRequest) -> RunPlan:
        plan = operations.plan_recurring_snapshot(
            self.cloud, request.policy_id, request.scheduled_at
        )
        return RunPlan(
            submission=plan.submission, queue_vm_id=plan.queue_vm_id, skipped=plan.skipped
        )

    @activity.defn(name="snapshot_policy.submit_run")
    async def submit_run(self, run: RunSubmission) -> RunSubmitted:
        """Hand the job to the queue of the volume's VM (attached) or of the volume, as the API
        does: signal-with-start (starting the queue if none runs), then the job recorded
        queued. The job id is the run's own, so a retried run submits the same job again,
        which its queue recognises."""
        submission = run.submission
        assert submission.volume is not None
        queue = (
            JobQueue.of_vm(run.queue_vm_id, submission.account_id, submission.zone_id)
            if run.queue_vm_id is not None
            else JobQueue.of_volume(
                submission.volume.volume_id, submission.account_id, submission.zone_id
            )
        )
        await enqueue(self.client, self.cloud, queue, submission, run.task_queue)
        return RunSubmitted(job_id=submission.job_id, queue_id=queue.workflow_id)


def snapshot_policy_activities(cloud: Cloud, client: Client | None = None) -> list[Any]:
    policies = SnapshotPolicyActivities(cloud, client)
    return [
        policies.record,
        policies.undo_record,
        policies.finish,
        policies.sync_schedule,
        policies.plan_run,
        policies.submit_run,
    ]
