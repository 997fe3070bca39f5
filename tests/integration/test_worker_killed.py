"""A worker killed in the middle of a deployment: the job finishes on the next worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.drivers.simulator import SimulatorDriver
from activities.simulator_configuration import SimulatorConfigurationActivities
from domain.cloud import Cloud
from domain.host import Host
from domain.job import Job, JobStatus
from domain.job_requests import SimulatorFaultChange
from domain.virtual_machine import VmState
from tests.support import Harness, event_names, job_of, running_worker, seed_zone, vm_of


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
        for _ in range(300):
            job = cloud.find(Job, job_id)
            if job is not None and (job.step or "").startswith("starting VM"):
                break
            assert doomed.poll() is None, doomed.stderr.read() if doomed.stderr else b""
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the deployment never reached the hypervisor")
        await asyncio.sleep(1)  # inside the 30 s simulated boot
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
