"""Record workflow histories for the replay test (`test_workflow_replay.py`).

What is recorded: DeployVirtualMachine (success, retry on the next host, unwind); a VM's
VirtualMachineQueue that ran a deployment and every operation (its whole life, until expunged),
and one whose jobs were terminated from outside; each operation workflow once succeeding and
once failing and unwinding (migrate, and the VM snapshot jobs, on VMs of their own); AddHost;
one run of PowerStateSync.

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
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from domain.cloud import Cloud, postgres_env
from domain.ids import derived_id
from domain.infrastructure import AddHostRequest, PowerStateSyncInput, host_id_for
from domain.job_requests import JobAttribute, VmOperation, vm_queue_id
from domain.vm_snapshot import vm_snapshot_id_for
from tests.integration.vm_jobs import deploy, submit
from tests.support import Harness, fail_before, running_worker, seed_zone
from workers.demo_cloud import DemoCloud

HISTORIES = Path(__file__).parent / "histories"
S = VmOperation

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
}


def first_job_of_each_type_fails() -> Callable[[str, Callable[[], Any]], Any]:
    """The first job of each operation fails for good at its step in FIRST_FAILS_AT; the
    next job of the same type succeeds, so one VM's life records both outcomes."""
    failed: set[str] = set()

    def around(name: str, call: Callable[[], Any]) -> Any:
        workflow_type = activity.info().workflow_type or ""
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
        await record_infrastructure(env.client, cloud, zone)
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
        reboot = await submit(client, harness.task_queue, zone, vm_id, S.REBOOT)
        stop = await submit(client, harness.task_queue, zone, vm_id, S.STOP)
        rebooting = client.get_workflow_handle(str(reboot.job_id))
        for _ in range(200):
            if str(await rebooting.query("current_step")).startswith("rebooting"):
                break
            await asyncio.sleep(0.05)
        await rebooting.terminate("recorded: an operator terminated the job")
        await wait(client, stop.job_id)
        harness.faults.clear()
        await run(harness, zone, vm_id, S.DESTROY, None, expunge=True)
        await save(client.get_workflow_handle(vm_queue_id(vm_id)), "vm_queue_terminated_job")


async def record_migrations(client: Client, cloud: Cloud, zone: DemoCloud) -> None:
    """A live migration failing after the VM moved (so its unwind moves it back), then one
    succeeding."""
    async with running_worker(client, cloud, around=first_job_of_each_type_fails()) as harness:
        deploy_job, vm_id = await deploy(harness, zone, "recorded-migrations")
        await wait(client, deploy_job)
        await run(harness, zone, vm_id, S.MIGRATE, "migrate_vm_fails_and_unwinds")
        await run(harness, zone, vm_id, S.MIGRATE, "migrate_vm_succeeds")


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


async def run(
    harness: Harness,
    zone: DemoCloud,
    vm_id: UUID,
    operation: VmOperation,
    name: str | None,
    **options: Any,
) -> UUID:
    accepted = await submit(harness.client, harness.task_queue, zone, vm_id, operation, **options)
    handle = harness.client.get_workflow_handle(str(accepted.job_id))
    if name is None:
        with contextlib.suppress(Exception):
            await handle.result()
    else:
        await save(handle, name)
    return accepted.job_id


async def wait(client: Client, job_id: UUID) -> None:
    await client.get_workflow_handle(str(job_id)).result()


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
