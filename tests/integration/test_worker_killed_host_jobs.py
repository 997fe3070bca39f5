"""A worker killed in the middle of a host's job: a maintenance emptying the host, an HA restart
of a fenced host's VMs, a fence under way. The job finishes on the next worker, each step once.
(Split from test_worker_killed.py so the two files run on different xdist workers.)"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client

from domain import host_ha_operations, inventory
from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.host import Host, ResourceState
from domain.host_ha import HaState
from domain.host_ha_operations import RESTART_JOB, RestartVmsRequest, restart_job_id
from domain.host_maintenance import (
    PREPARE_MAINTENANCE_JOB,
    HostMaintenanceRequest,
    evacuation_job_id,
)
from domain.job import JobStatus
from domain.virtual_machine import VirtualMachine, VmState
from tests.integration.drivers.test_baremetal_contract import BmcProcess
from tests.integration.test_host_ha import (
    FAST,
    PowerTie,
    dead,
    ha_job_started_by,
    ha_states,
    host_with_vms,
    placements,
    power_control,
    running_elsewhere,
    watch,
)
from tests.integration.test_worker_killed import (
    activity_started,
    attempts_of,
    doomed_worker,
    slowed,
    start_worker_process,
    vm_of_id,
)
from tests.integration.vm_jobs import deploy, problems_of
from tests.support import (
    Harness,
    event_names,
    job_of,
    outcome,
    running_worker,
    seed_zone,
    started,
    wait_until,
)
from workers.demo_cloud import SIMULATOR, TIB, DemoCloud


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

    job_id = uuid.uuid4()
    migrate_job = evacuation_job_id(job_id, vm_id, 1)
    with (
        slowed(cloud, zone, "migrate_vm"),
        doomed_worker(temporal_client, database_url, task_queue) as doomed,
    ):
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

    job_id = uuid.uuid4()
    restart_job = restart_job_id(job_id, ha_vm)
    with (
        slowed(cloud, zone, "start_vm"),
        doomed_worker(temporal_client, database_url, task_queue) as doomed,
    ):
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


@pytest.fixture(scope="module")
def bmc() -> Iterator[BmcProcess]:
    process = BmcProcess(1)  # one machine: the host fenced
    yield process
    process.stop()


def zone_with_an_agent_cluster(cloud: Cloud, agent_queue: str) -> DemoCloud:
    """A zone whose new VMs all go to a third cluster of two simulator hosts and a pool, served
    by an agent on `agent_queue` (its hypervisor calls and its hosts' BMCs): the two seeded
    clusters are disabled for new VMs. The zone returned lists that cluster first, its two hosts
    before the others and its pool first (in place of the second seeded one, which nothing
    here uses), so the checks of vm_jobs and test_host_ha look there."""
    zone = seed_zone(cloud)
    name = f"agent-{uuid.uuid4().hex[:8]}"
    cluster = inventory.add_cluster(
        cloud,
        uuid.uuid4(),
        zone.pod_id,
        name,
        SIMULATOR,
        cpu_overprovisioning=4.0,
        agent_task_queue=agent_queue,
    )
    hosts = tuple(
        inventory.add_host(
            cloud,
            uuid.uuid4(),
            cluster.id,
            f"{name}-host-{n}",
            address=f"10.0.9.{n}",
            cpu_count=16,
            cpu_speed_mhz=2400,
            memory_mib=65536,
        ).id
        for n in (1, 2)
    )
    pool = inventory.add_cluster_storage(
        cloud,
        uuid.uuid4(),
        cluster.id,
        f"{name}-primary",
        path=f"/mnt/primary/{name}",
        capacity_bytes=4 * TIB,
        overprovisioning=2.0,
    )

    def disable_the_seeded_clusters(d: Decision) -> None:
        for cluster_id in zone.cluster_ids:
            d.get(Cluster, cluster_id).change_allocation_state(
                "Disabled", f"test/{cluster_id}/disabled"
            )

    cloud.decide(disable_the_seeded_clusters)
    return replace(
        zone,
        cluster_ids=(cluster.id, zone.cluster_ids[0]),
        host_ids=(*hosts, *zone.host_ids),
        pool_ids=(pool.id, zone.pool_ids[0]),
    )


class HeldAtTheBmc:
    """The agent's `oobm.send_power_action` does its work at the BMC, then is held (heartbeating,
    so Temporal does not take its worker for dead) before it answers, until the test releases
    it: the power action in progress, the machine already off. `seconds` only bounds the hold,
    so a test that fails early does not hang its worker."""

    def __init__(self, seconds: float = 120.0) -> None:
        self.seconds = seconds
        self.job_ids: list[str] = []
        self.released = threading.Event()

    def __call__(self, name: str, call: Callable[[], Any]) -> Any:
        result = call()
        if name == "oobm.send_power_action" and not self.released.is_set():
            self.job_ids.append(activity.info().workflow_id or "")
            deadline = time.monotonic() + self.seconds
            while not self.released.wait(1.0) and time.monotonic() < deadline:
                activity.heartbeat("held by the test")
        return result


async def test_a_worker_killed_mid_fence_leaves_a_fence_and_an_ha_job_that_finish(
    temporal_client: Client, cloud: Cloud, database_url: str, bmc: BmcProcess
) -> None:
    """A dead host of a cluster with an agent: the cluster's HA monitor and the fence it starts
    (a power OFF job) live on the killed control-plane worker, which dies while the fence's
    power action is under way at the agent (the BMC has powered the machine off; the action
    has not answered yet). The next worker finishes the fence and the HA job, each once: the
    host Fenced once, one power_off at its BMC, the HA VM running in one place elsewhere, the
    plain VM Stopped, nothing held on the fenced host.

    The control-plane worker is the killed one because a `stratus worker` process cannot hold
    BMC logins: its settings (workers/settings.py, STRATUS_* variables) have none, and
    `run_worker_until_cancelled` builds its activities with `IpmiPowerControl(BmcLogins())`, so
    a power action it ran would fail for want of a login. Logins live with a cluster's agent
    (`[clusters.oobm]` of the agent's file), whose queue takes the cluster's power actions and
    hypervisor calls; here that agent is in-process, with the BMC login (cipher suite 3)."""
    agent_queue = f"agent-{uuid.uuid4().hex[:8]}"
    zone = zone_with_an_agent_cluster(cloud, agent_queue)
    task_queue = f"kill-{uuid.uuid4().hex[:8]}"
    port = bmc.ports[0]
    bmc.command("power", port, "on")
    held = HeldAtTheBmc()
    # Fenced on the first activity check that finds nothing (no recovery's power cycle first).
    settings = FAST.model_copy(update={"recover_failure_threshold": 0})
    async with running_worker(
        temporal_client, cloud, task_queue=agent_queue, power_control=power_control(), around=held
    ) as agent:
        async with running_worker(
            temporal_client, cloud, task_queue=task_queue, driver=agent.driver
        ) as setup:
            host_id, plain, ha_vm = await host_with_vms(setup, zone)
        assert host_id in zone.host_ids[:2]  # on the agent's cluster
        cluster_id = cloud.load(Host, host_id).cluster_id
        tie = PowerTie(port, agent.driver, host_id)
        bmc.listeners.append(tie)
        address = temporal_client.service_client.config.target_host
        doomed = start_worker_process(database_url, address, task_queue)
        try:
            try:
                # Only the doomed process serves the control-plane queue: the monitor is its.
                starter = Harness(temporal_client, cloud, task_queue, agent.driver)
                await watch(starter, zone, host_id, f"127.0.0.1:{port}", settings)

                async def host() -> Host:
                    assert doomed.poll() is None, doomed.stderr.read() if doomed.stderr else b""
                    return cloud.load(Host, host_id)

                await wait_until(
                    host,
                    lambda h: h.ha_state is HaState.AVAILABLE,
                    timeout=60,
                    what="the host watched",
                )
                mark = bmc.mark(port)
                before = {vm_id: len(list(cloud.events.get(vm_id))) for vm_id in (plain, ha_vm)}
                host_events = len(list(cloud.events.get(host_id)))
                dead(agent, host_id)

                def fences() -> list[str]:
                    assert doomed.poll() is None, doomed.stderr.read() if doomed.stderr else b""
                    return list(held.job_ids)

                (fence_job,) = await wait_until(
                    fences, timeout=60, what="the fence's power OFF at the host's BMC"
                )
                fence = temporal_client.get_workflow_handle(fence_job)
                await activity_started(fence, "oobm.send_power_action", doomed)
            finally:
                doomed.send_signal(signal.SIGKILL)
                doomed.wait(timeout=30)
                held.released.set()

            async with running_worker(
                temporal_client, cloud, task_queue=task_queue, driver=agent.driver
            ) as survivor:

                async def fenced() -> Host:
                    return cloud.load(Host, host_id)

                await wait_until(
                    fenced,
                    lambda h: h.ha_state is HaState.FENCED,
                    timeout=120,
                    what="the host fenced",
                )
                await running_elsewhere(cloud, ha_vm, host_id)
                ha_job = await ha_job_started_by(temporal_client, cluster_id)
                status, value = await asyncio.wait_for(
                    outcome(temporal_client, ha_job), timeout=180
                )
                assert status == "succeeded", value
                assert value["restarted"] == [str(ha_vm)] and value["not_restarted"] == []
                assert value["stopped"] == [str(plain)]
                assert problems_of(cloud, zone, survivor, ha_vm) == []
                assert problems_of(cloud, zone, survivor, plain) == []
        finally:
            bmc.listeners.remove(tie)
    # Fenced once: one power job claimed the BMC, recorded the machine off and succeeded; one
    # power_off reached the machine; the host moved into Fenced once.
    assert bmc.since(port, mark) == [("power_off",)]
    # The power action under way when its job's worker died answered once: never sent again.
    assert await attempts_of(fence, "oobm.send_power_action") == [1]
    fence_id = uuid.UUID(fence_job)
    assert job_of(cloud, fence_id).status is JobStatus.SUCCEEDED
    assert Counter(event_names(cloud, fence_id))["Job.Succeeded"] == 1
    since = list(cloud.events.get(host_id))[host_events:]
    claims = [
        getattr(e, "job_id", None)
        for e in since
        if type(e).__qualname__ == "Host.PowerActionsClaimed"
    ]
    assert claims == [fence_id]
    recorded = [
        (getattr(e, "action", None), getattr(e, "power_state", None))
        for e in since
        if type(e).__qualname__ == "Host.PowerActionRecorded"
    ]
    assert recorded == [("OFF", "Off")]
    assert ha_states(cloud, host_id)[-2:] == ["Fencing", "Fenced"]
    assert ha_states(cloud, host_id).count("Fenced") == 1
    fenced_host = cloud.load(Host, host_id)
    assert fenced_host.ha_state is HaState.FENCED and fenced_host.reservations == {}
    # The HA VM runs once, on another host of the cluster (the simulator's view and the books).
    restarted_on = vm_of_id(cloud, ha_vm).host_id
    assert vm_of_id(cloud, ha_vm).state is VmState.RUNNING
    assert restarted_on not in (None, host_id) and restarted_on in zone.host_ids[:2]
    assert placements(survivor, zone, ha_vm) == [str(restarted_on)]
    holders = [h for h in zone.host_ids if cloud.load(Host, h).reservation_for(ha_vm)]
    assert holders == [restarted_on]
    # The plain VM is Stopped, on no hypervisor, holding no room.
    assert vm_of_id(cloud, plain).state is VmState.STOPPED
    assert placements(survivor, zone, plain) == []
    assert not [h for h in zone.host_ids if cloud.load(Host, h).reservation_for(plain)]
    assert agent.driver.vms_on(str(host_id)) == []
    # Each VM changed once since the host died: stopped in the books, the HA VM started once.
    changes = {
        vm_id: [
            e.vm_event
            for e in list(cloud.events.get(vm_id))[before[vm_id] :]
            if isinstance(e, VirtualMachine.Transitioned)
        ]
        for vm_id in (plain, ha_vm)
    }
    assert changes[plain] == ["AgentReportStopped"], changes[plain]
    assert changes[ha_vm] == ["AgentReportStopped", "StartRequested", "OperationSucceeded"]
    assert Counter(event_names(cloud, ha_job))["Job.Succeeded"] == 1
