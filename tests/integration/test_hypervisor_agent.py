"""The agent model against a real Temporal dev server and PostgreSQL: a KVM cluster (libvirt's
test driver) served by `stratus agent`'s workers on the cluster's own task queue, while the
control-plane worker holds only the simulator driver."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import libvirt
import psycopg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.drivers.hypervisor import (
    HostRef,
    HypervisorDriver,
    PowerState,
    StoragePoolRef,
    VirtualMachineSpec,
    VolumeSpec,
)
from activities.hypervisor import DriverRegistry
from domain.cloud import Cloud, Decision
from domain.errors import UnsupportedAction
from domain.host import Host
from domain.infrastructure import PowerStateSyncInput, power_state_sync_id
from domain.job import Job, JobStatus
from domain.storage import PrimaryStorage
from domain.virtual_machine import VirtualMachine, VmEvent, VmState
from tests.integration.agent_support import (
    MIB,
    NODE_CPUS,
    NODE_MEMORY_MIB,
    NODE_MHZ,
    VCENTER_PASSWORD,
    KvmCluster,
    TimesOutAfterDoing,
    deploy,
    kvm_cluster_with_agent,
)
from tests.support import job_of, running_worker, vm_of
from workers.worker import default_drivers


async def scheduled_queues(client: Client, workflow_id: str) -> dict[str, set[str]]:
    """Activity type → the task queues it was scheduled on, from the recorded history."""
    queues: dict[str, set[str]] = {}
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            queues.setdefault(attributes.activity_type.name, set()).add(attributes.task_queue.name)
    return queues


def domains_for(driver: Any, host_name: str, vm_id: uuid.UUID) -> list[str]:
    """The libvirt domains carrying this Stratus VM id on the test node."""
    conn = driver._connection(_host_ref(host_name))
    return [d.name() for d in conn.listAllDomains() if d.UUIDString() == str(vm_id)]


def _host_ref(name: str) -> Any:
    return HostRef(host_id="probe", name=name, address="127.0.0.1", cluster_id="", hypervisor="KVM")


async def test_deploy_on_a_kvm_cluster_runs_its_hypervisor_steps_on_the_agent(
    temporal_client: Client, cloud: Cloud, database_url: str
) -> None:
    async with (
        running_worker(temporal_client, cloud) as harness,
        kvm_cluster_with_agent(temporal_client, cloud, harness) as kvm,
    ):
        host = cloud.load(Host, kvm.host_id)
        # The host was recorded with what the hypervisor reported, not with what anyone typed.
        assert (host.cpu_count, host.cpu_speed_mhz, host.memory_mib) == (
            NODE_CPUS,
            NODE_MHZ,
            NODE_MEMORY_MIB,
        )
        assert job_of(cloud, uuid.UUID(kvm.workflow_ids[1])).status is JobStatus.SUCCEEDED
        sync = await temporal_client.get_workflow_handle(
            power_state_sync_id(kvm.cluster_id)
        ).describe()
        assert sync.status is not None and sync.status.name == "RUNNING"

        handle = await deploy(harness, kvm, "kvm-web-1")
        result = await handle.result()
        vm = vm_of(cloud, uuid.UUID(handle.id))

        assert vm.state is VmState.RUNNING and vm.host_id == kvm.host_id
        assert result["host_id"] == str(kvm.host_id)
        found = kvm.driver.find_vm(_host_ref("kvm-host-1"), str(vm.id))
        assert found is not None and found.power_state is PowerState.POWERED_ON
        # Every hypervisor step went to the cluster's queue; the control plane could not
        # have served them: its only driver is the simulator's.
        queues = await scheduled_queues(temporal_client, handle.id)
        hypervisor_steps = {k: v for k, v in queues.items() if k.startswith("hypervisor.")}
        assert set(hypervisor_steps) == {"hypervisor.create_volume", "hypervisor.launch_vm"}
        assert all(q == {kvm.queue} for q in hypervisor_steps.values()), queues
        assert all(
            q == {harness.task_queue} for k, q in queues.items() if not k.startswith("hyper")
        )
        add_host_queues = await scheduled_queues(temporal_client, kvm.workflow_ids[1])
        assert add_host_queues["hypervisor.host_capacity"] == {kvm.queue}
        with pytest.raises(UnsupportedAction):
            DriverRegistry(default_drivers(cloud)).for_hypervisor("KVM")

        # The vCenter password the agent holds never left it.
        for workflow_id in [*kvm.workflow_ids, handle.id, power_state_sync_id(kvm.cluster_id)]:
            history = await temporal_client.get_workflow_handle(workflow_id).fetch_history()
            assert VCENTER_PASSWORD not in json.dumps(history.to_json_dict())
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT state FROM cloud_events").fetchall()
    assert rows and not any(VCENTER_PASSWORD.encode() in bytes(state) for (state,) in rows)


async def test_a_launch_that_times_out_after_starting_the_vm_succeeds_without_a_duplicate(
    temporal_client: Client, cloud: Cloud
) -> None:
    wrappers: list[TimesOutAfterDoing] = []

    def flaky(driver: HypervisorDriver) -> HypervisorDriver:
        wrapper = TimesOutAfterDoing(driver, {"define_vm", "start_vm"})
        wrappers.append(wrapper)
        return wrapper

    async with (
        running_worker(temporal_client, cloud) as harness,
        kvm_cluster_with_agent(temporal_client, cloud, harness, wrap=flaky) as kvm,
    ):
        handle = await deploy(harness, kvm, "kvm-flaky")
        await handle.result()
        job_id = uuid.UUID(handle.id)
        vm = vm_of(cloud, job_id)
        assert wrappers[0].timed_out == ["define_vm", "start_vm"]
        assert vm.state is VmState.RUNNING
        assert job_of(cloud, job_id).status is JobStatus.SUCCEEDED
        assert domains_for(kvm.driver, "kvm-host-1", vm.id) == ["kvm-flaky"]
        conn: libvirt.virConnect = kvm.driver._connection(_host_ref("kvm-host-1"))
        assert [d.name() for d in conn.listAllDomains()] == ["kvm-flaky"]
        assert list(cloud.load(Host, kvm.host_id).reservations) == [str(vm.id)]
        # The define that timed out was retried (and found the domain), the start was not:
        # after its timeout the activity asked libvirt and found the VM running.
        attempts = []
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attempts.append(event.activity_task_started_event_attributes.attempt)
        assert max(attempts) == 2


async def sync_now(client: Client, workflow_id: str) -> dict[str, Any]:
    result = await client.get_workflow_handle(workflow_id).execute_update("sync_now")
    return result if isinstance(result, dict) else result.model_dump(mode="json")


def transitions(cloud: Cloud, vm_id: uuid.UUID) -> list[str]:
    return [
        e.vm_event for e in cloud.events.get(vm_id) if isinstance(e, VirtualMachine.Transitioned)
    ]


def stuck_in_starting(cloud: Cloud, kvm: KvmCluster, name: str, job_id: uuid.UUID) -> uuid.UUID:
    """A VM left Starting on the host by a job that is gone (or, with a Job record, running)."""
    vm_id = uuid.uuid4()
    zone = kvm.zone

    def decide(d: Decision) -> None:
        vm = d.add(
            VirtualMachine.create_with_id(
                vm_id,
                name=name,
                display_name=name,
                account_id=zone.admin_account_id,
                zone_id=zone.zone_id,
                service_offering_id=zone.small_offering_id,
                template_id=kvm.template_id,
                network_id=zone.network_id,
                hypervisor="KVM",
                cpu_count=1,
                cpu_speed_mhz=1000,
                memory_mib=512,
                root_volume_id=uuid.uuid4(),
                ha_enabled=False,
                job_id=job_id,
            )
        )
        vm.transition(VmEvent.START_REQUESTED, f"{job_id}/start-requested")
        d.get(Host, kvm.host_id).reserve_capacity(vm_id, 1000, 512, 2.0, 1.0, f"{job_id}/reserve/1")

    cloud.decide(decide)
    return vm_id


async def test_power_state_sync_follows_what_the_hypervisor_reports(
    temporal_client: Client, cloud: Cloud
) -> None:
    async with (
        running_worker(temporal_client, cloud) as harness,
        kvm_cluster_with_agent(temporal_client, cloud, harness) as kvm,
    ):
        steady_job, rogue_job = (
            await deploy(harness, kvm, "steady"),
            await deploy(harness, kvm, "rogue"),
        )
        await steady_job.result()
        await rogue_job.result()
        steady = vm_of(cloud, uuid.UUID(steady_job.id)).id
        rogue = vm_of(cloud, uuid.UUID(rogue_job.id)).id
        host = HostRef(str(kvm.host_id), "kvm-host-1", "127.0.0.1", str(kvm.cluster_id), "KVM")
        # Left Starting by jobs: one gone after launching the VM, one gone before, one whose
        # job record is still running.
        launched = stuck_in_starting(cloud, kvm, "launched", uuid.uuid4())
        lost = stuck_in_starting(cloud, kvm, "lost", uuid.uuid4())
        busy_job = uuid.uuid4()
        busy = stuck_in_starting(cloud, kvm, "busy", busy_job)
        cloud.decide(
            lambda d: d.add(
                Job.create_with_id(
                    busy_job,
                    job_type="StartVirtualMachine",
                    account_id=kvm.zone.admin_account_id,
                    resource_type="VirtualMachine",
                    resource_id=busy,
                    zone_id=kvm.zone.zone_id,
                    summary="start busy",
                    submitted_at=datetime.now(UTC),
                )
            )
        )
        pool = cloud.load(PrimaryStorage, kvm.pool_id)
        pool_ref = StoragePoolRef(str(pool.id), pool.name, pool.path)
        disk = kvm.driver.create_volume(host, pool_ref, VolumeSpec(str(uuid.uuid4()), "d", MIB))
        kvm.driver.define_vm(
            host, VirtualMachineSpec(str(launched), "launched", 1, 1000, 512, disk)
        )
        kvm.driver.start_vm(host, str(launched))

        sync_id = f"test-power-sync/{uuid.uuid4()}"
        await temporal_client.start_workflow(
            "PowerStateSync",
            PowerStateSyncInput(
                cluster_id=kvm.cluster_id, interval_seconds=3600, clock_skew_seconds=0
            ),
            id=sync_id,
            task_queue=harness.task_queue,
        )
        # Stopped behind Stratus's back: Stopped, its capacity given back.
        kvm.driver.stop_vm(host, str(rogue), forced=True)
        first = await sync_now(temporal_client, sync_id)
        assert [(c["vm_name"], c["vm_event"]) for c in first["changes"]] == [
            ("rogue", "FollowAgentPowerOffReport")
        ]
        assert vm_of(cloud, uuid.UUID(rogue_job.id)).state is VmState.STOPPED
        assert vm_of(cloud, uuid.UUID(steady_job.id)).state is VmState.RUNNING
        held = cloud.load(Host, kvm.host_id).reservations
        assert str(rogue) not in held and str(steady) in held
        for vm_id in (launched, lost, busy):  # within the 10-minute grace: left alone
            assert "within grace" in first["skipped"][str(vm_id)]
        assert first["unmanaged"] == []

        # Nothing recorded twice.
        assert (await sync_now(temporal_client, sync_id))["changes"] == []

        # Started behind its back: Running on that host, its capacity held again.
        kvm.driver.start_vm(host, str(rogue))
        third = await sync_now(temporal_client, sync_id)
        assert [(c["vm_name"], c["vm_event"]) for c in third["changes"]] == [
            ("rogue", "FollowAgentPowerOnReport")
        ]
        rogue_vm = cloud.load(VirtualMachine, rogue)
        assert rogue_vm.state is VmState.RUNNING and rogue_vm.host_id == kvm.host_id
        assert "outside Stratus" in (rogue_vm.last_reason or "")
        assert str(rogue) in cloud.load(Host, kvm.host_id).reservations
        assert (await sync_now(temporal_client, sync_id))["changes"] == []
        assert transitions(cloud, rogue).count("FollowAgentPowerOffReport") == 1
        assert transitions(cloud, rogue).count("FollowAgentPowerOnReport") == 1

        # Past the grace period, VMs no job works on follow the hypervisor.
        await temporal_client.get_workflow_handle(sync_id).terminate("next")
        impatient = f"test-power-sync/{uuid.uuid4()}"
        await temporal_client.start_workflow(
            "PowerStateSync",
            PowerStateSyncInput(
                cluster_id=kvm.cluster_id,
                interval_seconds=3600,
                grace_seconds=0,
                clock_skew_seconds=0,
            ),
            id=impatient,
            task_queue=harness.task_queue,
        )
        late = await sync_now(temporal_client, impatient)
        assert sorted((c["vm_name"], c["new_state"]) for c in late["changes"]) == [
            ("launched", "Running"),
            ("lost", "Stopped"),
        ]
        assert f"job {busy_job} is working on it" in late["skipped"][str(busy)]
        assert cloud.load(VirtualMachine, busy).state is VmState.STARTING
        held = cloud.load(Host, kvm.host_id).reservations
        assert str(launched) in held and str(lost) not in held
        assert (await sync_now(temporal_client, impatient))["changes"] == []
        await temporal_client.get_workflow_handle(impatient).terminate("test over")
