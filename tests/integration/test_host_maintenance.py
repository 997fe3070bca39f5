"""Host maintenance (prepareHostForMaintenance / cancelHostMaintenance) as jobs, against a real
PostgreSQL and a real Temporal dev server: the host's VMs leave by migrate jobs of their own,
HA-enabled ones first; a VM that cannot move leaves the host in ErrorInMaintenance with the
reason; a cancel withdraws what has not moved. The saga tests are in
test_host_maintenance_sagas.py."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from domain.cloud import Cloud
from domain.host import ResourceState
from domain.host_maintenance import (
    CANCEL_MAINTENANCE_JOB,
    PREPARE_MAINTENANCE_JOB,
    CancelHostMaintenanceRequest,
    HostMaintenanceRequest,
    evacuation_job_id,
)
from domain.job import Job, JobStatus
from domain.job_requests import VmOperation
from domain.virtual_machine import VmState
from tests.integration.host_jobs import (
    busy_host,
    cancel_maintenance,
    consistent,
    ha_offering,
    host,
    prepare,
    running,
    vm,
)
from tests.integration.test_vm_migration import NoLiveMigration
from tests.integration.vm_jobs import submit
from tests.support import SlowStep, outcome, running_worker, step_reached
from tests.support import seed_zone as seed


async def test_maintenance_moves_every_vm_off_the_host_ha_first_and_cancelling_returns_it(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        host_id, vm_ids = await busy_host(harness, zone, ha_offering(cloud))
        cluster = host(cloud, host_id).cluster_id
        job_id, status, value = await prepare(harness, host_id, stopped=[vm_ids[2]])
        assert status == "succeeded", value
        assert value["resource_state"] == "Maintenance"
        assert host(cloud, host_id).resource_state is ResourceState.MAINTENANCE
        assert host(cloud, host_id).reservations == {}

        running_ids = vm_ids[:2]
        for vm_id in running_ids:
            moved = vm(cloud, vm_id)
            assert moved.state is VmState.RUNNING and moved.host_id not in (None, host_id)
            assert moved.host_id is not None
            assert host(cloud, moved.host_id).cluster_id == cluster  # live: same cluster
        # The stopped VM forgot the host, so it starts elsewhere.
        assert vm(cloud, vm_ids[2]).last_host_id is None
        consistent(cloud, zone, harness, vm_ids)

        # Each VM left by a migrate job of its own, the HA-enabled one before the other began.
        migrations = {v: cloud.load(Job, evacuation_job_id(job_id, v, 1)) for v in running_ids}
        assert {m.status for m in migrations.values()} == {JobStatus.SUCCEEDED}
        assert {m.job_type for m in migrations.values()} == {"MigrateVirtualMachine"}
        ha_done = migrations[vm_ids[1]].modified_on
        assert migrations[vm_ids[0]].submitted_at >= ha_done

        # A host in maintenance takes no VM: a new one, and the stopped one, go elsewhere.
        new_vm = await running(harness, zone, "after")
        started = await submit(harness, zone, vm_ids[2], VmOperation.START)
        assert (await outcome(harness.client, started.job_id))[0] == "succeeded"
        assert host_id not in (vm(cloud, new_vm).host_id, vm(cloud, vm_ids[2]).host_id)

        # Asking again is refused: the host is already in maintenance.
        _, status, error = await prepare(harness, host_id)
        assert status == "ended" and "already in Maintenance" in str(error.cause)

        _, status, value = await cancel_maintenance(harness, host_id)
        assert status == "succeeded", value
        assert value["resource_state"] == "Enabled"
        assert host(cloud, host_id).resource_state is ResourceState.ENABLED
        consistent(cloud, zone, harness, [*vm_ids, new_vm])


async def test_a_vm_that_cannot_move_leaves_the_host_in_error_in_maintenance_with_the_reason(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    driver = NoLiveMigration()
    async with running_worker(temporal_client, cloud, driver=driver) as harness:
        vm_id = await running(harness, zone, "pinned")
        host_id = vm(cloud, vm_id).host_id
        assert host_id is not None
        job_id, status, _ = await prepare(harness, host_id)
        assert status == "ended"
        job = cloud.load(Job, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 534, job.error_text
        assert "pinned" in (job.error_text or "") and "cannot live-migrate" in (
            job.error_text or ""
        )
        broken = host(cloud, host_id)
        assert broken.resource_state is ResourceState.ERROR_IN_MAINTENANCE
        assert len(broken.maintenance_errors) == 1
        assert "cannot live-migrate" in broken.maintenance_errors[0]
        # One round only: a migration that failed would fail the same way again.
        assert cloud.find(Job, evacuation_job_id(job_id, vm_id, 2)) is None
        assert vm(cloud, vm_id).state is VmState.RUNNING and vm(cloud, vm_id).host_id == host_id
        consistent(cloud, zone, harness, [vm_id])

        _, status, value = await cancel_maintenance(harness, host_id)
        assert status == "succeeded", value
        assert host(cloud, host_id).resource_state is ResourceState.ENABLED
        assert list(host(cloud, host_id).maintenance_errors) == []


async def test_cancelling_while_vms_move_withdraws_the_rest_and_restores_the_host(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    held = SlowStep("hypervisor.migrate_vm", workflow_type="MigrateVirtualMachine")
    async with running_worker(temporal_client, cloud, around=held) as harness:
        host_id, vm_ids = await busy_host(harness, zone, ha_offering(cloud))
        job_id = uuid.uuid4()
        await harness.client.start_workflow(
            PREPARE_MAINTENANCE_JOB,
            HostMaintenanceRequest(
                job_id=job_id, host_id=host_id, account_id=uuid.uuid4(), summary="prepare"
            ),
            id=str(job_id),
            task_queue=harness.task_queue,
        )
        await step_reached(harness.client, job_id, "migrating")
        await held.wait_started()  # the HA VM's migration is under way
        assert host(cloud, host_id).resource_state is ResourceState.PREPARE_FOR_MAINTENANCE

        cancel_id = uuid.uuid4()
        await harness.client.start_workflow(
            CANCEL_MAINTENANCE_JOB,
            CancelHostMaintenanceRequest(
                job_id=cancel_id, host_id=host_id, account_id=uuid.uuid4(), summary="cancel"
            ),
            id=str(cancel_id),
            task_queue=harness.task_queue,
        )
        await step_reached(harness.client, cancel_id, "cancelling maintenance job")
        held.release()
        status, value = await outcome(harness.client, cancel_id)
        assert status == "succeeded", value
        assert host(cloud, host_id).resource_state is ResourceState.ENABLED
        assert cloud.load(Job, job_id).status is JobStatus.CANCELLED
        # The HA VM's migration was past its point of no return: it finishes. The other VM
        # never had its wave: it stays where it was.
        ha_move = evacuation_job_id(job_id, vm_ids[1], 1)
        assert (await outcome(harness.client, ha_move))[0] == "succeeded"
        assert vm(cloud, vm_ids[1]).host_id != host_id
        for vm_id in (vm_ids[0],):
            assert vm(cloud, vm_id).host_id == host_id
            assert cloud.find(Job, evacuation_job_id(job_id, vm_id, 1)) is None
        consistent(cloud, zone, harness, vm_ids)


async def test_cancelling_a_host_that_is_not_in_maintenance_is_refused(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        job_id, status, _ = await cancel_maintenance(harness, zone.host_ids[0])
        assert status == "ended"
        job = cloud.load(Job, job_id)
        assert job.status is JobStatus.FAILED and job.error_code == 431
        assert "not in maintenance" in (job.error_text or "")
