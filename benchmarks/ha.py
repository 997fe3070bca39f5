"""Host HA benchmark: a host carrying N HA-enabled VMs fails; how long until the last of them
runs elsewhere, against the same N restarts submitted as plain start jobs in the same run.

Both halves run on one Temporal dev server, one PostgreSQL and one control-plane worker (the
simulator hypervisor), in this process:

1. N HA VMs are deployed on one host (not timed).
2. Baseline: they are stopped, then started again by N start jobs, each handed to its VM's queue
   as the API hands them; timed from the first submission to the last VM Running.
3. HA: the host gets a BMC (pyghmi, on loopback, cipher suite 3) and HA with short kvm.ha
   settings; it then stops answering (every simulator call on it fails). Timed from that moment
   to the last VM Running on another host; the time to Fenced (failure detected, activity
   checked, powered off through the BMC and read back) is printed apart.

    .venv/bin/python benchmarks/ha.py [--vms 200]

The goal: HA time <= 1.2 x baseline + the fence time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.drivers.ipmi import BmcLogin, IpmiClient
from activities.drivers.out_of_band import BmcLogins, IpmiPowerControl
from activities.drivers.simulator import SimulatorDriver
from activities.job_queue import enqueue
from benchmarks.deploy import database_url
from domain import host_ha_operations, inventory
from domain.cloud import Cloud, postgres_env
from domain.deployment import virtual_machine_id_for
from domain.host import Host
from domain.host_ha import HaSettings, HaState
from domain.host_ha_operations import (
    CHECK_NOW_SIGNAL,
    MONITOR_WORKFLOW,
    HostHaMonitorInput,
    monitor_id,
)
from domain.ids import named_id
from domain.job_requests import (
    DeploymentOrder,
    DeployVirtualMachineRequest,
    JobAttribute,
    JobQueue,
    VmJobSubmission,
    VmOperation,
    handed_over,
)
from domain.virtual_machine import VirtualMachine, VmState
from domain.vm_requests import StartVmRequest, StopVmRequest
from tests.integration.drivers.test_baremetal_contract import PASSWORD, USER, BmcProcess
from workers.demo_cloud import DemoCloud, seed_demo_cloud
from workers.worker import build_worker, control_plane_activities

THREADS = 32
QUEUE = "bench-ha"
FAST = HaSettings(
    health_check_timeout=1,
    activity_check_timeout=2,
    activity_check_interval=1,
    activity_check_max_attempts=2,
    activity_check_failure_ratio=0.5,
    recover_failure_threshold=0,
    fence_timeout=1,
    monitor_interval=1,
)


async def until(check: Callable[[], bool], what: str, timeout: float = 1800) -> float:
    """Wait for `check` (polled every 0.2 s); the time it held first, from the monotonic clock."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.2)
    return time.monotonic()


def ha_offering(cloud: Cloud) -> UUID:
    return inventory.add_service_offering(
        cloud,
        named_id("service_offering", "Bench HA"),
        "Bench HA",
        display_text="1 vCPU, 1 GHz, 512 MiB, restarted by HA",
        cpu_count=1,
        cpu_speed_mhz=1000,
        memory_mib=512,
        ha_enabled=True,
    ).id


async def deploy_all(client: Client, zone: DemoCloud, offering: UUID, vms: int) -> list[UUID]:
    async def one(n: int) -> UUID:
        job_id = uuid.uuid4()
        order = DeploymentOrder(
            account_id=zone.admin_account_id,
            zone_id=zone.zone_id,
            service_offering_id=offering,
            template_id=zone.template_id,
            network_id=zone.network_id,
            name=f"ha-bench-{n}",
            display_name=f"ha-bench-{n}",
        )
        handle = await client.start_workflow(
            "DeployVirtualMachine",
            DeployVirtualMachineRequest(job_id=job_id, order=order, summary="benchmark"),
            id=str(job_id),
            task_queue=QUEUE,
        )
        await handle.result()
        return virtual_machine_id_for(job_id)

    return list(await asyncio.gather(*(one(n) for n in range(vms))))


async def hand_to_queues(
    client: Client, cloud: Cloud, zone: DemoCloud, vm_ids: list[UUID], operation: VmOperation
) -> None:
    """A start or stop job per VM, each into its VM's queue, as the API hands them."""

    def job(vm_id: UUID) -> tuple[JobQueue, VmJobSubmission]:
        model = StartVmRequest if operation is VmOperation.START else StopVmRequest
        request = model(
            job_id=uuid.uuid4(),
            vm_id=vm_id,
            account_id=zone.admin_account_id,
            summary=f"{operation.value} {vm_id} (benchmark)",
        )
        return handed_over(request, operation.job_type, zone.zone_id, [], operation.value)

    await asyncio.gather(*(enqueue(client, cloud, *job(vm_id), QUEUE) for vm_id in vm_ids))


def all_in(cloud: Cloud, vm_ids: list[UUID], state: VmState, not_on: UUID | None = None) -> bool:
    vms = [cloud.load(VirtualMachine, v) for v in vm_ids]
    return all(v.state is state and (not_on is None or v.host_id != not_on) for v in vms)


async def main(vms: int) -> None:
    temporal = Path(sys.executable).parent / "temporal"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal),
        search_attributes=[SearchAttributeKey.for_keyword(a.value) for a in JobAttribute],
        data_converter=pydantic_data_converter,
        ui=False,
    )
    url, drop = database_url()
    cloud = Cloud(env=postgres_env(url))
    bmc = BmcProcess(1)
    faults: list[dict[str, Any]] = []
    driver = SimulatorDriver(lambda: faults)
    power = IpmiPowerControl(
        BmcLogins(default=BmcLogin(USER, PASSWORD)),
        IpmiClient(cipher_suite=3),
        settle_timeout=10,
        poll_interval=0.1,
    )
    try:
        zone = seed_demo_cloud(cloud, "bench-key", host_cpu_count=256, host_memory_mib=512 * 1024)
        client = env.client
        worker = build_worker(
            client,
            QUEUE,
            control_plane_activities(cloud, {driver.hypervisor: driver}, power_control=power),
            threads=THREADS,
        )
        offering = ha_offering(cloud)
        async with worker:
            vm_ids = await deploy_all(client, zone, offering, vms)
            failing = cloud.load(VirtualMachine, vm_ids[0]).host_id
            assert failing is not None
            assert all(cloud.load(VirtualMachine, v).host_id == failing for v in vm_ids)

            # Baseline: the same VMs restarted by plain start jobs.
            await hand_to_queues(client, cloud, zone, vm_ids, VmOperation.STOP)
            await until(lambda: all_in(cloud, vm_ids, VmState.STOPPED), "all stopped")
            began = time.monotonic()
            await hand_to_queues(client, cloud, zone, vm_ids, VmOperation.START)
            baseline = await until(lambda: all_in(cloud, vm_ids, VmState.RUNNING), "restarted")
            baseline -= began

            # HA: a BMC for the host, HA on, then the host dies.
            port = bmc.ports[0]
            bmc.command("power", port, "on")

            class Tie:
                def saw(self, seen_port: int, event: tuple[str, ...]) -> None:
                    if seen_port == port and event[0] in ("power_off", "reset", "cycle"):
                        driver.power_off_host(str(failing))

            bmc.listeners.append(Tie())
            host = cloud.load(Host, failing)
            host.configure_out_of_band("ipmitool", f"127.0.0.1:{port}", True, command_id="oobm")
            cloud.save(host)
            host_ha_operations.configure_cluster(cloud, host.cluster_id, FAST, "bench-ha")
            host_ha_operations.set_host_ha(cloud, failing, True, datetime.now(UTC), "bench-on")
            await client.start_workflow(
                MONITOR_WORKFLOW,
                HostHaMonitorInput(cluster_id=host.cluster_id, account_id=zone.admin_account_id),
                id=monitor_id(host.cluster_id),
                task_queue=QUEUE,
                start_signal=CHECK_NOW_SIGNAL,
            )
            await until(lambda: cloud.load(Host, failing).ha_state is HaState.AVAILABLE, "HA on")
            failed_at = time.monotonic()
            faults.append(
                {
                    "operation": "*",
                    "action": "fail",
                    "host_id": str(failing),
                    "error_code": 534,
                    "message": "benchmark: the host is dead",
                    "delay_seconds": 0,
                }
            )
            fenced = await until(
                lambda: cloud.load(Host, failing).ha_state is HaState.FENCED, "fenced"
            )
            restarted = await until(
                lambda: all_in(cloud, vm_ids, VmState.RUNNING, not_on=failing), "HA restarts"
            )
    finally:
        bmc.stop()
        cloud.close()
        drop()
        await env.shutdown()

    fence = fenced - failed_at
    ha = restarted - failed_at
    print(f"\n{vms} HA-enabled VMs on one host; simulator; {THREADS} activity threads\n")
    print(f"{'run':58} {'seconds':>8}")
    print(
        f"{'baseline: ' + str(vms) + ' plain start jobs, submitted to Running':58} {baseline:8.2f}"
    )
    print(f"{'HA: host failure to Fenced (detect, check, power off)':58} {fence:8.2f}")
    print(f"{'HA: host failure to the last VM Running elsewhere':58} {ha:8.2f}")
    print(f"{'HA: Fenced to the last VM Running elsewhere':58} {ha - fence:8.2f}")
    print(
        f"\nratio (HA - fence) / baseline: {(ha - fence) / baseline:.2f}x "
        f"(goal <= 1.2x); HA / (1.2 x baseline + fence): {ha / (1.2 * baseline + fence):.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.vms))
