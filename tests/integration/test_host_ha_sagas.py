"""Host HA as sagas deserve, on a real Temporal server and PostgreSQL: the HA job failing at
each step leaves no VM half-way (stopped in the books or restarted, never both, never twice)
and declaring the host again restarts what is left; fencing and restarting with every step run
twice, or lost after its work, duplicates nothing."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from domain import host_ha_operations
from domain.cloud import Cloud
from domain.host import Host
from domain.job import JobStatus
from domain.virtual_machine import TRANSITIONAL_STATES, VirtualMachine, VmState
from tests.integration.drivers.test_baremetal_contract import BmcProcess
from tests.integration.test_host_ha import (
    FAST,
    PowerTie,
    dead,
    declare,
    ha_states,
    host_with_vms,
    placements,
    power_control,
    running_elsewhere,
    watch,
)
from tests.integration.vm_jobs import job_of, problems_of, vm
from tests.support import (
    crash_after_first,
    run_twice,
    running_worker,
    seed_zone,
    wait_until,
)

#: The HA job's steps, in the order they run.
RESTART_STEPS = [
    "ha.begin_restart",
    "ha.stop_vms",
    "ha.submit_restarts",
    "host.await_evacuation",
    "ha.complete_restart",
]


@pytest.fixture(scope="module")
def bmc() -> Iterator[BmcProcess]:
    process = BmcProcess(1)
    yield process
    process.stop()


def failing_where_told(plan: dict[str, str]) -> Callable[[str, Callable[[], Any]], Any]:
    """Fails the step `plan[job id]` of that job only, once: one worker serves every case."""

    def around(name: str, call: Callable[[], Any]) -> Any:
        job_id = activity.info().workflow_id or ""
        if plan.get(job_id) == name:
            del plan[job_id]
            raise ApplicationError(
                f"injected failure at {name}", 530, type="InjectedFailure", non_retryable=True
            )
        return call()

    return around


async def settled(cloud: Cloud, vm_ids: list[UUID]) -> None:
    """Every start job the HA job handed over has ended (a failed HA job does not wait)."""

    async def moving() -> list[str]:
        return [str(v) for v in vm_ids if vm(cloud, v).state in TRANSITIONAL_STATES]

    await wait_until(moving, lambda left: left == [], timeout=60, what="the VMs to settle")


async def test_the_ha_job_failing_at_each_step_leaves_no_vm_half_way_and_a_rerun_finishes(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    plan: dict[str, str] = {}
    around = failing_where_told(plan)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        host_id, plain, ha_vm = await host_with_vms(harness, zone)
        host_ha_operations.set_host_ha(cloud, host_id, True, datetime.now(UTC), "test/ha-on")
        harness.driver.power_off_host(str(host_id))  # the operator pulled the plug
        for step in RESTART_STEPS:
            job_id = uuid.uuid4()
            plan[str(job_id)] = step
            assert (await declare(harness, zone, host_id, job_id))[0] == "ended", step
            job = job_of(cloud, job_id)
            assert job.status is JobStatus.FAILED and job.error_code == 530, step
            await settled(cloud, [plain, ha_vm])
            # Never running in two places; the books follow what happened.
            assert len(placements(harness, zone, ha_vm)) <= 1, step
            for vm_id in (plain, ha_vm):
                found = vm(cloud, vm_id)
                if found.host_id == host_id:
                    # Not yet stopped in the books: still held there, on the dead host only.
                    assert found.state is VmState.RUNNING, step
                    assert cloud.load(Host, host_id).reservation_for(vm_id) is not None
                else:
                    assert problems_of(cloud, zone, harness, vm_id) == [], step
        assert plan == {}  # every failure was injected
        # Declared again: what is left is restarted.
        assert (await declare(harness, zone, host_id, uuid.uuid4()))[0] == "succeeded"
        await settled(cloud, [plain, ha_vm])
    assert vm(cloud, ha_vm).state is VmState.RUNNING and vm(cloud, ha_vm).host_id != host_id
    assert vm(cloud, plain).state is VmState.STOPPED
    for vm_id in (plain, ha_vm):
        assert problems_of(cloud, zone, harness, vm_id) == []
    assert cloud.load(Host, host_id).reservations == {}


@pytest.mark.parametrize("around", [run_twice, crash_after_first()], ids=["twice", "crash"])
async def test_fencing_and_restarting_with_every_step_repeated_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, bmc: BmcProcess, around: Any
) -> None:
    zone = seed_zone(cloud)
    port = bmc.ports[0]
    bmc.command("power", port, "on")
    control = power_control()
    async with running_worker(
        temporal_client, cloud, around=around, power_control=control
    ) as harness:
        host_id, plain, ha_vm = await host_with_vms(harness, zone)
        tie = PowerTie(port, harness.driver, host_id)
        bmc.listeners.append(tie)
        try:
            await watch(
                harness,
                zone,
                host_id,
                f"127.0.0.1:{port}",
                settings=FAST.model_copy(update={"recover_failure_threshold": 0}),
            )
            dead(harness, host_id)
            await running_elsewhere(cloud, ha_vm, host_id)
        finally:
            bmc.listeners.remove(tie)
    assert ha_states(cloud, host_id)[-5:] == [
        "Available",
        "Suspect",
        "Checking",
        "Fencing",
        "Fenced",
    ]
    assert placements(harness, zone, ha_vm) == [str(vm(cloud, ha_vm).host_id)]
    assert vm(cloud, plain).state is VmState.STOPPED
    transitions = Counter(
        e.vm_event for e in cloud.events.get(ha_vm) if isinstance(e, VirtualMachine.Transitioned)
    )
    # Deployed (started once), stopped once by the fence, restarted once.
    assert transitions["AgentReportStopped"] == 1
    assert transitions["StartRequested"] == 2
    assert ha_states(cloud, host_id).count("Fenced") == 1  # fenced once, however retried
