"""Migration with storage: a running VM moved to a host of another cluster, its disks to that
cluster's primary storage, as a job in the VM's queue, against a real PostgreSQL and a real
Temporal dev server (simulator hypervisor)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.drivers.hypervisor import RefusesStorageMigration
from activities.drivers.simulator import SimulatorDriver
from domain.cloud import Cloud
from domain.host import Host
from domain.job import JobStatus
from domain.job_requests import VmOperation, VolumeOperation
from domain.storage import PrimaryStorage
from domain.virtual_machine import VmState
from domain.volume import Volume
from tests.integration.vm_jobs import cluster_of, deploy, job_of, migrate, problems_of, vm
from tests.integration.volume_jobs import create_volume, run_volume_job, volume_problems
from tests.support import (
    Harness,
    crash_after_first,
    event_names,
    outcome,
    run_twice,
    running_worker,
    seed_zone,
)
from workers.demo_cloud import DemoCloud

MIGRATE = VmOperation.MIGRATE
#: The steps of a migration with storage that change the world, in the order they run.
STEPS = [
    "vm.plan_migration",
    "vm.reserve_capacity",
    "vm.reserve_storage",
    "hypervisor.migrate_vm_with_storage",
    "vm.complete_migration",
]


def host_elsewhere(cloud: Cloud, zone: DemoCloud, vm_id: uuid.UUID) -> uuid.UUID:
    home = cluster_of(cloud, vm(cloud, vm_id).host_id)
    return next(h for h in zone.host_ids if cluster_of(cloud, h) != home)


def pool_of_cluster(cloud: Cloud, zone: DemoCloud, cluster_id: uuid.UUID) -> uuid.UUID:
    return next(p for p in zone.pool_ids if cloud.load(PrimaryStorage, p).cluster_id == cluster_id)


def problems(
    cloud: Cloud, zone: DemoCloud, harness: Harness, vm_id: uuid.UUID, disks: Sequence[uuid.UUID]
) -> list[str]:
    """The VM's and each disk's books against the simulator: each disk Ready with its room held
    by its own pool only, and its bytes there only, on a pool its VM's cluster reaches."""
    found = problems_of(cloud, zone, harness, vm_id)
    for disk in disks[1:]:  # the root disk has no device reservation of its own
        found += [f"disk {disk}: {p}" for p in volume_problems(cloud, zone, harness, disk)]
    cluster = cluster_of(cloud, vm(cloud, vm_id).host_id)
    for disk in disks:
        pool_id = cloud.load(Volume, disk).pool_id
        held = [p for p in zone.pool_ids if str(disk) in cloud.load(PrimaryStorage, p).allocations]
        on_driver = [
            p
            for p in zone.pool_ids
            for d in harness.driver.volumes_on(str(p))
            if d.volume_id == str(disk)
        ]
        if held != [pool_id] or on_driver != [pool_id]:
            found.append(f"disk {disk} on {pool_id}: room held on {held}, bytes on {on_driver}")
        assert pool_id is not None
        if cloud.load(PrimaryStorage, pool_id).cluster_id != cluster:
            found.append(f"disk {disk} on pool {pool_id}, which the VM's cluster cannot reach")
    return found


async def vm_with_a_data_disk(harness: Harness, zone: DemoCloud, name: str) -> list[uuid.UUID]:
    """A running VM and its disks: [vm id, root volume id, data volume id]."""
    deploy_job, vm_id = await deploy(harness, zone, name)
    assert (await outcome(harness.client, deploy_job))[0] == "succeeded"
    data = await create_volume(harness, zone, f"{name}-data")
    _, status, value = await run_volume_job(
        harness, zone, data, VolumeOperation.ATTACH, vm_id=vm_id
    )
    assert status == "succeeded", value
    return [vm_id, vm(harness.cloud, vm_id).root_volume_id, data]


async def test_migrate_to_another_cluster_moves_the_vm_and_its_disks_to_that_clusters_storage(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id, *disks = await vm_with_a_data_disk(harness, zone, "traveller")
        source = vm(cloud, vm_id).host_id
        assert source is not None
        target = host_elsewhere(cloud, zone, vm_id)

        job_id, status, value = await migrate(harness, zone, vm_id, target)
        assert status == "succeeded", value
        assert vm(cloud, vm_id).state is VmState.RUNNING and vm(cloud, vm_id).host_id == target
        there = pool_of_cluster(cloud, zone, cluster_of(cloud, target))
        assert [cloud.load(Volume, d).pool_id for d in disks] == [there, there]
        assert value["host_id"] == str(target) and value["source_host_id"] == str(source)
        assert problems(cloud, zone, harness, vm_id, disks) == []
        assert job_of(cloud, job_id).job_type == "MigrateVirtualMachine"

        # And back with its disks, asked for by the host it came from.
        _, status, value = await migrate(harness, zone, vm_id, source)
        assert status == "succeeded", value
        here = pool_of_cluster(cloud, zone, cluster_of(cloud, source))
        assert vm(cloud, vm_id).host_id == source
        assert [cloud.load(Volume, d).pool_id for d in disks] == [here, here]
        assert problems(cloud, zone, harness, vm_id, disks) == []
    moved = Counter(type(e).__qualname__ for d in disks for e in cloud.events.get(d))
    assert moved["Volume.Migrated"] == 4  # two disks, there and back, once each


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


async def test_a_failure_at_each_step_leaves_vm_and_disks_on_the_source_with_nothing_reserved(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    plan: dict[str, str] = {}
    async with running_worker(temporal_client, cloud, around=failing_where_told(plan)) as harness:
        vm_id, *disks = await vm_with_a_data_disk(harness, zone, "anchored")
        source = vm(cloud, vm_id).host_id
        pools = [cloud.load(Volume, d).pool_id for d in disks]
        target = host_elsewhere(cloud, zone, vm_id)
        for step in STEPS:
            job_id = uuid.uuid4()
            plan[str(job_id)] = step
            _, status, _ = await migrate(harness, zone, vm_id, target, job_id)
            assert status == "ended"
            job = job_of(cloud, job_id)
            assert job.status is JobStatus.FAILED and job.error_code == 530, (step, job.error_text)
            assert "could not undo" not in (job.error_text or ""), step
            assert vm(cloud, vm_id).state is VmState.RUNNING, step
            assert vm(cloud, vm_id).host_id == source, step
            assert [cloud.load(Volume, d).pool_id for d in disks] == pools, step
            # Nothing reserved on the target: host capacity, pool bytes.
            assert cloud.load(Host, target).reservation_for(vm_id) is None, step
            assert problems(cloud, zone, harness, vm_id, disks) == [], step
        assert plan == {}  # every failure was injected


def crash_after_each_storage_step() -> Callable[[str, Callable[[], Any]], Any]:
    """The steps only a migration with storage runs each do their work, then 'crash' before
    reporting, once (the shared steps are crashed by test_vm_migration already)."""
    crash = {step: crash_after_first(step) for step in STEPS[2:]}
    return lambda name, call: crash[name](name, call) if name in crash else call()


@pytest.mark.parametrize(
    "around", [run_twice, crash_after_each_storage_step()], ids=["twice", "crash"]
)
async def test_every_step_of_a_migration_with_storage_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id, *disks = await vm_with_a_data_disk(harness, zone, "twice")
        source = vm(cloud, vm_id).host_id
        assert source is not None
        target = host_elsewhere(cloud, zone, vm_id)
        for host_id in (target, source):
            job_id, status, value = await migrate(harness, zone, vm_id, host_id)
            assert status == "succeeded", value
            assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
            assert problems(cloud, zone, harness, vm_id, disks) == []
    for disk in disks:
        names = Counter(type(e).__qualname__ for e in cloud.events.get(disk))
        assert names["Volume.Migrated"] == 2, disk
    pool_events = Counter(
        type(e).__qualname__
        for p in zone.pool_ids
        for e in cloud.events.get(p)
        if getattr(e, "volume_id", None) in disks
    )
    # Each disk: made once, then moved there and back: two more allocations, two releases.
    assert pool_events["PrimaryStorage.CapacityAllocated"] == 2 * 3
    assert pool_events["PrimaryStorage.CapacityReleased"] == 2 * 2


class NoStorageMigration(RefusesStorageMigration, SimulatorDriver):
    """A backend that live-migrates within a cluster but cannot move disks (KVM today)."""

    storage_migration_refusal = "this backend cannot move a running VM's disks"


async def test_a_backend_that_cannot_move_disks_fails_the_job_with_432_and_unwinds(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    driver = NoStorageMigration()
    async with running_worker(temporal_client, cloud, driver=driver) as harness:
        vm_id, *disks = await vm_with_a_data_disk(harness, zone, "pinned")
        source = vm(cloud, vm_id).host_id
        job_id, status, _ = await migrate(harness, zone, vm_id, host_elsewhere(cloud, zone, vm_id))
        assert status == "ended"
        job = job_of(cloud, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 432
        assert "cannot move a running VM's disks" in (job.error_text or "")
        assert vm(cloud, vm_id).host_id == source
        assert problems(cloud, zone, harness, vm_id, disks) == []
