"""VM HA on a real Temporal server and PostgreSQL: an HA-enabled VM that stops on a healthy host
without a stop job (a crash, seen by the power-state sync) is restarted by a start job of its
own, on the same host first; a plain VM found the same way stays Stopped. The HA VM's crash is
an alert. Every step run twice, or losing its answer after its work, duplicates nothing and
loses no restart."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any
from uuid import UUID

import pytest
from temporalio.client import Client

from activities.refs import host_ref
from domain.alert import Alert, AlertType, alert_id_for
from domain.cloud import Cloud
from domain.host import Host
from domain.infrastructure import PowerStateSyncInput
from domain.job import Job, JobStatus
from domain.virtual_machine import VirtualMachine, VmState
from domain.vm_ha import crash_restart_job_id
from tests.integration.host_jobs import ha_offering, running
from tests.integration.vm_jobs import vm
from tests.support import crash_after_first, run_twice, running_worker, seed_zone, wait_until


def starts(cloud: Cloud, vm_id: UUID) -> list[UUID | None]:
    """The hosts the VM was started on, in order."""
    return [
        e.host_id
        for e in cloud.events.get(vm_id)
        if isinstance(e, VirtualMachine.Transitioned) and e.new_state == VmState.RUNNING.value
    ]


@pytest.mark.parametrize(
    "around", [None, run_twice, crash_after_first()], ids=["once", "twice", "crash"]
)
async def test_an_ha_vm_that_crashes_on_a_healthy_host_restarts_there_and_a_plain_one_stays_off(
    temporal_client: Client, cloud: Cloud, around: Any
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud, around=around) as harness:
        plain = await running(harness, zone, "plain")
        ha_vm = await running(harness, zone, "ha-vm", offering_id=ha_offering(cloud))
        host_id = vm(cloud, ha_vm).host_id
        assert host_id is not None and vm(cloud, plain).host_id == host_id
        host = host_ref(cloud, host_id)
        # Both die on their hypervisor, the host itself still answering.
        for vm_id in (plain, ha_vm):
            harness.driver.stop_vm(host, str(vm_id), forced=True)
        run_id = f"test-vm-ha/{uuid.uuid4()}"
        sync = await temporal_client.start_workflow(
            "PowerStateSync",
            PowerStateSyncInput(
                cluster_id=cloud.load(Host, host_id).cluster_id,
                interval_seconds=3600,
                clock_skew_seconds=0,
            ),
            id=run_id,
            task_queue=harness.task_queue,
        )
        try:
            first = await sync.execute_update("sync_now")
            if around is None:  # a repeated reconcile answers what its last attempt did
                assert sorted(c["vm_name"] for c in first["changes"]) == ["ha-vm", "plain"]
            assert [c["name"] for c in first["crashed"]] == ["ha-vm"]
            # The restart is a job of its own in the VM's queue, planned on the same host.
            restart = crash_restart_job_id(f"{run_id}/1", ha_vm)

            async def restart_job() -> Job | None:
                return cloud.find(Job, restart)

            job = await wait_until(
                restart_job,
                lambda j: j is not None and j.status.is_final,
                timeout=60,
                what="the HA restart job to end",
            )
            assert job is not None and job.status is JobStatus.SUCCEEDED, job
            assert job.job_type == "StartVirtualMachine" and "(HA)" in job.summary
            restarted = vm(cloud, ha_vm)
            assert restarted.state is VmState.RUNNING and restarted.host_id == host_id
            assert starts(cloud, ha_vm)[-2:] == [host_id, host_id]
            assert harness.driver.list_vms(host) and str(ha_vm) in {
                v.vm_id for v in harness.driver.list_vms(host) if v.power_state == "PowerOn"
            }
            # The plain VM stays Stopped, its room given back; only the HA VM holds room.
            assert vm(cloud, plain).state is VmState.STOPPED
            assert set(cloud.load(Host, host_id).reservations) == {str(ha_vm)}
            # One alert, for the HA VM; the next pass finds nothing to do.
            alert = cloud.find(Alert, alert_id_for(f"{run_id}/1/{ha_vm}/crashed"))
            assert alert is not None and alert.alert_type is AlertType.USERVM
            assert cloud.find(Alert, alert_id_for(f"{run_id}/1/{plain}/crashed")) is None
            second = await sync.execute_update("sync_now")
            assert second["changes"] == [] and second["crashed"] == []
            # Once each, however the steps were repeated: deployed and restarted, stopped once.
            transitions = Counter(
                e.vm_event
                for e in cloud.events.get(ha_vm)
                if isinstance(e, VirtualMachine.Transitioned)
            )
            assert transitions["StartRequested"] == 2, transitions
            assert transitions["FollowAgentPowerOffReport"] == 1, transitions
            assert len(list(cloud.events.get(alert.id))) == 1
        finally:
            await sync.terminate("test over")
