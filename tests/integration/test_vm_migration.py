"""Live migration of a running VM to another host of its cluster, as a job in the VM's queue,
against a real PostgreSQL and a real Temporal dev server."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from temporalio.client import Client

from activities.drivers.hypervisor import (
    DriverTimeoutError,
    HostRef,
    UnsupportedOperationError,
    VirtualMachineInfo,
)
from activities.drivers.simulator import SimulatorDriver
from domain.cloud import Cloud
from domain.host import Host
from domain.job import JobStatus
from domain.job_requests import VmOperation
from domain.virtual_machine import VirtualMachine, VmState
from tests.integration.vm_jobs import (
    cluster_of,
    deploy,
    fail_in,
    job_of,
    migrate,
    problems_of,
    vm,
)
from tests.support import (
    Harness,
    crash_after_first,
    event_names,
    outcome,
    run_twice,
    running_worker,
)
from tests.support import seed_zone as seed
from workers.demo_cloud import DemoCloud

MIGRATE = VmOperation.MIGRATE
#: Every step of a migration that changes the world, in the order the workflow runs them.
STEPS = [
    "vm.begin",
    "vm.plan_migration",
    "vm.reserve_capacity",
    "hypervisor.migrate_vm",
    "vm.complete_migration",
]


def holders(cloud: Cloud, zone: DemoCloud, vm_id: uuid.UUID) -> list[uuid.UUID]:
    """The hosts whose books hold room for the VM."""
    return [h for h in zone.host_ids if cloud.load(Host, h).reservation_for(vm_id) is not None]


async def running_vm(harness: Harness, zone: DemoCloud, name: str) -> uuid.UUID:
    deploy_job, vm_id = await deploy(harness, zone, name)
    assert (await outcome(harness.client, deploy_job))[0] == "succeeded"
    return vm_id


async def test_migrate_moves_the_vm_and_its_capacity_within_its_cluster(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id = await running_vm(harness, zone, "mover")
        source = vm(cloud, vm_id).host_id
        assert source is not None

        # The planner chooses: another host of the same cluster.
        job_id, status, value = await migrate(harness, zone, vm_id)
        assert status == "succeeded", value
        target = vm(cloud, vm_id).host_id
        assert target is not None and target != source
        assert cluster_of(cloud, target) == cluster_of(cloud, source)
        assert value["host_id"] == str(target) and value["source_host_id"] == str(source)
        assert vm(cloud, vm_id).state is VmState.RUNNING
        assert holders(cloud, zone, vm_id) == [target]
        assert [v.vm_id for v in harness.driver.vms_on(str(source))] == []
        assert problems_of(cloud, zone, harness, vm_id) == []
        assert job_of(cloud, job_id).job_type == "MigrateVirtualMachine"

        # Asked for by id: back to where it came from.
        _, status, value = await migrate(harness, zone, vm_id, source)
        assert status == "succeeded", value
        assert vm(cloud, vm_id).host_id == source
        assert holders(cloud, zone, vm_id) == [source]
        assert problems_of(cloud, zone, harness, vm_id) == []

        # The host it is on is refused (431); nothing moves. (A host of another cluster is a
        # migration with storage: test_vm_storage_migration.)
        job_id, status, _ = await migrate(harness, zone, vm_id, source)
        assert status == "ended"
        job = job_of(cloud, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 431, job.error_text
        assert "already runs on host" in (job.error_text or "")
        assert vm(cloud, vm_id).state is VmState.RUNNING
        assert vm(cloud, vm_id).host_id == source
        assert problems_of(cloud, zone, harness, vm_id) == []
    transitions = [
        e.vm_event for e in cloud.events.get(vm_id) if isinstance(e, VirtualMachine.Transitioned)
    ]
    assert transitions.count("MigrationRequested") == 3
    assert transitions.count("OperationFailed") == 1


@pytest.mark.parametrize("step", STEPS)
async def test_a_failure_at_each_migration_step_leaves_the_vm_running_on_its_source(
    temporal_client: Client, cloud: Cloud, step: str
) -> None:
    zone = seed(cloud)
    around = fail_in(MIGRATE.job_type, step, once=True)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "unmoved")
        source = vm(cloud, vm_id).host_id
        job_id, status, _ = await migrate(harness, zone, vm_id)
        assert status == "ended"
        job = job_of(cloud, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 530
        assert "injected failure" in (job.error_text or "")
        assert "could not undo" not in (job.error_text or "")
        assert vm(cloud, vm_id).state is VmState.RUNNING
        assert vm(cloud, vm_id).host_id == source
        # Capacity on the source only, the VM on the source's hypervisor only.
        assert holders(cloud, zone, vm_id) == [source]
        assert problems_of(cloud, zone, harness, vm_id) == []


@pytest.mark.parametrize("around", [run_twice, crash_after_first()], ids=["twice", "crash"])
async def test_every_migration_step_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id = await running_vm(harness, zone, "twice")
        source = vm(cloud, vm_id).host_id
        for _ in range(2):  # there and back
            job_id, status, value = await migrate(harness, zone, vm_id)
            assert status == "succeeded", value
            assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
            assert problems_of(cloud, zone, harness, vm_id) == []
        assert vm(cloud, vm_id).host_id == source
    capacity = Counter(
        type(e).__qualname__
        for host_id in zone.host_ids
        for e in cloud.events.get(host_id)
        if getattr(e, "vm_id", None) == vm_id
    )
    # The deployment and each migration's target reserved once; each source released once.
    assert capacity["Host.CapacityReserved"] == 3
    assert capacity["Host.CapacityReleased"] == 2
    transitions = Counter(
        e.vm_event for e in cloud.events.get(vm_id) if isinstance(e, VirtualMachine.Transitioned)
    )
    assert transitions["MigrationRequested"] == 2
    assert transitions["OperationSucceeded"] == 3  # the deployment's start, two migrations


class NoLiveMigration(SimulatorDriver):
    """A backend that cannot live-migrate at all (bare metal, say)."""

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        raise UnsupportedOperationError(f"{self.hypervisor} cannot live-migrate VM {vm_id}")


class SlowToAnswer(SimulatorDriver):
    """Moves the VM, then times out before saying so: only asking the backend tells."""

    def migrate_vm(
        self, source_host: HostRef, target_host: HostRef, vm_id: str
    ) -> VirtualMachineInfo:
        super().migrate_vm(source_host, target_host, vm_id)
        raise DriverTimeoutError("the migration did not answer in time")


async def test_a_backend_that_cannot_migrate_fails_the_job_with_432(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud, driver=NoLiveMigration()) as harness:
        vm_id = await running_vm(harness, zone, "pinned")
        source = vm(cloud, vm_id).host_id
        job_id, status, _ = await migrate(harness, zone, vm_id)
        assert status == "ended"
        job = job_of(cloud, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 432
        assert "cannot live-migrate" in (job.error_text or "")
        assert vm(cloud, vm_id).state is VmState.RUNNING and vm(cloud, vm_id).host_id == source
        assert problems_of(cloud, zone, harness, vm_id) == []


async def test_a_timed_out_migration_asks_the_backend_and_counts_a_vm_found_on_the_target(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud, driver=SlowToAnswer()) as harness:
        vm_id = await running_vm(harness, zone, "slow")
        source = vm(cloud, vm_id).host_id
        _, status, value = await migrate(harness, zone, vm_id)
        assert status == "succeeded", value
        assert vm(cloud, vm_id).host_id not in (None, source)
        assert problems_of(cloud, zone, harness, vm_id) == []
