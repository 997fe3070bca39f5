"""Host maintenance as a saga, against a real PostgreSQL and a real Temporal dev server: a
failure at each step puts the host back as it was, and every step run twice (or lost after its
work) duplicates nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from temporalio.client import Client

from domain.cloud import Cloud
from domain.host import ResourceState
from domain.host_maintenance import PREPARE_MAINTENANCE_JOB
from domain.job import Job, JobStatus
from domain.virtual_machine import VirtualMachine, VmState
from tests.integration.host_jobs import (
    STEPS,
    busy_host,
    consistent,
    evacuations_ended,
    ha_offering,
    host,
    prepare,
    prepare_without_faults,
    vm,
)
from tests.integration.vm_jobs import fail_in
from tests.support import crash_after_first, run_twice, running_worker
from tests.support import seed_zone as seed


@pytest.mark.parametrize("step", STEPS)
async def test_a_failure_at_each_maintenance_step_puts_the_host_back_as_it_was(
    temporal_client: Client, cloud: Cloud, step: str
) -> None:
    zone = seed(cloud)
    around = fail_in(PREPARE_MAINTENANCE_JOB, step)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        host_id, vm_ids = await busy_host(harness, zone, ha_offering(cloud))
        job_id, status, _ = await prepare(harness, host_id, stopped=[vm_ids[2]])
        assert status == "ended"
        job = cloud.load(Job, job_id)
        assert job.status is JobStatus.FAILED and "injected failure" in (job.error_text or "")
        assert "could not undo" not in (job.error_text or "")
        assert host(cloud, host_id).resource_state is ResourceState.ENABLED
        # Whatever moved before the failure stays moved; nothing is held twice or lost.
        await evacuations_ended(cloud, job_id, vm_ids)
        consistent(cloud, zone, harness, vm_ids)
        for vm_id in vm_ids[:2]:
            assert vm(cloud, vm_id).state is VmState.RUNNING
        # The host serves again at once: another maintenance succeeds.
        harness_ok = await prepare_without_faults(temporal_client, cloud, host_id)
        assert harness_ok == "Maintenance"


@pytest.mark.parametrize("around", [run_twice, crash_after_first()], ids=["twice", "crash"])
async def test_every_maintenance_step_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        host_id, vm_ids = await busy_host(harness, zone, ha_offering(cloud))
        job_id, status, value = await prepare(harness, host_id, stopped=[vm_ids[2]])
        assert status == "succeeded", value
        consistent(cloud, zone, harness, vm_ids)
    names = Counter(type(e).__qualname__ for e in cloud.events.get(host_id))
    assert names["Host.MaintenancePrepared"] == 1
    assert names["Host.MaintenanceEntered"] == 1
    assert Counter(type(e).__qualname__ for e in cloud.events.get(job_id))["Job.Succeeded"] == 1
    for vm_id in vm_ids[:2]:
        transitions = Counter(
            e.vm_event
            for e in cloud.events.get(vm_id)
            if isinstance(e, VirtualMachine.Transitioned)
        )
        assert transitions["MigrationRequested"] == 1, vm(cloud, vm_id).name
    forgotten = [e for e in cloud.events.get(vm_ids[2]) if "LastHostForgotten" in type(e).__name__]
    assert len(forgotten) == 1
