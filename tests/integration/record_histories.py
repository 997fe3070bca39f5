"""Record workflow histories for the replay test (`test_workflow_replay.py`).

What is recorded: DeployVirtualMachine (success, retry on the next host, unwind); a VM's
VirtualMachineQueue that ran a deployment and every operation (its whole life, until expunged),
and one whose jobs were terminated from outside; each operation workflow once succeeding and
once failing and unwinding (migrate, the VM snapshot jobs, restore and the service offering
change, on VMs of their own); each data volume job (create, attach, resize, detach, migrate,
delete) and each volume snapshot job (take, make a volume and a template from, revert to,
delete) once failing and unwinding and once succeeding; the snapshot policy jobs (create,
delete) likewise, and one RecurringSnapshot run its schedule was triggered for; AddHost; one
run of PowerStateSync; host maintenance (failing and unwinding, succeeding), its cancel, an
allocation state change and a power action refused (no BMC); a PowerStateSync pass restarting a
crashed HA VM and its alert archived; and jobs submitted by the queue's
`enqueue` signal (a deployment waiting for its turn, a cancelled start closing as Canceled, the
queue with a joined and a withdrawn job).

Run when a workflow changes on purpose (behind `workflow.patched()`). A history whose file exists
is kept, so the old recordings go on proving that old runs still replay; delete a file to record
it again:
    .venv/bin/python -m tests.integration.record_histories [postgresql-url]
Without a URL it creates (and afterwards drops) a scratch database on the local PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from temporalio import activity
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.drivers.simulator import SimulatorDriver
from activities.refs import host_ref
from api.job_cancellation import cancel as cancel_job
from domain import host_ha_operations
from domain.cloud import Cloud, postgres_env
from domain.host import Host
from domain.host_ha import HaState
from domain.host_ha_operations import (
    CHECK_NOW_SIGNAL,
    CONFIGURE_HA_JOB,
    MONITOR_WORKFLOW,
    RESTART_JOB,
    HaConfiguration,
    HostHaMonitorInput,
    RestartVmsRequest,
    monitor_id,
)
from domain.host_maintenance import (
    AllocationStateRequest,
    CancelHostMaintenanceRequest,
    HostMaintenanceRequest,
)
from domain.ids import derived_id
from domain.infrastructure import AddHostRequest, PowerStateSyncInput, host_id_for
from domain.job_requests import (
    JobAttribute,
    VmOperation,
    VolumeCreation,
    VolumeOperation,
    vm_queue_id,
)
from domain.out_of_band import PowerActionRequest
from domain.snapshot import SnapshotIntervalType, snapshot_id_for
from domain.snapshot_policy import policy_id_for
from domain.snapshot_policy_operations import SnapshotPolicyChange, schedule_id_for
from domain.virtual_machine import VirtualMachine
from domain.vm_snapshot import vm_snapshot_id_for
from domain.volume import Volume
from domain.volume_operations import volume_id_for
from tests.integration.vm_jobs import deploy, submit
from tests.integration.volume_jobs import GIB, submit_volume_job
from tests.support import (
    Harness,
    fail_before,
    outcome,
    running_worker,
    seed_zone,
    started,
    step_reached,
    wait_until,
)
from workers.demo_cloud import DemoCloud

HISTORIES = Path(__file__).parent / "histories"
S = VmOperation
V = VolumeOperation
CREATE_POLICY = "CreateSnapshotPolicy"
DELETE_POLICY = "DeleteSnapshotPolicies"

#: Where the first job of each operation fails (a late step, so the unwind has work to do).
FIRST_FAILS_AT: dict[str, str] = {
    S.START.job_type: "hypervisor.launch_vm",
    S.STOP.job_type: "vm.complete_stop",
    S.REBOOT.job_type: "vm.complete_reboot",
    S.DESTROY.job_type: "vm.complete_destroy",
    S.RECOVER.job_type: "vm.recover",
    S.EXPUNGE.job_type: "hypervisor.delete_volume",
    S.MIGRATE.job_type: "vm.complete_migration",
    S.SNAPSHOT.job_type: "hypervisor.create_snapshot",
    S.REVERT_TO_SNAPSHOT.job_type: "vm.complete_revert",
    S.DELETE_SNAPSHOT.job_type: "vm.complete_delete_snapshot",
    S.RESTORE.job_type: "vm.complete_restore",
    S.CHANGE_SERVICE_OFFERING.job_type: "vm.change_service_offering",
    V.CREATE.job_type: "volume.create",
    V.ATTACH.job_type: "volume.complete_attach",
    V.RESIZE.job_type: "volume.complete_resize",
    V.DETACH.job_type: "volume.complete_detach",
    V.MIGRATE.job_type: "volume.complete_migrate",
    V.DELETE.job_type: "volume.finish_delete",
    V.SNAPSHOT.job_type: "snapshot.record_backed_up",
    V.CREATE_FROM_SNAPSHOT.job_type: "snapshot.complete_volume",
    V.CREATE_TEMPLATE_FROM_SNAPSHOT.job_type: "snapshot.complete_template",
    V.REVERT_TO_SNAPSHOT.job_type: "hypervisor.revert_volume_to_snapshot",
    V.DELETE_SNAPSHOT.job_type: "hypervisor.delete_snapshot_backup",
    CREATE_POLICY: "snapshot_policy.sync_schedule",
    DELETE_POLICY: "snapshot_policy.sync_schedule",
}


def first_job_of_each_type_fails(*only: str) -> Callable[[str, Callable[[], Any]], Any]:
    """The first job of each operation (of those named in `only`, when given) fails for good
    at its step in FIRST_FAILS_AT; the next job of the same type succeeds, so one VM's life
    records both outcomes."""
    failed: set[str] = set()

    def around(name: str, call: Callable[[], Any]) -> Any:
        workflow_type = activity.info().workflow_type or ""
        if only and workflow_type not in only:
            return call()
        if FIRST_FAILS_AT.get(workflow_type) == name and workflow_type not in failed:
            failed.add(workflow_type)
            raise ApplicationError(
                f"recorded failure at {name}", 530, type="InjectedFailure", non_retryable=True
            )
        return call()

    return around


async def record(database_url: str, temporal_binary: str) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary,
        search_attributes=[SearchAttributeKey.for_keyword(a.value) for a in JobAttribute],
        data_converter=pydantic_data_converter,
        ui=False,
    )
    cloud = Cloud(env=postgres_env(database_url))
    try:
        zone = seed_zone(cloud)
        await record_deployments(env.client, cloud, zone)
        await record_vm_life(env.client, cloud, zone)
        await record_terminated_jobs(env.client, cloud, zone)
        await record_migrations(env.client, cloud, zone)
        await record_vm_snapshots(env.client, cloud, zone)
        await record_restore_and_scale(env.client, cloud, zone)
        await record_volumes(env.client, cloud, zone)
        await record_volume_snapshots(env.client, cloud, zone)
        await record_snapshot_policies(env.client, cloud, zone)
        await record_infrastructure(env.client, cloud, zone)
        await record_queue_by_signal(env.client, cloud, zone)
        await record_host_maintenance(env.client, cloud, seed_zone(cloud))
        await record_migrations_with_storage(env.client, cloud, seed_zone(cloud))
        await record_host_ha(env.client, cloud, seed_zone(cloud))
        await record_vm_ha(env.client, cloud, seed_zone(cloud))
    finally:
        cloud.close()
        await env.shutdown()


async def record_deployments(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    async with running_worker(client, cloud) as harness:
        await save(await harness.deploy(zone, "recorded-ok"), "deploy_succeeds")
        harness.faults.append(
            {
                "operation": "start_vm",
                "action": "fail",
                "host_id": str(zone.host_ids[0]),
                "error_code": 534,
                "message": "recorded host failure",
                "delay_seconds": 0,
            }
        )
        await save(await harness.deploy(zone, "recorded-retry"), "deploy_retries_next_host")
    async with running_worker(client, cloud, around=fail_before("hypervisor.launch_vm")) as harness:
        await save(await harness.deploy(zone, "recorded-unwind"), "deploy_fails_and_unwinds")


async def record_vm_life(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """One VM through its queue: deployed, then each operation failing once and succeeding;
    the failed expunge is retried by the queue itself, which then ends."""
    async with running_worker(client, cloud, around=first_job_of_each_type_fails()) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-life")
        await wait(client, deploy_job)
        for operation in (S.STOP, S.START, S.REBOOT, S.DESTROY, S.RECOVER):
            await run(harness, zone, vm_id, operation, f"{operation.value}_vm_fails_and_unwinds")
            await run(harness, zone, vm_id, operation, f"{operation.value}_vm_succeeds")
        await run(harness, zone, vm_id, S.DESTROY, None)
        expunge = await run(harness, zone, vm_id, S.EXPUNGE, "expunge_vm_fails_and_unwinds")
        # Past its point of no return the VM stays Expunging; the queue's retry expunges it.
        # The queue ends once the VM is removed, so the retry has ended by then.
        await save(client.get_workflow_handle(vm_queue_id(vm_id)), "vm_queue_lifecycle")
        retry = derived_id(expunge, "expunge/1")
        await save(client.get_workflow_handle(str(retry)), "expunge_vm_succeeds")


async def record_terminated_jobs(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """A queue whose running job is terminated from outside: it records the job failed and
    runs the next one (the `record-terminated-jobs` patch)."""
    async with running_worker(client, cloud) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-terminated")
        await wait(client, deploy_job)
        harness.faults.append(
            {"operation": "reboot_vm", "action": "delay", "delay_seconds": 2, "host_id": None}
        )
        reboot = await submit(harness, zone, vm_id, S.REBOOT)
        stop = await submit(harness, zone, vm_id, S.STOP)
        rebooting = await step_reached(client, reboot.job_id, "rebooting")
        await rebooting.terminate("recorded: an operator terminated the job")
        await wait(client, stop.job_id)
        harness.faults.clear()
        await run(harness, zone, vm_id, S.DESTROY, None, expunge=True)
        await save(client.get_workflow_handle(vm_queue_id(vm_id)), "vm_queue_terminated_job")


async def record_queue_by_signal(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """Jobs as the API submits them since submission stopped waiting for a worker (the
    queue's `enqueue` signal): a deployment that waits for its turn; a running start cancelled
    through the API's one cancel path (the update, then Temporal's cancel: it closes as
    Canceled, the `close-cancelled-as-canceled` patch); a queued reboot cancelled while a
    repeat of it waits joined to it; the queue's whole life, until its VM is expunged."""
    async with running_worker(client, cloud) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-signal")
        await save(await started(client, deploy_job), "deploy_waits_for_its_turn")
        await run(harness, zone, vm_id, S.STOP, None)
        harness.faults.append(
            {"operation": "start_vm", "action": "delay", "delay_seconds": 30, "host_id": None}
        )
        start = await submit(harness, zone, vm_id, S.START)
        reboot = await submit(harness, zone, vm_id, S.REBOOT)
        again = await submit(harness, zone, vm_id, S.REBOOT)
        await step_reached(client, start.job_id, "starting on")
        assert await cancel_job(client, cloud, reboot.job_id, "recorded") == "queued"
        assert await cancel_job(client, cloud, start.job_id, "recorded") == "running"
        await save(client.get_workflow_handle(str(start.job_id)), "start_vm_cancelled")
        await outcome(client, again.job_id, cloud=cloud)
        harness.faults.clear()
        await run(harness, zone, vm_id, S.DESTROY, None, expunge=True)
        await save(client.get_workflow_handle(vm_queue_id(vm_id)), "vm_queue_by_enqueue")


async def record_migrations(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """A live migration failing after the VM moved (so its unwind moves it back), then one
    succeeding."""
    async with running_worker(client, cloud, around=first_job_of_each_type_fails()) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-migrations")
        await wait(client, deploy_job)
        await run(harness, zone, vm_id, S.MIGRATE, "migrate_vm_fails_and_unwinds")
        await run(harness, zone, vm_id, S.MIGRATE, "migrate_vm_succeeds")


async def record_migrations_with_storage(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """A migration to another cluster failing after VM and disk moved (its unwind moves both
    back), then one succeeding."""
    async with running_worker(client, cloud, around=first_job_of_each_type_fails()) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-storage-migrations")
        await wait(client, deploy_job)
        source = cloud.load(VirtualMachine, vm_id).host_id
        assert source is not None
        home = cloud.load(Host, source).cluster_id
        target = next(h for h in zone.host_ids if cloud.load(Host, h).cluster_id != home)
        for outcome in ("fails_and_unwinds", "succeeds"):
            name = f"migrate_vm_with_storage_{outcome}"
            await run(harness, zone, vm_id, S.MIGRATE, name, host_id=target)


async def record_vm_snapshots(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """Each VM snapshot job failing once (late, so its unwind has work) and then succeeding:
    a disk-only snapshot made, reverted to (the VM ends Stopped), deleted."""
    async with running_worker(client, cloud, around=first_job_of_each_type_fails()) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-vm-snapshots")
        await wait(client, deploy_job)
        for name in ("create_vm_snapshot_fails_and_unwinds", "create_vm_snapshot_succeeds"):
            job_id = uuid.uuid4()
            snapshot_id = vm_snapshot_id_for(job_id)
            await run(
                harness, zone, vm_id, S.SNAPSHOT, name, job_id=job_id, snapshot_id=snapshot_id
            )
        for operation, prefix in (
            (S.REVERT_TO_SNAPSHOT, "revert_to_vm_snapshot"),
            (S.DELETE_SNAPSHOT, "delete_vm_snapshot"),
        ):
            for outcome in ("fails_and_unwinds", "succeeds"):
                name = f"{prefix}_{outcome}"
                await run(harness, zone, vm_id, operation, name, snapshot_id=snapshot_id)


async def record_restore_and_scale(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """A restore of a running VM failing at its last step (its unwind starts the VM again on
    its old root volume), then one succeeding; the VM stopped, a change of its service
    offering failing, then one succeeding."""
    jobs = (S.RESTORE.job_type, S.CHANGE_SERVICE_OFFERING.job_type)
    async with running_worker(client, cloud, around=first_job_of_each_type_fails(*jobs)) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-restore")
        await wait(client, deploy_job)
        await run(harness, zone, vm_id, S.RESTORE, "restore_vm_fails_and_unwinds")
        await run(harness, zone, vm_id, S.RESTORE, "restore_vm_succeeds")
        await run(harness, zone, vm_id, S.STOP, None)
        for name in ("scale_vm_fails_and_unwinds", "scale_vm_succeeds"):
            await run(
                harness,
                zone,
                vm_id,
                S.CHANGE_SERVICE_OFFERING,
                name,
                service_offering_id=zone.medium_offering_id,
            )


async def record_volumes(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """One data volume through each volume job, each failing once at a late step and then
    succeeding: created, attached to a running VM (its disk made and plugged in), grown,
    detached, moved to the other pool, deleted (a failed delete stays Expunging; the next
    one finishes it)."""
    jobs = tuple(
        op.job_type for op in (V.CREATE, V.ATTACH, V.RESIZE, V.DETACH, V.MIGRATE, V.DELETE)
    )
    async with running_worker(client, cloud, around=first_job_of_each_type_fails(*jobs)) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-volumes")
        await wait(client, deploy_job)
        volume_id = uuid.uuid4()
        for outcome in ("fails_and_unwinds", "succeeds"):
            job_id = uuid.uuid4()
            volume_id = volume_id_for(job_id)
            creation = VolumeCreation(
                name=f"recorded-{outcome}",
                zone_id=zone.zone_id,
                disk_offering_id=zone.disk_offering_id,
                size_bytes=5 * GIB,
            )
            await run_volume(
                harness,
                zone,
                volume_id,
                V.CREATE,
                f"create_volume_{outcome}",
                job_id=job_id,
                creation=creation,
            )
        for operation in (V.ATTACH, V.RESIZE, V.DETACH, V.MIGRATE, V.DELETE):
            for outcome in ("fails_and_unwinds", "succeeds"):
                current = cloud.load(Volume, volume_id)
                options: dict[str, Any] = {}
                if operation is V.ATTACH:
                    options = {"vm_id": vm_id}
                elif operation is V.RESIZE:
                    options = {"size_bytes": current.size_bytes + GIB}
                elif operation is V.MIGRATE:
                    options = {"pool_id": next(p for p in zone.pool_ids if p != current.pool_id)}
                name = f"{operation.value}_volume_{outcome}"
                await run_volume(harness, zone, volume_id, operation, name, **options)


async def record_volume_snapshots(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """Each volume snapshot job failing once at a late step and then succeeding, about a data
    volume attached to a VM: a snapshot taken (live), made into a volume and a template,
    reverted to (the VM stopped first), deleted."""
    jobs = tuple(
        op.job_type
        for op in (
            V.SNAPSHOT,
            V.CREATE_FROM_SNAPSHOT,
            V.CREATE_TEMPLATE_FROM_SNAPSHOT,
            V.REVERT_TO_SNAPSHOT,
            V.DELETE_SNAPSHOT,
        )
    )
    async with running_worker(client, cloud, around=first_job_of_each_type_fails(*jobs)) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-volume-snapshots")
        await wait(client, deploy_job)
        create = uuid.uuid4()
        volume_id = volume_id_for(create)
        creation = VolumeCreation(
            name="recorded-snapshotted",
            zone_id=zone.zone_id,
            disk_offering_id=zone.disk_offering_id,
            size_bytes=5 * GIB,
        )
        await run_volume(harness, zone, volume_id, V.CREATE, None, job_id=create, creation=creation)
        await run_volume(harness, zone, volume_id, V.ATTACH, None, vm_id=vm_id)
        snapshot_id = uuid.uuid4()
        for outcome in ("fails_and_unwinds", "succeeds"):
            job_id = uuid.uuid4()
            snapshot_id = snapshot_id_for(job_id)
            await run_volume(
                harness,
                zone,
                volume_id,
                V.SNAPSHOT,
                f"create_snapshot_{outcome}",
                job_id=job_id,
                snapshot_id=snapshot_id,
            )
        for operation, prefix in (
            (V.CREATE_FROM_SNAPSHOT, "create_volume_from_snapshot"),
            (V.CREATE_TEMPLATE_FROM_SNAPSHOT, "create_template_from_snapshot"),
            (V.REVERT_TO_SNAPSHOT, "revert_snapshot"),
            (V.DELETE_SNAPSHOT, "delete_snapshot"),
        ):
            if operation is V.REVERT_TO_SNAPSHOT:
                await run(harness, zone, vm_id, S.STOP, None)
            for outcome in ("fails_and_unwinds", "succeeds"):
                job_id = uuid.uuid4()
                options: dict[str, Any] = {}
                target = volume_id
                if operation is V.CREATE_FROM_SNAPSHOT:
                    target = volume_id_for(job_id)
                    options = {"name": f"recorded-from-snapshot-{outcome}"}
                if operation is V.CREATE_TEMPLATE_FROM_SNAPSHOT:
                    options = {
                        "name": f"recorded-template-{outcome}",
                        "template_id": derived_id(job_id, "template"),
                    }
                await run_volume(
                    harness,
                    zone,
                    target,
                    operation,
                    f"{prefix}_{outcome}",
                    job_id=job_id,
                    route_by=volume_id,
                    snapshot_id=snapshot_id,
                    **options,
                )


async def record_snapshot_policies(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """A daily policy on a VM's root volume: made (its schedule failing to be made the first
    time, so the policy is put back), one run of its schedule (triggered at once: it hands a
    CreateSnapshot job to the VM's queue), then the policy deleted (failing once after the
    deletion was recorded)."""
    around = first_job_of_each_type_fails(CREATE_POLICY, DELETE_POLICY)
    async with running_worker(client, cloud, around=around) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-policies")
        await wait(client, deploy_job)
        root_volume_id = cloud.load(VirtualMachine, vm_id).root_volume_id
        assert root_volume_id is not None
        # Half a day away, so no scheduled run comes while recording.
        at = datetime.now(UTC) + timedelta(hours=12)
        for outcome in ("fails_and_unwinds", "succeeds"):
            await change_policy(
                harness,
                zone,
                root_volume_id,
                f"{at:%M:%H}",
                f"create_snapshot_policy_{outcome}",
            )
        schedule = client.get_schedule_handle(
            schedule_id_for(policy_id_for(root_volume_id, SnapshotIntervalType.DAILY))
        )
        await schedule.trigger()
        for _ in range(400):
            actions = (await schedule.describe()).info.recent_actions
            if actions:
                break
            await asyncio.sleep(0.05)
        started = actions[0].action
        assert isinstance(started, ScheduleActionExecutionStartWorkflow)
        recurring = client.get_workflow_handle(started.workflow_id)
        await save(recurring, "recurring_snapshot_runs")
        ran = await recurring.result()
        if "job_id" in ran:
            with contextlib.suppress(Exception):
                await wait(client, UUID(ran["job_id"]))
        for outcome in ("fails_and_unwinds", "succeeds"):
            await change_policy(
                harness,
                zone,
                root_volume_id,
                "",
                f"delete_snapshot_policies_{outcome}",
                delete=True,
            )


async def change_policy(
    harness: Harness,
    zone: DemoCloud,
    volume_id: UUID,
    schedule: str,
    name: str,
    *,
    delete: bool = False,
) -> None:
    """A CreateSnapshotPolicy (or DeleteSnapshotPolicies) job of a daily policy, as the API
    starts it."""
    change = SnapshotPolicyChange(
        job_id=uuid.uuid4(),
        policy_id=policy_id_for(volume_id, SnapshotIntervalType.DAILY),
        volume_id=volume_id,
        account_id=zone.admin_account_id,
        summary=f"{'delete ' if delete else ''}DAILY policy of {volume_id}",
        delete=delete,
        interval_type=SnapshotIntervalType.DAILY.value,
        schedule=schedule,
        timezone="UTC",
        max_snaps=2,
    )
    handle = await harness.client.start_workflow(
        change.job_type,
        change,
        id=str(change.job_id),
        task_queue=harness.task_queue,
        execution_timeout=timedelta(seconds=90),
    )
    await save(handle, name)


async def record_infrastructure(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    async with running_worker(client, cloud) as harness:
        host_job = uuid.uuid4()
        await save(
            await client.start_workflow(
                "AddHost",
                AddHostRequest(
                    job_id=host_job,
                    host_id=host_id_for(host_job),
                    cluster_id=zone.cluster_ids[0],
                    account_id=zone.admin_account_id,
                    name=f"recorded-host-{host_job.hex[:6]}",
                    address="192.0.2.10",
                    summary="add a recorded host",
                ),
                id=str(host_job),
                task_queue=harness.task_queue,
            ),
            "add_host_succeeds",
        )
        # Two passes (one asked for at once, one at the end of the interval), then the run
        # continues as new: its history is complete.
        sync = await client.start_workflow(
            "PowerStateSync",
            PowerStateSyncInput(
                cluster_id=zone.cluster_ids[0],
                interval_seconds=0.5,
                clock_skew_seconds=0,
                passes_per_run=2,
            ),
            id=f"recorded-power-state-sync/{uuid.uuid4()}",
            task_queue=harness.task_queue,
        )
        await sync.execute_update("sync_now")
        first_run = client.get_workflow_handle(sync.id, run_id=sync.result_run_id)
        await save(first_run, "power_state_sync_two_passes")
        await sync.terminate("recording done")


async def record_host_maintenance(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """A maintenance that fails late and unwinds, one that succeeds (its VM moved by a migrate
    job), the cancel that returns the host, and a host disabled (its own zone: the host stays
    out of the other recordings' way)."""
    host_id = zone.host_ids[0]
    runs: list[tuple[str, Any, str, str | None]] = [
        (
            "PrepareHostForMaintenance",
            HostMaintenanceRequest(
                job_id=uuid.uuid4(),
                host_id=host_id,
                account_id=zone.admin_account_id,
                summary="prepare a recorded host for maintenance",
            ),
            "host_maintenance_fails_and_unwinds",
            "host.complete_maintenance",
        ),
        (
            "PrepareHostForMaintenance",
            HostMaintenanceRequest(
                job_id=uuid.uuid4(),
                host_id=host_id,
                account_id=zone.admin_account_id,
                summary="prepare a recorded host for maintenance",
            ),
            "host_maintenance_succeeds",
            None,
        ),
        (
            "CancelHostMaintenance",
            CancelHostMaintenanceRequest(
                job_id=uuid.uuid4(),
                host_id=host_id,
                account_id=zone.admin_account_id,
                summary="return a recorded host to service",
            ),
            "cancel_host_maintenance_succeeds",
            None,
        ),
        (
            "ChangeAllocationState",
            AllocationStateRequest(
                job_id=uuid.uuid4(),
                account_id=zone.admin_account_id,
                resource_type="Host",
                resource_id=zone.host_ids[1],
                allocation_state="Disabled",
                summary="disable a recorded host",
            ),
            "change_allocation_state_succeeds",
            None,
        ),
        (
            "IssueOutOfBandManagementPowerAction",
            PowerActionRequest(
                job_id=uuid.uuid4(),
                account_id=zone.admin_account_id,
                host_id=zone.host_ids[1],
                action="STATUS",
                summary="read the power of a host without a BMC",
            ),
            "power_action_refused",
            None,
        ),
    ]
    # One task queue and one simulator throughout: the VM's queue (and the migrate jobs it
    # runs) lives on the task queue of the worker that started it, on that worker's hypervisor.
    task_queue = f"record-maintenance-{uuid.uuid4().hex[:8]}"
    driver = SimulatorDriver(list)
    async with running_worker(client, cloud, task_queue=task_queue, driver=driver) as harness:
        vm_job, _ = await deploy(harness, zone, "recorded-maintenance")
        await wait(client, vm_job)
    for workflow_type, request, name, fails_at in runs:
        around = fail_before(fails_at) if fails_at else None
        async with running_worker(
            client, cloud, around=around, task_queue=task_queue, driver=driver
        ) as harness:
            handle = await client.start_workflow(
                workflow_type,
                request,
                id=str(request.job_id),
                task_queue=harness.task_queue,
                execution_timeout=timedelta(seconds=90),
            )
            await save(handle, name)


async def record_vm_ha(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """A power-state sync pass that finds an HA VM crashed on its (healthy) host and hands its
    restart over (the `vm-ha-restart` patch), and the alert it raised archived."""
    from domain.alert import ARCHIVE_ALERT_JOB, ArchiveAlertRequest, alert_id_for
    from tests.integration.host_jobs import ha_offering

    async with running_worker(client, cloud) as harness:
        ha_job, ha_vm = await deploy(
            harness, zone, "recorded-vm-ha", offering_id=ha_offering(cloud)
        )
        await wait(client, ha_job)
        host_id = cloud.load(VirtualMachine, ha_vm).host_id
        assert host_id is not None
        harness.driver.stop_vm(host_ref(cloud, host_id), str(ha_vm), forced=True)
        sync_id = f"recorded-vm-ha/{uuid.uuid4()}"
        sync = await client.start_workflow(
            "PowerStateSync",
            PowerStateSyncInput(
                cluster_id=cloud.load(Host, host_id).cluster_id,
                interval_seconds=0.5,
                clock_skew_seconds=0,
                passes_per_run=2,
            ),
            id=sync_id,
            task_queue=harness.task_queue,
        )
        passed = await sync.execute_update("sync_now")
        assert passed["crashed"], passed
        await save(
            client.get_workflow_handle(sync.id, run_id=sync.result_run_id),
            "power_state_sync_restarts_crashed_ha_vm",
        )
        await sync.terminate("recording done")
        job_id = uuid.uuid4()
        await save(
            await client.start_workflow(
                ARCHIVE_ALERT_JOB,
                ArchiveAlertRequest(
                    job_id=job_id,
                    account_id=zone.admin_account_id,
                    alert_id=alert_id_for(f"{sync_id}/1/{ha_vm}/crashed"),
                    summary="archive a recorded alert",
                ),
                id=str(job_id),
                task_queue=harness.task_queue,
            ),
            "archive_alert_succeeds",
        )


async def record_host_ha(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """HA switched on for a host (a short job), its cluster's monitor following it from dead to
    fenced through a real BMC (cycle skipped) until HA is switched off and the monitor ends,
    and a host declared fenced whose HA VM restarts elsewhere (its own zone's first cluster)."""
    from tests.integration.drivers.test_baremetal_contract import BmcProcess
    from tests.integration.host_jobs import ha_offering
    from tests.integration.test_host_ha import FAST, PowerTie, dead, power_control

    bmc = BmcProcess(1)
    port = bmc.ports[0]
    bmc.command("power", port, "on")
    try:
        async with running_worker(client, cloud, power_control=power_control()) as harness:
            plain_job, _ = await deploy(harness, zone, "recorded-ha-plain")
            ha_job, ha_vm = await deploy(
                harness, zone, "recorded-ha", offering_id=ha_offering(cloud)
            )
            await wait(client, plain_job)
            await wait(client, ha_job)
            host_id = cloud.load(VirtualMachine, ha_vm).host_id
            assert host_id is not None
            host = cloud.load(Host, host_id)
            host.configure_out_of_band("ipmitool", f"127.0.0.1:{port}", True, command_id="oobm")
            cloud.save(host)
            fast = FAST.model_copy(update={"recover_failure_threshold": 0})
            host_ha_operations.configure_cluster(cloud, host.cluster_id, fast, "ha-settings")

            async def switch(enabled: bool, name: str) -> None:
                job_id = uuid.uuid4()
                request = HaConfiguration(
                    job_id=job_id,
                    account_id=zone.admin_account_id,
                    resource_type="Host",
                    resource_id=host_id,
                    enabled=enabled,
                    summary="switch a recorded host's HA",
                )
                handle = await client.start_workflow(
                    CONFIGURE_HA_JOB, request, id=str(job_id), task_queue=harness.task_queue
                )
                await save(handle, name)

            await switch(True, "configure_host_ha_succeeds")
            started = await client.start_workflow(
                MONITOR_WORKFLOW,
                HostHaMonitorInput(cluster_id=host.cluster_id, account_id=zone.admin_account_id),
                id=monitor_id(host.cluster_id),
                task_queue=harness.task_queue,
                start_signal=CHECK_NOW_SIGNAL,
            )
            tie = PowerTie(port, harness.driver, host_id)
            bmc.listeners.append(tie)
            dead(harness, host_id)

            async def load() -> Host:
                return cloud.load(Host, host_id)

            await wait_until(
                load, lambda h: h.ha_state is HaState.FENCED, timeout=60, what="the host fenced"
            )
            await switch(False, "configure_host_ha_disables")
            await save(
                client.get_workflow_handle(started.id, run_id=started.result_run_id),
                "host_ha_monitor_fences_until_disabled",
            )
            bmc.listeners.remove(tie)

            # Another host, declared fenced by hand: its HA VM restarts elsewhere.
            other = next(h for h in zone.host_ids if h != host_id)
            host_ha_operations.set_host_ha(cloud, other, True, datetime.now(UTC), "ha-other")
            job_id = uuid.uuid4()
            handle = await client.start_workflow(
                RESTART_JOB,
                RestartVmsRequest(
                    job_id=job_id,
                    account_id=zone.admin_account_id,
                    host_id=other,
                    summary="declared fenced",
                    declared_by="recorder",
                ),
                id=str(job_id),
                task_queue=harness.task_queue,
            )
            await save(handle, "restart_vms_of_declared_fenced_host")
    finally:
        bmc.stop()


async def run(
    harness: Harness,
    zone: DemoCloud,
    vm_id: UUID,
    operation: VmOperation,
    name: str | None,
    **options: Any,
) -> UUID:
    accepted = await submit(harness, zone, vm_id, operation, **options)
    handle = await started(harness.client, accepted.job_id)
    if name is None:
        with contextlib.suppress(Exception):
            await handle.result()
    else:
        await save(handle, name)
    return accepted.job_id


async def run_volume(
    harness: Harness,
    zone: DemoCloud,
    volume_id: UUID,
    operation: VolumeOperation,
    recording: str | None,
    **options: Any,
) -> UUID:
    """A volume job, in the VM's queue while the volume is attached, its own otherwise;
    `recording` names its history (None: not recorded). `options` may name what the job
    makes (`name`)."""
    accepted = await submit_volume_job(harness, zone, volume_id, operation, **options)
    handle = await started(harness.client, accepted.job_id)
    if recording is None:
        with contextlib.suppress(Exception):
            await handle.result()
    else:
        await save(handle, recording)
    return accepted.job_id


async def wait(client: Client, job_id: UUID) -> None:
    await outcome(client, job_id)


async def save(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Wait for this run to close (completed, failed, terminated or continued as new), then
    write its history unless a recording of that name is kept already."""
    with contextlib.suppress(Exception):
        await handle.result(follow_runs=False)
    path = HISTORIES / f"{name}.json"
    if path.exists():
        print("kept", name)
        return
    history = await handle.fetch_history()
    path.write_text(history.to_json())
    print("recorded", name)


async def main(argv: list[str]) -> None:
    from tests.conftest import LOCAL_POSTGRES, _with_database, temporal_binary

    if len(argv) > 1:
        await record(argv[1], temporal_binary())
        return
    name = f"stratus_record_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(LOCAL_POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        await record(_with_database(LOCAL_POSTGRES, name), temporal_binary())
    finally:
        with psycopg.connect(LOCAL_POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    import sys

    asyncio.run(main(sys.argv))
