"""Recurring snapshot policies run as Temporal Schedules, proved with time skipping: the dev
server (`frontend.WorkflowTimeSkippingEnabled=true`) lets `env.fast_forward` jump a schedule's
own workflow (`temporal-sys-scheduler:<schedule id>`) over days, so its runs happen in about a
second each instead of at 02:30 Berlin time. The runs and the jobs they submit run on the real
clock with the real worker, queues and event store.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from temporalio import activity
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleHandle,
    WorkflowFailureError,
)
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import TimeSkippingConfig, WorkflowEnvironment

from activities.snapshot_policies import SnapshotPolicyActivities
from activities.snapshot_policy_models import (
    RunPlanRequest,
    RunSubmission,
    ScheduleSync,
    ScheduleSynced,
)
from domain.cloud import Cloud
from domain.job import JobStatus
from domain.job_requests import (
    JobAttribute,
    VmOperation,
    VolumeOperation,
    vm_queue_id,
    volume_queue_id,
)
from domain.snapshot import Snapshot, SnapshotIntervalType, SnapshotState, snapshot_id_for
from domain.snapshot_policy import SnapshotPolicy, policy_id_for, recurring_job_id
from domain.snapshot_policy_operations import (
    RECURRING_SNAPSHOT_WORKFLOW,
    SnapshotPolicyChange,
    schedule_id_for,
)
from domain.virtual_machine import VirtualMachine
from domain.volume import Volume, VolumeState
from domain.volume_requests import SnapshotVolumeRequest
from tests.conftest import temporal_binary
from tests.integration.vm_jobs import deploy, job_of, submit
from tests.integration.volume_jobs import create_volume, run_volume_job
from tests.support import (
    Harness,
    activity_name,
    outcome,
    running_worker,
    seed_zone,
    wait_until,
)
from workers.demo_cloud import DemoCloud
from workers.worker import build_worker, control_plane_activities

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping_v2(
        ts_config=TimeSkippingConfig(enabled=False),
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
        search_attributes=[SearchAttributeKey.for_keyword(a.value) for a in JobAttribute],
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_log_level="error",
    )
    assert env.supports_time_skipping_v2
    yield env
    await env.shutdown()


@pytest.fixture
async def harness(
    skipping_env: WorkflowEnvironment, cloud: Cloud
) -> AsyncIterator[tuple[Harness, DemoCloud]]:
    """A worker and a zone of the test's own; the test's schedules are deleted afterwards (a
    schedule left behind would start runs on a queue no worker polls)."""
    zone = seed_zone(cloud)
    async with running_worker(skipping_env.client, cloud) as running:
        yield running, zone
    async for listed in await skipping_env.client.list_schedules():
        with contextlib.suppress(RPCError):
            await skipping_env.client.get_schedule_handle(listed.id).delete()


# -- helpers ---------------------------------------------------------------------------------
async def change_policy(
    harness: Harness,
    zone: DemoCloud,
    volume_id: UUID,
    interval: SnapshotIntervalType,
    schedule: str,
    timezone: str = "UTC",
    max_snaps: int = 3,
    *,
    delete: bool = False,
    job_id: UUID | None = None,
) -> dict[str, Any]:
    """Run a CreateSnapshotPolicy (or DeleteSnapshotPolicies) job as the API starts it."""
    change = SnapshotPolicyChange(
        job_id=job_id or uuid.uuid4(),
        policy_id=policy_id_for(volume_id, interval),
        volume_id=volume_id,
        account_id=zone.admin_account_id,
        summary=f"{'delete ' if delete else ''}{interval.value} policy of {volume_id}",
        delete=delete,
        interval_type=interval.value,
        schedule=schedule,
        timezone=timezone,
        max_snaps=max_snaps,
    )
    result: dict[str, Any] = await harness.client.execute_workflow(
        change.job_type,
        change,
        id=str(change.job_id),
        task_queue=harness.task_queue,
        execution_timeout=timedelta(seconds=90),
    )
    assert job_of(harness.cloud, change.job_id).status is JobStatus.SUCCEEDED
    return result


async def deployed_root_volume(harness: Harness, zone: DemoCloud, name: str) -> tuple[UUID, UUID]:
    """(vm id, root volume id) of a Running VM: a Ready volume attached to it."""
    job_id, vm_id = await deploy(harness, zone, name)
    status, value = await outcome(harness.client, job_id)
    assert status == "succeeded", value
    vm = harness.cloud.load(VirtualMachine, vm_id)
    assert vm.root_volume_id is not None
    return vm_id, vm.root_volume_id


def schedule_of(
    harness: Harness, volume_id: UUID, interval: SnapshotIntervalType
) -> ScheduleHandle:
    return harness.client.get_schedule_handle(schedule_id_for(policy_id_for(volume_id, interval)))


async def run_days(
    env: WorkflowEnvironment, schedule: ScheduleHandle, days: int, *, expected_runs: int
) -> list[datetime]:
    """Fast-forward the schedule's clock; the scheduled times of its runs, once all ran."""
    scheduler = env.client.get_workflow_handle(f"temporal-sys-scheduler:{schedule.id}")
    assert await env.fast_forward(scheduler, timedelta(days=days))

    async def recent_actions() -> list[ScheduleActionResult]:
        return list((await schedule.describe()).info.recent_actions)

    actions = await wait_until(
        recent_actions,
        lambda actions: len(actions) >= expected_runs,
        timeout=10,
        what=f"{expected_runs} runs of {schedule.id}",
    )
    assert len(actions) == expected_runs, actions
    for action in actions:
        started = action.action
        assert isinstance(started, ScheduleActionExecutionStartWorkflow)  # the schedule's only kind
        assert started.workflow_id.startswith(f"{schedule.id}/run-")
        await env.client.get_workflow_handle(started.workflow_id).result()
    return [action.scheduled_at for action in actions]


async def run_result(client: Client, schedule: ScheduleHandle, index: int) -> dict[str, Any]:
    started = (await schedule.describe()).info.recent_actions[index].action
    assert isinstance(started, ScheduleActionExecutionStartWorkflow)  # the schedule's only kind
    result: dict[str, Any] = await client.get_workflow_handle(started.workflow_id).result()
    return result


async def schedule_exists(schedule: ScheduleHandle) -> bool:
    try:
        await schedule.describe()
    except RPCError as error:
        assert error.status == RPCStatusCode.NOT_FOUND
        return False
    return True


def local(times: Sequence[datetime], zone: ZoneInfo) -> list[tuple[int, int, int]]:
    """(weekday Monday=0, hour, minute) of each time in `zone`."""
    return [(t.astimezone(zone).weekday(), t.astimezone(zone).hour, t.minute) for t in times]


# -- the schedule follows the policy ---------------------------------------------------------
async def test_a_daily_policy_at_0230_berlin_is_scheduled_at_0230_berlin_time_0130z_in_winter(
    harness: tuple[Harness, DemoCloud],
) -> None:
    running, zone = harness
    _, volume_id = await deployed_root_volume(running, zone, "daily")
    result = await change_policy(
        running, zone, volume_id, SnapshotIntervalType.DAILY, "30:02", "Europe/Berlin"
    )
    assert result["schedule"] == "created"

    description = await schedule_of(running, volume_id, SnapshotIntervalType.DAILY).describe()
    assert description.schedule.spec.time_zone_name == "Europe/Berlin"
    next_runs = description.info.next_action_times
    assert len(next_runs) >= 3
    for at in next_runs:
        assert (at.astimezone(BERLIN).hour, at.minute, at.second) == (2, 30, 0)
        if BERLIN.utcoffset(at.replace(tzinfo=None)) == timedelta(hours=1):  # winter time
            assert (at.astimezone(UTC).hour, at.minute) == (1, 30)
    assert [d.days for d in (b - a for a, b in itertools.pairwise(next_runs))] == [1] * (
        len(next_runs) - 1
    )


async def test_runs_across_a_daylight_saving_change_stay_at_the_same_local_time(
    skipping_env: WorkflowEnvironment, harness: tuple[Harness, DemoCloud]
) -> None:
    """Seven months of a monthly 03:30 Berlin policy always cross a DST change: the runs stay
    at 03:30 local time, so their UTC hour moves with the offset. (A volume with no disk yet,
    so the runs only decide to skip: months pass in seconds.)"""
    running, zone = harness
    volume_id = await create_volume(running, zone, "dst")
    await change_policy(
        running, zone, volume_id, SnapshotIntervalType.MONTHLY, "30:03:28", "Europe/Berlin"
    )
    schedule = schedule_of(running, volume_id, SnapshotIntervalType.MONTHLY)
    scheduler = skipping_env.client.get_workflow_handle(f"temporal-sys-scheduler:{schedule.id}")
    now = await skipping_env.get_current_time(scheduler)
    wanted = [
        at
        for months in range(9)
        if now
        < (
            at := datetime(
                now.year + (now.month - 1 + months) // 12,
                (now.month - 1 + months) % 12 + 1,
                28,
                3,
                30,
                tzinfo=BERLIN,
            )
        )
        <= now + timedelta(days=220)
    ]

    scheduled = await run_days(skipping_env, schedule, 220, expected_runs=len(wanted))

    assert scheduled == [at.astimezone(UTC) for at in wanted]
    assert {at.astimezone(UTC).hour for at in scheduled} == {1, 2}  # CEST and CET
    for index in range(len(scheduled)):
        result = await run_result(running.client, schedule, index)
        assert "no disk yet" in result["skipped"]


async def test_hourly_weekly_and_monthly_schedules_become_calendars_in_their_time_zone(
    harness: tuple[Harness, DemoCloud],
) -> None:
    running, zone = harness
    _, volume_id = await deployed_root_volume(running, zone, "calendars")
    await change_policy(running, zone, volume_id, SnapshotIntervalType.HOURLY, "15")
    await change_policy(
        running, zone, volume_id, SnapshotIntervalType.WEEKLY, "00:03:2", "Europe/Berlin"
    )
    await change_policy(
        running, zone, volume_id, SnapshotIntervalType.MONTHLY, "45:23:28", "America/New_York"
    )

    hourly = await schedule_of(running, volume_id, SnapshotIntervalType.HOURLY).describe()
    times = hourly.info.next_action_times
    assert all(t.minute == 15 and t.second == 0 for t in times)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(times))

    weekly = await schedule_of(running, volume_id, SnapshotIntervalType.WEEKLY).describe()
    # "00:03:2": Monday (CloudStack counts Sunday as 1) at 03:00 Berlin time.
    assert set(local(weekly.info.next_action_times, BERLIN)) == {(0, 3, 0)}

    monthly = await schedule_of(running, volume_id, SnapshotIntervalType.MONTHLY).describe()
    new_york = ZoneInfo("America/New_York")
    for at in monthly.info.next_action_times:
        in_ny = at.astimezone(new_york)
        assert (in_ny.day, in_ny.hour, in_ny.minute) == (28, 23, 45)
    # Three policies of one volume, one per interval, each its own schedule.
    assert (
        len({hourly.schedule.spec.calendars[0].comment, weekly.schedule.spec.calendars[0].comment})
        == 2
    )


async def test_creating_a_policy_again_updates_it_and_its_schedule(
    harness: tuple[Harness, DemoCloud],
) -> None:
    running, zone = harness
    _, volume_id = await deployed_root_volume(running, zone, "update")
    first = await change_policy(
        running, zone, volume_id, SnapshotIntervalType.DAILY, "30:02", "Europe/Berlin", 3
    )
    second = await change_policy(
        running, zone, volume_id, SnapshotIntervalType.DAILY, "05:00", "UTC", 5
    )

    assert first["snapshot_policy_id"] == second["snapshot_policy_id"]
    assert second["schedule"] == "updated"
    policy = running.cloud.load(
        SnapshotPolicy, policy_id_for(volume_id, SnapshotIntervalType.DAILY)
    )
    assert (policy.schedule, policy.timezone, policy.max_snaps) == ("05:00", "UTC", 5)
    description = await schedule_of(running, volume_id, SnapshotIntervalType.DAILY).describe()
    assert description.schedule.spec.time_zone_name == "UTC"
    assert {(t.hour, t.minute) for t in description.info.next_action_times} == {(0, 5)}
    assert "keeps 5" in (description.schedule.state.note or "")


# -- the runs --------------------------------------------------------------------------------
async def test_each_scheduled_run_submits_one_snapshot_job_with_a_deterministic_id_to_the_vms_queue(
    skipping_env: WorkflowEnvironment, harness: tuple[Harness, DemoCloud]
) -> None:
    running, zone = harness
    vm_id, volume_id = await deployed_root_volume(running, zone, "runs")
    await change_policy(
        running, zone, volume_id, SnapshotIntervalType.DAILY, "30:02", "Europe/Berlin", 8
    )
    policy_id = policy_id_for(volume_id, SnapshotIntervalType.DAILY)
    schedule = schedule_of(running, volume_id, SnapshotIntervalType.DAILY)

    scheduled = await run_days(skipping_env, schedule, 3, expected_runs=3)

    assert all(at.astimezone(BERLIN).hour == 2 and at.minute == 30 for at in scheduled)
    job_ids = [recurring_job_id(policy_id, at) for at in scheduled]
    assert len(set(job_ids)) == 3
    for index, (at, job_id) in enumerate(zip(scheduled, job_ids, strict=True)):
        result = await run_result(running.client, schedule, index)
        assert result["job_id"] == str(job_id)
        assert result["queue_id"] == vm_queue_id(vm_id)  # the root volume's VM's queue
        job = await running.client.get_workflow_handle(str(job_id)).describe()
        assert job.workflow_type == "CreateSnapshot"
        assert job.parent_id == vm_queue_id(vm_id)
        await outcome(running.client, job_id)
        snapshot = running.cloud.find(Snapshot, snapshot_id_for(job_id))
        assert snapshot is not None and snapshot.policy_id == policy_id
        volume_name = running.cloud.load(Volume, volume_id).name
        assert snapshot.name == f"{volume_name}_DAILY_{at.astimezone(UTC):%Y%m%d%H%M%S}"


async def test_a_retried_run_joins_its_job_instead_of_taking_a_second_snapshot(
    harness: tuple[Harness, DemoCloud],
) -> None:
    running, zone = harness
    volume_id = await ready_detached_volume(running, zone)
    await change_policy(running, zone, volume_id, SnapshotIntervalType.HOURLY, "00")
    policy_id = policy_id_for(volume_id, SnapshotIntervalType.HOURLY)
    activities = SnapshotPolicyActivities(running.cloud, running.client)
    at = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)

    first_plan = activities.plan_run(RunPlanRequest(policy_id=policy_id, scheduled_at=at))
    second_plan = activities.plan_run(RunPlanRequest(policy_id=policy_id, scheduled_at=at))
    assert first_plan.submission is not None and first_plan.submission == second_plan.submission
    assert isinstance(first_plan.submission.volume, SnapshotVolumeRequest)
    assert (first_plan.submission.volume.name or "").endswith("_HOURLY_20300101100000")
    assert first_plan.submission.volume.snapshot_id == snapshot_id_for(
        recurring_job_id(policy_id, at)
    )
    run = RunSubmission(submission=first_plan.submission, task_queue=running.task_queue)
    first = await activities.submit_run(run)
    again = await activities.submit_run(run)

    # The same run submitted twice is one job: its queue recognises the job id.
    assert first.job_id == again.job_id == recurring_job_id(policy_id, at)
    assert first.queue_id == volume_queue_id(volume_id)  # a detached volume: its own queue
    await outcome(running.client, first.job_id)


async def ready_detached_volume(harness: Harness, zone: DemoCloud) -> UUID:
    """A data volume with a disk, detached: attached once to a VM (which makes the disk) and
    detached again."""
    vm_id, _ = await deployed_root_volume(harness, zone, "holder")
    volume_id = await create_volume(harness, zone)
    for operation, options in (
        (VolumeOperation.ATTACH, {"vm_id": vm_id}),
        (VolumeOperation.DETACH, {}),
    ):
        _, status, value = await run_volume_job(harness, zone, volume_id, operation, **options)
        assert status == "succeeded", value
    assert harness.cloud.load(Volume, volume_id).state is VolumeState.READY
    return volume_id


async def test_runs_skip_a_deleted_policy_a_deleted_volume_and_a_volume_without_a_disk(
    harness: tuple[Harness, DemoCloud],
) -> None:
    running, zone = harness
    activities = SnapshotPolicyActivities(running.cloud, running.client)
    at = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)

    # A volume still Allocated (no disk until first attached) takes a policy; its runs skip.
    allocated = await create_volume(running, zone, "no-disk")
    await change_policy(running, zone, allocated, SnapshotIntervalType.DAILY, "00:01")
    plan = activities.plan_run(
        RunPlanRequest(
            policy_id=policy_id_for(allocated, SnapshotIntervalType.DAILY), scheduled_at=at
        )
    )
    assert plan.submission is None and "no disk yet" in (plan.skipped or "")

    # A deleted policy.
    vm_id, volume_id = await deployed_root_volume(running, zone, "skips")
    await change_policy(running, zone, volume_id, SnapshotIntervalType.DAILY, "00:01")
    await change_policy(running, zone, volume_id, SnapshotIntervalType.DAILY, "", delete=True)
    policy_id = policy_id_for(volume_id, SnapshotIntervalType.DAILY)
    plan = activities.plan_run(RunPlanRequest(policy_id=policy_id, scheduled_at=at))
    assert plan.submission is None and "deleted" in (plan.skipped or "")

    # A volume gone with its VM: the whole run, started as the schedule would, skips.
    await change_policy(running, zone, volume_id, SnapshotIntervalType.DAILY, "00:01")
    accepted = await submit(running, zone, vm_id, VmOperation.DESTROY, expunge=True)
    await outcome(running.client, accepted.job_id)
    assert running.cloud.load(Volume, volume_id).state is VolumeState.EXPUNGED
    result = await running.client.execute_workflow(
        RECURRING_SNAPSHOT_WORKFLOW,
        {"policy_id": str(policy_id)},
        id=f"{schedule_id_for(policy_id)}/run-manual",
        task_queue=running.task_queue,
        execution_timeout=timedelta(seconds=60),
    )
    assert "job_id" not in result
    assert result["skipped"] == f"volume {volume_id} has been deleted"


async def test_a_deleted_policys_schedule_is_gone_and_its_snapshots_stay(
    skipping_env: WorkflowEnvironment, harness: tuple[Harness, DemoCloud]
) -> None:
    running, zone = harness
    _, volume_id = await deployed_root_volume(running, zone, "deleted")
    await change_policy(
        running, zone, volume_id, SnapshotIntervalType.DAILY, "30:02", "Europe/Berlin"
    )
    schedule = schedule_of(running, volume_id, SnapshotIntervalType.DAILY)
    (at,) = await run_days(skipping_env, schedule, 1, expected_runs=1)
    policy_id = policy_id_for(volume_id, SnapshotIntervalType.DAILY)
    assert (await outcome(running.client, recurring_job_id(policy_id, at)))[0] == "succeeded"

    result = await change_policy(
        running, zone, volume_id, SnapshotIntervalType.DAILY, "", delete=True
    )

    assert result["schedule"] == "deleted" and result["active"] is False
    assert not await schedule_exists(schedule)  # no schedule: nothing can run any more
    policy = running.cloud.load(SnapshotPolicy, policy_id)
    assert not policy.active
    taken = snapshot_id_for(recurring_job_id(policy_id, at))
    # The snapshot the policy took is not deleted with it.
    assert running.cloud.load(Snapshot, taken).state is SnapshotState.BACKED_UP
    # Deleting the schedule again (a retried job) is fine.
    again = await change_policy(
        running, zone, volume_id, SnapshotIntervalType.DAILY, "", delete=True
    )
    assert again["schedule"] == "deleted"


# -- end to end with the CreateSnapshot job: keep the newest max_snaps ------------------------
async def test_five_daily_runs_of_a_policy_keeping_three_leave_the_newest_three_backed_up(
    skipping_env: WorkflowEnvironment, harness: tuple[Harness, DemoCloud]
) -> None:
    running, zone = harness
    _, volume_id = await deployed_root_volume(running, zone, "keep3")
    await change_policy(
        running, zone, volume_id, SnapshotIntervalType.DAILY, "30:02", "Europe/Berlin", 3
    )
    policy_id = policy_id_for(volume_id, SnapshotIntervalType.DAILY)
    schedule = schedule_of(running, volume_id, SnapshotIntervalType.DAILY)

    scheduled = await run_days(skipping_env, schedule, 5, expected_runs=5)
    job_ids = [recurring_job_id(policy_id, at) for at in scheduled]
    for job_id in job_ids:
        status, value = await outcome(running.client, job_id)
        assert status == "succeeded", value

    snapshots = [running.cloud.load(Snapshot, snapshot_id_for(j)) for j in job_ids]
    assert [s.policy_id for s in snapshots] == [policy_id] * 5
    assert [s.state for s in snapshots] == [SnapshotState.DESTROYED] * 2 + [
        SnapshotState.BACKED_UP
    ] * 3
    assert running.cloud.load(SnapshotPolicy, policy_id).snapshot_ids == [s.id for s in snapshots]


# -- a schedule that cannot be made -----------------------------------------------------------
async def test_an_update_whose_schedule_cannot_be_made_fails_and_puts_the_policy_back(
    harness: tuple[Harness, DemoCloud],
) -> None:
    running, zone = harness
    _, volume_id = await deployed_root_volume(running, zone, "undo")
    await change_policy(running, zone, volume_id, SnapshotIntervalType.DAILY, "30:02", "UTC", 3)

    @activity.defn(name="snapshot_policy.sync_schedule")
    async def refuse(sync: ScheduleSync) -> ScheduleSynced:
        raise ApplicationError("no schedules today", type="Refused", non_retryable=True)

    activities = [
        a
        for a in control_plane_activities(
            running.cloud, {running.driver.hypervisor: running.driver}
        )
        if activity_name(a) != "snapshot_policy.sync_schedule"
    ]
    queue = f"refusing-{uuid.uuid4().hex[:8]}"
    async with build_worker(running.client, queue, [*activities, refuse], threads=4):
        refusing = Harness(running.client, running.cloud, queue, running.driver)
        job_id = uuid.uuid4()
        with pytest.raises(WorkflowFailureError) as failed:
            await change_policy(
                refusing,
                zone,
                volume_id,
                SnapshotIntervalType.DAILY,
                "00:05",
                "UTC",
                5,
                job_id=job_id,
            )
    assert "no schedules today" in str(failed.value.cause)
    job = job_of(running.cloud, job_id)
    assert job.status is JobStatus.FAILED and "no schedules today" in (job.error_text or "")

    policy = running.cloud.load(
        SnapshotPolicy, policy_id_for(volume_id, SnapshotIntervalType.DAILY)
    )
    assert policy.active and policy.settings == ("30:02", "UTC", 3)
    description = await schedule_of(running, volume_id, SnapshotIntervalType.DAILY).describe()
    assert {(t.hour, t.minute) for t in description.info.next_action_times} == {(2, 30)}
