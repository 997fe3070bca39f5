"""Volume snapshots (take, revert, volume and template from one, delete, a policy's pruning) as
jobs in the queue of the snapshot's volume, against a real PostgreSQL and a real Temporal dev
server, on the simulator's primary and secondary storage."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any
from uuid import UUID

import pytest
from temporalio.client import Client

from domain.catalog import Template
from domain.cloud import Cloud
from domain.ids import derived_id
from domain.job import JobStatus
from domain.job_requests import VmOperation, VolumeOperation
from domain.snapshot import Snapshot, SnapshotIntervalType, SnapshotState, snapshot_id_for
from domain.snapshot_policy import SnapshotPolicy, policy_id_for
from domain.storage import SecondaryStorage
from domain.volume import Volume, VolumeState
from domain.volume_operations import volume_id_for
from tests.integration.vm_jobs import fail_in, job_of
from tests.integration.vm_jobs import submit as submit_vm_job
from tests.integration.volume_jobs import (
    GIB,
    create_volume,
    run_volume_job,
    volume,
    volume_problems,
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

V = VolumeOperation
#: The demo disk offering's fixed size.
SIZE = 5 * GIB
_S = SnapshotState


async def running_vm_with_data_volume(harness: Harness, zone: DemoCloud) -> tuple[UUID, UUID]:
    from tests.integration.vm_jobs import deploy

    deploy_job, vm_id = await deploy(harness, zone, "snapper")
    assert (await outcome(harness.client, deploy_job))[0] == "succeeded"
    volume_id = await create_volume(harness, zone, "data")
    _, status, value = await run_volume_job(harness, zone, volume_id, V.ATTACH, vm_id=vm_id)
    assert status == "succeeded", value
    return vm_id, volume_id


async def take_snapshot(
    harness: Harness, zone: DemoCloud, volume_id: UUID, **options: Any
) -> tuple[UUID, str, Any]:
    job_id = uuid.uuid4()
    _, status, value = await run_volume_job(
        harness,
        zone,
        volume_id,
        V.SNAPSHOT,
        job_id=job_id,
        snapshot_id=snapshot_id_for(job_id),
        **options,
    )
    return snapshot_id_for(job_id), status, value


async def snapshot_job(
    harness: Harness,
    zone: DemoCloud,
    snapshot_id: UUID,
    operation: VolumeOperation,
    **options: Any,
) -> tuple[UUID, str, Any]:
    """A job about a snapshot, in the queue of its source volume (as the API routes it)."""
    source = harness.cloud.load(Snapshot, snapshot_id).volume_id
    job_id = uuid.uuid4()
    volume_id = volume_id_for(job_id) if operation is V.CREATE_FROM_SNAPSHOT else source
    if operation is V.CREATE_TEMPLATE_FROM_SNAPSHOT:
        options.setdefault("template_id", derived_id(job_id, "template"))
    return await run_volume_job(
        harness,
        zone,
        volume_id,
        operation,
        job_id=job_id,
        route_by=source,
        snapshot_id=snapshot_id,
        **options,
    )


def snapshot_problems(
    cloud: Cloud, zone: DemoCloud, harness: Harness, snapshot_id: UUID
) -> list[str]:
    """Where a snapshot's books and the storage disagree. Empty when consistent: never left in
    progress; BackedUp: one backup on the zone's secondary storage, which holds its bytes, and
    no copy on primary storage; Error/Destroyed: no copy anywhere, no bytes held."""
    snapshot = cloud.find(Snapshot, snapshot_id)
    store = str(zone.secondary_storage_id)
    backups = [
        b for b in harness.driver.snapshot_backups_on(store) if b.snapshot_id == str(snapshot_id)
    ]
    primary = [
        s
        for p in zone.pool_ids
        for s in harness.driver.volume_snapshots_on(str(p))
        if s.snapshot_id == str(snapshot_id)
    ]
    held = str(snapshot_id) in cloud.load(SecondaryStorage, zone.secondary_storage_id).stored
    if snapshot is None:
        return (
            [f"copies {backups + primary} of a snapshot never recorded"]
            if backups or primary
            else []
        )
    found: list[str] = []
    if snapshot.state in (
        _S.CREATING,
        _S.CREATED_ON_PRIMARY,
        _S.BACKING_UP,
        _S.DESTROYING,
        _S.ALLOCATED,
    ):
        found.append(f"left in {snapshot.state}")
    if snapshot.state is _S.BACKED_UP:
        if len(backups) != 1 or not held:
            found.append(f"BackedUp but backups {backups}, bytes held {held}")
        if primary:
            found.append(f"BackedUp but a copy is still on primary storage: {primary}")
    elif backups or primary or held:
        found.append(f"{snapshot.state} but backups {backups}, primary {primary}, held {held}")
    return found


def templates_made(harness: Harness) -> dict[str, Any]:
    return {
        t: ref
        for by_store in harness.driver.__dict__.get("_templates", {}).values()
        for t, ref in by_store.items()
    }


async def test_a_snapshot_is_backed_up_reverted_to_made_into_a_volume_and_template_and_deleted(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        vm_id, volume_id = await running_vm_with_data_volume(harness, zone)
        # Live: the VM keeps running while its disk is snapshotted.
        snapshot_id, status, value = await take_snapshot(harness, zone, volume_id, name="before")
        assert status == "succeeded", value
        snapshot = cloud.load(Snapshot, snapshot_id)
        assert (snapshot.state, snapshot.name, snapshot.interval_type) == (
            _S.BACKED_UP,
            "before",
            SnapshotIntervalType.MANUAL,
        )
        assert snapshot.size_bytes == SIZE and snapshot.physical_size_bytes == SIZE
        assert volume(cloud, volume_id).state is VolumeState.READY
        assert snapshot_problems(cloud, zone, harness, snapshot_id) == []
        assert [e.split(".")[1] for e in event_names(cloud, snapshot_id)] == [
            "Allocated",
            "Transitioned",  # Creating
            "CreatedOnPrimary",
            "Transitioned",  # BackingUp
            "BackedUp",
            "PrimaryCopyRemoved",
        ]

        # Revert needs the VM stopped: refused at run time (431) while it runs.
        _, status, _ = await snapshot_job(harness, zone, snapshot_id, V.REVERT_TO_SNAPSHOT)
        assert status == "ended"
        assert volume(cloud, volume_id).state is VolumeState.READY
        # The volume grows after the snapshot; a revert brings it back to the snapshot's size.
        grow = await run_volume_job(harness, zone, volume_id, V.RESIZE, size_bytes=SIZE + GIB)
        assert grow[1] == "succeeded", grow[2]
        stop = await submit_vm_job(harness, zone, vm_id, VmOperation.STOP)
        assert (await outcome(harness.client, stop.job_id))[0] == "succeeded"
        _, status, value = await snapshot_job(harness, zone, snapshot_id, V.REVERT_TO_SNAPSHOT)
        assert status == "succeeded", value
        assert (volume(cloud, volume_id).state, volume(cloud, volume_id).size_bytes) == (
            VolumeState.READY,
            SIZE,
        )
        assert volume_problems(cloud, zone, harness, volume_id) == []

        # A new volume from the snapshot: made at once, of the snapshot's size.
        made_job, status, value = await snapshot_job(
            harness, zone, snapshot_id, V.CREATE_FROM_SNAPSHOT, name="restored"
        )
        assert status == "succeeded", value
        new_volume = volume(cloud, volume_id_for(made_job))
        assert (new_volume.state, new_volume.name, new_volume.size_bytes) == (
            VolumeState.READY,
            "restored",
            SIZE,
        )
        assert new_volume.hypervisor == snapshot.hypervisor
        assert volume_problems(cloud, zone, harness, new_volume.id) == []

        # A private template from the snapshot, on secondary storage.
        template_job, status, value = await snapshot_job(
            harness, zone, snapshot_id, V.CREATE_TEMPLATE_FROM_SNAPSHOT, name="golden"
        )
        assert status == "succeeded", value
        template = cloud.load(Template, derived_id(template_job, "template"))
        assert (template.name, template.public, template.account_id) == (
            "golden",
            False,
            zone.admin_account_id,
        )
        assert str(template.id) in templates_made(harness)
        assert str(template.id) in cloud.load(SecondaryStorage, zone.secondary_storage_id).stored

        # Delete: Destroyed, its backup gone, the secondary storage's bytes back.
        _, status, value = await snapshot_job(harness, zone, snapshot_id, V.DELETE_SNAPSHOT)
        assert status == "succeeded", value
        assert cloud.load(Snapshot, snapshot_id).state is _S.DESTROYED
        assert snapshot_problems(cloud, zone, harness, snapshot_id) == []
        # Deleted is deleted: using it again fails the job with 431.
        _, status, _ = await snapshot_job(harness, zone, snapshot_id, V.CREATE_FROM_SNAPSHOT)
        assert status == "ended"


async def test_a_snapshot_outlives_its_volume_and_serves_after_the_volume_is_deleted(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        _, volume_id = await running_vm_with_data_volume(harness, zone)
        snapshot_id, status, value = await take_snapshot(harness, zone, volume_id)
        assert status == "succeeded", value
        for op in (V.DETACH, V.DELETE):
            assert (await run_volume_job(harness, zone, volume_id, op))[1] == "succeeded"
        assert volume(cloud, volume_id).state is VolumeState.EXPUNGED
        # The deleted volume's queue serves its snapshot's jobs again.
        made_job, status, value = await snapshot_job(
            harness, zone, snapshot_id, V.CREATE_FROM_SNAPSHOT, name="reborn"
        )
        assert status == "succeeded", value

        assert volume(cloud, volume_id_for(made_job)).state is VolumeState.READY
        _, status, value = await snapshot_job(harness, zone, snapshot_id, V.DELETE_SNAPSHOT)
        assert status == "succeeded", value
        assert snapshot_problems(cloud, zone, harness, snapshot_id) == []


#: Every step of each snapshot job that changes the world, in the order its workflow runs them.
STEPS: dict[VolumeOperation, list[str]] = {
    V.SNAPSHOT: [
        "snapshot.begin",
        "hypervisor.snapshot_volume",
        "snapshot.record_on_primary",
        "hypervisor.backup_volume_snapshot",
        "snapshot.record_backed_up",
    ],
    V.REVERT_TO_SNAPSHOT: [
        "snapshot.begin_revert",
        "hypervisor.revert_volume_to_snapshot",
        "snapshot.complete_revert",
    ],
    V.CREATE_FROM_SNAPSHOT: [
        "snapshot.begin_volume",
        "hypervisor.create_volume_from_snapshot",
        "snapshot.complete_volume",
    ],
    V.CREATE_TEMPLATE_FROM_SNAPSHOT: [
        "snapshot.begin_template",
        "hypervisor.create_template_from_snapshot",
        "snapshot.complete_template",
    ],
    V.DELETE_SNAPSHOT: [
        "snapshot.begin_delete",
        "hypervisor.delete_snapshot_backup",
        "snapshot.finish_removal",
    ],
}
CASES = [(op, step) for op, steps in STEPS.items() for step in steps]


@pytest.mark.parametrize(("operation", "step"), CASES, ids=[f"{o.job_type}-{s}" for o, s in CASES])
async def test_a_failure_at_each_snapshot_step_unwinds_without_leaks(
    temporal_client: Client, cloud: Cloud, operation: VolumeOperation, step: str
) -> None:
    zone = seed(cloud)
    around = fail_in(operation.job_type, step, once=operation is V.DELETE_SNAPSHOT)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id, volume_id = await running_vm_with_data_volume(harness, zone)
        if operation is not V.SNAPSHOT:
            snapshot_id, status, value = await take_snapshot(harness, zone, volume_id)
            assert status == "succeeded", value
        if operation is V.REVERT_TO_SNAPSHOT:
            stop = await submit_vm_job(harness, zone, vm_id, VmOperation.STOP)
            assert (await outcome(harness.client, stop.job_id))[0] == "succeeded"
        held_before = dict(cloud.load(SecondaryStorage, zone.secondary_storage_id).stored)
        templates_before = set(templates_made(harness))
        if operation is V.SNAPSHOT:
            job_id = uuid.uuid4()
            snapshot_id = snapshot_id_for(job_id)
            _, status, _ = await run_volume_job(
                harness, zone, volume_id, V.SNAPSHOT, job_id=job_id, snapshot_id=snapshot_id
            )
        else:
            job_id, status, _ = await snapshot_job(harness, zone, snapshot_id, operation)
        assert status == "ended"
        job = job_of(cloud, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 530
        assert "injected failure" in (job.error_text or "")
        assert volume(cloud, volume_id).state is VolumeState.READY
        assert volume_problems(cloud, zone, harness, volume_id) == []
        snapshot = cloud.find(Snapshot, snapshot_id)
        if operation is V.SNAPSHOT:
            assert snapshot is None or snapshot.state is _S.ERROR
            assert held_before == cloud.load(SecondaryStorage, zone.secondary_storage_id).stored
        elif operation is V.DELETE_SNAPSHOT and step == "snapshot.finish_removal":
            # Its copies are gone: it stays Destroying; deleting again ends it.
            assert snapshot is not None and snapshot.state is _S.DESTROYING
            again = await snapshot_job(harness, zone, snapshot_id, V.DELETE_SNAPSHOT)
            assert again[1] == "succeeded", again[2]
            assert cloud.load(Snapshot, snapshot_id).state is _S.DESTROYED
        else:
            assert snapshot is not None and snapshot.state is _S.BACKED_UP
        if operation is V.CREATE_FROM_SNAPSHOT:
            made = cloud.find(Volume, volume_id_for(job_id))
            assert made is None or made.state is VolumeState.EXPUNGED
            if made is not None:
                assert volume_problems(cloud, zone, harness, made.id) == []
        if operation is V.CREATE_TEMPLATE_FROM_SNAPSHOT:
            assert cloud.find(Template, derived_id(job_id, "template")) is None
            assert set(templates_made(harness)) == templates_before
            assert held_before == cloud.load(SecondaryStorage, zone.secondary_storage_id).stored
        assert snapshot_problems(cloud, zone, harness, snapshot_id) == []


@pytest.mark.parametrize("around", [run_twice, crash_after_first()], ids=["twice", "crash"])
async def test_every_snapshot_step_run_twice_duplicates_nothing(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        vm_id, volume_id = await running_vm_with_data_volume(harness, zone)
        snapshot_id, status, value = await take_snapshot(harness, zone, volume_id)
        assert status == "succeeded", value
        stop = await submit_vm_job(harness, zone, vm_id, VmOperation.STOP)
        assert (await outcome(harness.client, stop.job_id))[0] == "succeeded"
        jobs = []
        for op in (
            V.REVERT_TO_SNAPSHOT,
            V.CREATE_FROM_SNAPSHOT,
            V.CREATE_TEMPLATE_FROM_SNAPSHOT,
            V.DELETE_SNAPSHOT,
        ):
            job_id, status, value = await snapshot_job(harness, zone, snapshot_id, op)
            assert status == "succeeded", (op, value)
            jobs.append(job_id)
            assert Counter(event_names(cloud, job_id))["Job.Succeeded"] == 1
        assert snapshot_problems(cloud, zone, harness, snapshot_id) == []
        assert volume_problems(cloud, zone, harness, volume_id) == []
        assert volume_problems(cloud, zone, harness, volume_id_for(jobs[1])) == []
    assert Counter(e.split(".")[1] for e in event_names(cloud, snapshot_id)) == {
        "Allocated": 1,
        # Creating, BackingUp, Destroying, Destroyed.
        "Transitioned": 4,
        "CreatedOnPrimary": 1,
        "BackedUp": 1,
        "PrimaryCopyRemoved": 1,
    }
    stored = Counter(
        type(e).__qualname__
        for e in cloud.events.get(zone.secondary_storage_id)
        if getattr(e, "object_id", None) in (snapshot_id, derived_id(jobs[2], "template"))
    )
    # The snapshot's backup stored and removed; the template stored.
    assert stored == {"SecondaryStorage.ObjectStored": 2, "SecondaryStorage.ObjectRemoved": 1}


async def test_a_policy_snapshot_prunes_the_policys_oldest_beyond_its_maximum(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        _, volume_id = await running_vm_with_data_volume(harness, zone)
        policy_id = policy_id_for(volume_id, SnapshotIntervalType.DAILY)
        vol = volume(cloud, volume_id)
        cloud.save(
            SnapshotPolicy.create_with_id(
                policy_id,
                volume_id=volume_id,
                account_id=vol.account_id,
                zone_id=vol.zone_id,
                interval_type="DAILY",
                schedule="30:02",
                timezone="Europe/Berlin",
                max_snaps=2,
                command_id="test/policy",
            )
        )
        manual, status, _ = await take_snapshot(harness, zone, volume_id)
        assert status == "succeeded"
        taken = []
        for _ in range(4):
            snapshot_id, status, value = await take_snapshot(
                harness, zone, volume_id, policy_id=policy_id
            )
            assert status == "succeeded", value
            taken.append(snapshot_id)
        states = [cloud.load(Snapshot, s).state for s in taken]
        assert states == [_S.DESTROYED, _S.DESTROYED, _S.BACKED_UP, _S.BACKED_UP]
        assert cloud.load(Snapshot, taken[-1]).interval_type is SnapshotIntervalType.DAILY
        # A manual snapshot is never the policy's to prune.
        assert cloud.load(Snapshot, manual).state is _S.BACKED_UP
        for snapshot_id in (manual, *taken):
            assert snapshot_problems(cloud, zone, harness, snapshot_id) == []
        # Lowering the maximum prunes down to it on the next run.
        policy = cloud.load(SnapshotPolicy, policy_id)
        policy.update("30:02", "Europe/Berlin", 1, "test/lower")
        cloud.save(policy)
        last, status, value = await take_snapshot(harness, zone, volume_id, policy_id=policy_id)
        assert status == "succeeded", value
        assert sorted(value["pruned"]) == sorted(str(s) for s in taken[2:])
        assert cloud.load(Snapshot, last).state is _S.BACKED_UP


async def test_a_snapshot_of_a_volume_not_on_primary_storage_fails_with_431(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        volume_id = await create_volume(harness, zone, "lazy")
        job_id = uuid.uuid4()
        _, status, _ = await run_volume_job(
            harness, zone, volume_id, V.SNAPSHOT, job_id=job_id, snapshot_id=snapshot_id_for(job_id)
        )
        assert status == "ended"
        job = job_of(cloud, job_id)
        assert job.error_code == 431 and "must be Ready" in (job.error_text or "")
        assert volume(cloud, volume_id).state is VolumeState.ALLOCATED
        assert cloud.find(Snapshot, snapshot_id_for(job_id)) is None
