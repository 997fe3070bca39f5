"""A worker killed in the middle of a deployment or of a VM's queued job (a migration with
storage among them): the job finishes on the next worker. Host jobs (maintenance, fence, HA
restart) are in test_worker_killed_host_jobs.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.drivers.simulator import SimulatorDriver
from activities.simulator_configuration import SimulatorConfigurationActivities
from domain.cloud import Cloud
from domain.host import Host
from domain.job import Job, JobStatus
from domain.job_requests import SimulatorFaultChange, VmOperation, VolumeOperation
from domain.snapshot import Snapshot, SnapshotState, snapshot_id_for
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine, VmState
from domain.vm_operations import restored_root_volume_id_for
from domain.volume import Volume, VolumeState
from tests.integration.test_vm_storage_migration import (
    host_elsewhere,
    pool_of_cluster,
    problems,
    vm_with_a_data_disk,
)
from tests.integration.vm_jobs import cluster_of, deploy, problems_of, submit
from tests.integration.volume_jobs import create_volume, submit_volume_job, volume_problems
from tests.support import (
    Harness,
    event_names,
    job_of,
    outcome,
    running_worker,
    seed_zone,
    started,
    vm_of,
    wait_until,
)
from workers.demo_cloud import DemoCloud


def vm_of_id(cloud: Cloud, vm_id: uuid.UUID) -> VirtualMachine:
    return cloud.load(VirtualMachine, vm_id)


def start_worker_process(
    database_url: str, temporal_address: str, task_queue: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STRATUS_DATABASE_URL": database_url,
        "STRATUS_TEMPORAL_ADDRESS": temporal_address,
        "STRATUS_TASK_QUEUE": task_queue,
    }
    stratus = Path(sys.executable).parent / "stratus"
    return subprocess.Popen(
        [str(stratus), "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


@contextlib.contextmanager
def slowed(
    cloud: Cloud,
    zone: DemoCloud,
    operation: str,
    host_ids: Sequence[uuid.UUID | None] = (None,),
    seconds: float = 30,
) -> Iterator[None]:
    """The simulator's `operation` delayed `seconds` (on each of `host_ids`; None: every host)
    while inside: long enough to kill a worker in the middle of it. The delay is gone after."""
    configure = SimulatorConfigurationActivities(cloud)
    changes = [
        SimulatorFaultChange(
            job_id=uuid.uuid4(),
            account_id=zone.admin_account_id,
            fault_id=uuid.uuid4(),
            operation=operation,
            action="delay",
            host_id=host_id,
            delay_seconds=seconds,
        )
        for host_id in host_ids
    ]
    for change in changes:
        configure.change_fault(change)
    try:
        yield
    finally:
        for change in changes:
            configure.change_fault(
                change.model_copy(update={"job_id": uuid.uuid4(), "remove": True})
            )


@contextlib.contextmanager
def doomed_worker(
    temporal_client: Client, database_url: str, task_queue: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A `stratus worker` process serving `task_queue`, killed -9 on the way out."""
    address = temporal_client.service_client.config.target_host
    doomed = start_worker_process(database_url, address, task_queue)
    try:
        yield doomed
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)


async def activity_started(
    handle: WorkflowHandle[Any, Any], activity: str, worker: subprocess.Popen[bytes]
) -> None:
    """Until the worker has started the workflow's `activity` (the slowed hypervisor call):
    killed then, it dies inside that call, which its heartbeat timeout hands to the next
    worker. (Killed a moment earlier, in the control step that records the step, the next
    worker would wait out that step's whole start-to-close timeout instead.)"""

    async def started() -> bool:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
        pending = (await handle.describe()).raw_description.pending_activities
        return any(
            a.activity_type.name == activity
            and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            for a in pending
        )

    await wait_until(started, timeout=60, what=f"{activity} of {handle.id} to start")


async def attempts_of(handle: WorkflowHandle[Any, Any], activity: str) -> list[int]:
    """The attempt on which each run of the workflow's `activity` ended, from its history
    (which records a retried activity's last attempt only): 2 for a call its killed worker
    lost and the next worker made again, 1 for one that answered on its first try."""
    scheduled: dict[int, str] = {}
    ended: list[int] = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started_event = event.activity_task_started_event_attributes
            if scheduled.get(started_event.scheduled_event_id) == activity:
                ended.append(started_event.attempt)
    return ended


async def test_a_worker_killed_mid_deploy_leaves_a_job_the_next_worker_finishes(
    temporal_env: WorkflowEnvironment, temporal_client: Client, cloud: Cloud, database_url: str
) -> None:
    zone = seed_zone(cloud)
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    with (
        slowed(cloud, zone, "start_vm", zone.host_ids),
        doomed_worker(temporal_client, database_url, task_queue) as doomed,
    ):
        # Only the doomed process serves this task queue.
        starter = Harness(temporal_client, cloud, task_queue, SimulatorDriver())
        handle = await starter.deploy(zone, "survivor")
        job_id = uuid.UUID(handle.id)

        def step() -> str:
            assert doomed.poll() is None, doomed.stderr.read() if doomed.stderr else b""
            job = cloud.find(Job, job_id)
            return (job.step or "") if job is not None else ""

        await wait_until(
            step,
            lambda current: current.startswith("starting VM"),
            timeout=60,
            what="the deployment to reach the hypervisor",
        )
        await activity_started(handle, "hypervisor.launch_vm", doomed)  # in the 30 s boot

    async with running_worker(temporal_client, cloud, task_queue=task_queue) as survivor:
        result = await asyncio.wait_for(handle.result(), timeout=120)

    vm = vm_of(cloud, job_id)
    assert vm.state is VmState.RUNNING and result["host_id"] == str(vm.host_id)
    assert job_of(cloud, job_id).status is JobStatus.SUCCEEDED
    assert [v.vm_id for v in survivor.driver.vms_on(str(vm.host_id))] == [str(vm.id)]
    holders = [h for h in zone.host_ids if cloud.load(Host, h).reservation_for(vm.id)]
    assert holders == [vm.host_id]
    assert Counter(event_names(cloud, vm.id))["VirtualMachine.Transitioned"] == 2


#: (what the job is, the simulator operation it is killed in, the step it shows meanwhile). Each
#: slowed operation is the job's first hypervisor call, so the doomed worker's own (empty)
#: simulator is never asked about the VM; the survivor uses the simulator the VM was made on.
KILLED_IN = [
    ("restore", "create_volume", "creating the new root volume"),
    ("snapshot", "snapshot_volume", "snapshotting"),
    ("attach", "create_volume", "creating"),
]


@pytest.mark.parametrize(("kind", "operation", "step"), KILLED_IN, ids=[k for k, _, _ in KILLED_IN])
async def test_a_worker_killed_mid_vm_job_leaves_a_job_the_next_worker_finishes(
    temporal_client: Client,
    cloud: Cloud,
    database_url: str,
    kind: str,
    operation: str,
    step: str,
) -> None:
    """The VM's queue and its job both live on the killed worker: the next worker takes over
    the queue, the job's workflow and the step it was in, and the job ends as if nothing
    happened, with nothing held twice."""
    zone = seed_zone(cloud)
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    async with running_worker(temporal_client, cloud, task_queue=task_queue) as setup:
        deploy_job, vm_id = await deploy(setup, zone, f"killed-{kind}")
        assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"
        stop = await submit(setup, zone, vm_id, VmOperation.STOP)
        assert (await outcome(temporal_client, stop.job_id))[0] == "succeeded"
        data_volume = await create_volume(setup, zone) if kind == "attach" else None
    driver = setup.driver
    root_volume_id = vm_of_id(cloud, vm_id).root_volume_id

    with (
        slowed(cloud, zone, operation),
        doomed_worker(temporal_client, database_url, task_queue) as doomed,
    ):
        starter = Harness(temporal_client, cloud, task_queue, SimulatorDriver())
        job_id = uuid.uuid4()
        if kind == "restore":
            accepted = await submit(starter, zone, vm_id, VmOperation.RESTORE, job_id=job_id)
        elif kind == "snapshot":
            accepted = await submit_volume_job(
                starter,
                zone,
                root_volume_id,
                VolumeOperation.SNAPSHOT,
                job_id=job_id,
                snapshot_id=snapshot_id_for(job_id),
            )
        else:
            assert data_volume is not None
            accepted = await submit_volume_job(
                starter, zone, data_volume, VolumeOperation.ATTACH, job_id=job_id, vm_id=vm_id
            )
        handle = temporal_client.get_workflow_handle(str(accepted.job_id))

        async def current_step() -> str:
            assert doomed.poll() is None, doomed.stderr.read() if doomed.stderr else b""
            with contextlib.suppress(RPCError):
                return str(await handle.query("current_step"))
            return ""  # its queue has not started the job's workflow yet

        await wait_until(
            current_step,
            lambda current: current.startswith(step),
            timeout=60,
            what=f"the job to reach {step!r}",
        )
        await activity_started(handle, f"hypervisor.{operation}", doomed)  # in the 30 s call

    async with running_worker(
        temporal_client, cloud, task_queue=task_queue, driver=driver
    ) as survivor:
        status, value = await asyncio.wait_for(outcome(temporal_client, job_id), timeout=180)
        assert status == "succeeded", value
        assert job_of(cloud, job_id).status is JobStatus.SUCCEEDED
        assert problems_of(cloud, zone, survivor, vm_id) == []
        vm = vm_of_id(cloud, vm_id)
        assert vm.state is VmState.STOPPED
        if kind == "restore":
            assert vm.root_volume_id == restored_root_volume_id_for(job_id)
            assert cloud.load(Volume, root_volume_id).state is VolumeState.EXPUNGED
        elif kind == "snapshot":
            snapshot = cloud.load(Snapshot, snapshot_id_for(job_id))
            assert snapshot.state is SnapshotState.BACKED_UP
            backups = driver.snapshot_backups_on(str(zone.secondary_storage_id))
            assert [b.snapshot_id for b in backups].count(str(snapshot.id)) == 1
        else:
            assert data_volume is not None
            assert volume_problems(cloud, zone, survivor, data_volume) == []
            assert cloud.load(Volume, data_volume).vm_id == vm_id


async def test_a_worker_killed_mid_storage_migration_leaves_a_job_the_next_worker_finishes(
    temporal_client: Client, cloud: Cloud, database_url: str
) -> None:
    """A running VM with a data disk migrated to a host of the zone's other cluster: the VM's
    queue and its migrate job live on the killed worker, which dies inside the (slowed) move of
    the VM and its disks. The next worker moves them and the job records them there once: the
    VM Running on the target host, each disk on the target cluster's pool (books and simulator)
    with its room counted there once, nothing left on the source host or pool."""
    zone = seed_zone(cloud)
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    async with running_worker(temporal_client, cloud, task_queue=task_queue) as setup:
        vm_id, *disks = await vm_with_a_data_disk(setup, zone, "killed-storage-migration")
    driver = setup.driver
    source = vm_of_id(cloud, vm_id).host_id
    assert source is not None
    target = host_elsewhere(cloud, zone, vm_id)
    source_pool = pool_of_cluster(cloud, zone, cluster_of(cloud, source))
    target_pool = pool_of_cluster(cloud, zone, cluster_of(cloud, target))
    assert [cloud.load(Volume, d).pool_id for d in disks] == [source_pool, source_pool]
    sizes = {str(d): cloud.load(Volume, d).size_bytes for d in disks}

    job_id = uuid.uuid4()
    with (
        slowed(cloud, zone, "migrate_vm_with_storage"),
        doomed_worker(temporal_client, database_url, task_queue) as doomed,
    ):
        # The job's first hypervisor call is the slowed one: the doomed worker's own (empty)
        # simulator is never asked about the VM.
        starter = Harness(temporal_client, cloud, task_queue, SimulatorDriver())
        await submit(starter, zone, vm_id, VmOperation.MIGRATE, host_id=target, job_id=job_id)
        handle = await started(temporal_client, job_id)
        await activity_started(handle, "hypervisor.migrate_vm_with_storage", doomed)  # 30 s

    async with running_worker(
        temporal_client, cloud, task_queue=task_queue, driver=driver
    ) as survivor:
        status, value = await asyncio.wait_for(outcome(temporal_client, job_id), timeout=180)
        assert status == "succeeded", value
        assert value["host_id"] == str(target) and value["source_host_id"] == str(source)
        assert job_of(cloud, job_id).status is JobStatus.SUCCEEDED
        assert problems_of(cloud, zone, survivor, vm_id) == []
        assert problems(cloud, zone, survivor, vm_id, disks) == []
    vm = vm_of_id(cloud, vm_id)
    assert vm.state is VmState.RUNNING and vm.host_id == target
    assert [v.vm_id for v in driver.vms_on(str(target))] == [str(vm_id)]
    # The disks on the target cluster's pool, in the books and in the simulator.
    assert [cloud.load(Volume, d).pool_id for d in disks] == [target_pool, target_pool]
    assert sorted(v.volume_id for v in driver.volumes_on(str(target_pool))) == sorted(sizes)
    # The source host and pool hold nothing of it.
    assert cloud.load(Host, source).reservation_for(vm_id) is None
    assert driver.vms_on(str(source)) == []
    assert cloud.load(PrimaryStorage, source_pool).allocations == {}
    assert driver.volumes_on(str(source_pool)) == []
    # The target pool counts each disk once, at its size.
    there = cloud.load(PrimaryStorage, target_pool)
    assert there.allocations == sizes and there.allocated_bytes == sum(sizes.values())
    allocated = Counter(
        str(getattr(e, "volume_id", None))
        for e in cloud.events.get(target_pool)
        if type(e).__qualname__ == "PrimaryStorage.CapacityAllocated"
    )
    assert allocated == Counter(sizes.keys())
    # One migration: requested once, each disk moved once, the job succeeded once.
    transitions = Counter(
        e.vm_event for e in cloud.events.get(vm_id) if isinstance(e, VirtualMachine.Transitioned)
    )
    assert transitions["MigrationRequested"] == 1
    for disk in disks:
        assert Counter(event_names(cloud, disk))["Volume.Migrated"] == 1, disk
    assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
    # The move the killed worker was making was lost with it, and made by the next one.
    assert await attempts_of(handle, "hypervisor.migrate_vm_with_storage") == [2]
