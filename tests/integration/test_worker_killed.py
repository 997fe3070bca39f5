"""A worker killed in the middle of a deployment, of a VM's queued job or of a host's maintenance:
the job finishes on the next worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.drivers.simulator import SimulatorDriver
from activities.simulator_configuration import SimulatorConfigurationActivities
from domain import host_ha_operations
from domain.cloud import Cloud
from domain.host import Host, ResourceState
from domain.host_ha import HaState
from domain.host_ha_operations import RESTART_JOB, RestartVmsRequest, restart_job_id
from domain.host_maintenance import (
    PREPARE_MAINTENANCE_JOB,
    HostMaintenanceRequest,
    evacuation_job_id,
)
from domain.job import Job, JobStatus
from domain.job_requests import SimulatorFaultChange, VmOperation, VolumeOperation
from domain.snapshot import Snapshot, SnapshotState, snapshot_id_for
from domain.virtual_machine import VirtualMachine, VmState
from domain.vm_operations import restored_root_volume_id_for
from domain.volume import Volume, VolumeState
from tests.integration.test_host_ha import host_with_vms, placements
from tests.integration.vm_jobs import deploy, problems_of, submit
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


async def test_a_worker_killed_mid_deploy_leaves_a_job_the_next_worker_finishes(
    temporal_env: WorkflowEnvironment, temporal_client: Client, cloud: Cloud, database_url: str
) -> None:
    zone = seed_zone(cloud)
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    configure = SimulatorConfigurationActivities(cloud)
    slow_start = [
        SimulatorFaultChange(
            job_id=uuid.uuid4(),
            account_id=zone.admin_account_id,
            fault_id=uuid.uuid4(),
            operation="start_vm",
            action="delay",
            host_id=host_id,
            delay_seconds=30,
        )
        for host_id in zone.host_ids
    ]
    for change in slow_start:
        configure.change_fault(change)

    address = temporal_client.service_client.config.target_host
    doomed = start_worker_process(database_url, address, task_queue)
    try:
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
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)

    for change in slow_start:
        configure.change_fault(change.model_copy(update={"job_id": uuid.uuid4(), "remove": True}))
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

    configure = SimulatorConfigurationActivities(cloud)
    slow = SimulatorFaultChange(
        job_id=uuid.uuid4(),
        account_id=zone.admin_account_id,
        fault_id=uuid.uuid4(),
        operation=operation,
        action="delay",
        host_id=None,
        delay_seconds=30,
    )
    configure.change_fault(slow)
    address = temporal_client.service_client.config.target_host
    doomed = start_worker_process(database_url, address, task_queue)
    try:
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
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)

    configure.change_fault(slow.model_copy(update={"job_id": uuid.uuid4(), "remove": True}))
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


async def test_a_worker_killed_while_a_host_is_emptied_leaves_a_maintenance_that_finishes(
    temporal_client: Client, cloud: Cloud, database_url: str
) -> None:
    """The maintenance job, the VM's queue and its migrate job all live on the killed worker,
    which dies inside the (slowed) live migration: the next worker finishes the migration, the
    wait and the maintenance, each once."""
    zone = seed_zone(cloud)
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    async with running_worker(temporal_client, cloud, task_queue=task_queue) as setup:
        deploy_job, vm_id = await deploy(setup, zone, "killed-maintenance")
        assert (await outcome(temporal_client, deploy_job))[0] == "succeeded"
    driver = setup.driver
    host_id = vm_of_id(cloud, vm_id).host_id
    assert host_id is not None

    configure = SimulatorConfigurationActivities(cloud)
    slow = SimulatorFaultChange(
        job_id=uuid.uuid4(),
        account_id=zone.admin_account_id,
        fault_id=uuid.uuid4(),
        operation="migrate_vm",
        action="delay",
        host_id=None,
        delay_seconds=30,
    )
    configure.change_fault(slow)
    address = temporal_client.service_client.config.target_host
    doomed = start_worker_process(database_url, address, task_queue)
    job_id = uuid.uuid4()
    migrate_job = evacuation_job_id(job_id, vm_id, 1)
    try:
        handle = await temporal_client.start_workflow(
            PREPARE_MAINTENANCE_JOB,
            HostMaintenanceRequest(
                job_id=job_id,
                host_id=host_id,
                account_id=zone.admin_account_id,
                summary="maintenance on a doomed worker",
            ),
            id=str(job_id),
            task_queue=task_queue,
        )
        await activity_started(handle, "host.await_evacuation", doomed)
        migrate = await started(temporal_client, migrate_job)
        await activity_started(migrate, "hypervisor.migrate_vm", doomed)  # in the 30 s call
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)

    configure.change_fault(slow.model_copy(update={"job_id": uuid.uuid4(), "remove": True}))
    async with running_worker(
        temporal_client, cloud, task_queue=task_queue, driver=driver
    ) as survivor:
        status, value = await asyncio.wait_for(outcome(temporal_client, job_id), timeout=180)
        assert status == "succeeded", value
        assert cloud.load(Host, host_id).resource_state is ResourceState.MAINTENANCE
        assert job_of(cloud, migrate_job).status is JobStatus.SUCCEEDED
        assert problems_of(cloud, zone, survivor, vm_id) == []
        assert vm_of_id(cloud, vm_id).host_id not in (None, host_id)
    transitions = Counter(
        e.vm_event for e in cloud.events.get(vm_id) if isinstance(e, VirtualMachine.Transitioned)
    )
    assert transitions["MigrationRequested"] == 1
    assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1


async def test_a_worker_killed_mid_ha_restart_leaves_an_ha_job_that_finishes(
    temporal_client: Client, cloud: Cloud, database_url: str
) -> None:
    """A host declared fenced: the HA job, the HA VM's queue and its start job all live on
    the killed worker, which dies inside the (slowed) start of the HA VM on another host: the
    next worker finishes the start, the wait and the HA job, each once; the HA VM runs in one
    place, the plain VM stays Stopped and the fenced host holds nothing."""
    zone = seed_zone(cloud)
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    async with running_worker(temporal_client, cloud, task_queue=task_queue) as setup:
        host_id, plain, ha_vm = await host_with_vms(setup, zone)
    driver = setup.driver
    host_ha_operations.set_host_ha(cloud, host_id, True, datetime.now(UTC), "test/ha-on")
    driver.power_off_host(str(host_id))  # the operator has pulled the plug, and says so
    before = {vm_id: len(list(cloud.events.get(vm_id))) for vm_id in (plain, ha_vm)}

    configure = SimulatorConfigurationActivities(cloud)
    slow = SimulatorFaultChange(
        job_id=uuid.uuid4(),
        account_id=zone.admin_account_id,
        fault_id=uuid.uuid4(),
        operation="start_vm",
        action="delay",
        host_id=None,
        delay_seconds=30,
    )
    configure.change_fault(slow)
    address = temporal_client.service_client.config.target_host
    doomed = start_worker_process(database_url, address, task_queue)
    job_id = uuid.uuid4()
    restart_job = restart_job_id(job_id, ha_vm)
    try:
        handle = await temporal_client.start_workflow(
            RESTART_JOB,
            RestartVmsRequest(
                job_id=job_id,
                account_id=zone.admin_account_id,
                host_id=host_id,
                summary="declared fenced on a doomed worker",
                declared_by="test-admin",
            ),
            id=str(job_id),
            task_queue=task_queue,
        )
        await activity_started(handle, "host.await_evacuation", doomed)
        restart = await started(temporal_client, restart_job)
        await activity_started(restart, "hypervisor.launch_vm", doomed)  # in the 30 s start
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)

    configure.change_fault(slow.model_copy(update={"job_id": uuid.uuid4(), "remove": True}))
    async with running_worker(
        temporal_client, cloud, task_queue=task_queue, driver=driver
    ) as survivor:
        status, value = await asyncio.wait_for(outcome(temporal_client, job_id), timeout=180)
        assert status == "succeeded", value
        assert value["restarted"] == [str(ha_vm)] and value["not_restarted"] == []
        assert value["stopped"] == [str(plain)]
        assert job_of(cloud, job_id).status is JobStatus.SUCCEEDED
        assert job_of(cloud, restart_job).status is JobStatus.SUCCEEDED
        assert problems_of(cloud, zone, survivor, ha_vm) == []
        assert problems_of(cloud, zone, survivor, plain) == []
    restarted_on = vm_of_id(cloud, ha_vm).host_id
    assert vm_of_id(cloud, ha_vm).state is VmState.RUNNING
    assert restarted_on not in (None, host_id)
    assert placements(survivor, zone, ha_vm) == [str(restarted_on)]
    holders = [h for h in zone.host_ids if cloud.load(Host, h).reservation_for(ha_vm)]
    assert holders == [restarted_on]
    assert vm_of_id(cloud, plain).state is VmState.STOPPED
    assert placements(survivor, zone, plain) == []
    assert not [h for h in zone.host_ids if cloud.load(Host, h).reservation_for(plain)]
    fenced = cloud.load(Host, host_id)
    assert fenced.ha_state is HaState.FENCED and fenced.reservations == {}
    # Each VM changed once since the declaration: stopped in the books, the HA VM started once.
    since = {
        vm_id: [
            e.vm_event
            for e in list(cloud.events.get(vm_id))[before[vm_id] :]
            if isinstance(e, VirtualMachine.Transitioned)
        ]
        for vm_id in (plain, ha_vm)
    }
    assert since[plain] == ["AgentReportStopped"], since[plain]
    assert since[ha_vm] == ["AgentReportStopped", "StartRequested", "OperationSucceeded"]
    assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
    assert Counter(event_names(cloud, restart_job))["Job.Succeeded"] == 1
