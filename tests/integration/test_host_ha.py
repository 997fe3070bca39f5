"""Host HA end to end on a real Temporal server and PostgreSQL: a cluster's monitor health-checks
its hosts through the (simulator) hypervisor, runs CloudStack's HA machine, recovers and fences
through a real IPMI BMC (pyghmi, on loopback, whose power is tied to the simulated host: off or
cycled, the host's VMs are gone), and only once a host is fenced restarts its HA VMs elsewhere.

The split-brain checks read the simulator's own state and the event log: at no moment does a VM
run in two places, and no VM of a failed host starts anywhere before the host is Fenced."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.drivers.ipmi import BmcLogin, IpmiClient
from activities.drivers.out_of_band import BmcLogins, IpmiPowerControl
from activities.drivers.simulator import SimulatorDriver
from activities.host_ha_models import HaObservation
from domain import host_ha_operations
from domain.cloud import Cloud
from domain.host import Host
from domain.host_ha import HaSettings, HaState
from domain.host_ha_operations import (
    CHECK_NOW_SIGNAL,
    MONITOR_WORKFLOW,
    RESTART_JOB,
    HostHaMonitorInput,
    RestartVmsRequest,
    monitor_id,
)
from domain.job import Job, JobStatus
from domain.virtual_machine import ON_HOST_STATES, VirtualMachine, VmState
from tests.integration.drivers.test_baremetal_contract import (
    PASSWORD,
    USER,
    BmcProcess,
    closed_udp_port,
)
from tests.integration.host_jobs import ha_offering, running
from tests.integration.vm_jobs import vm
from tests.support import Harness, outcome, running_worker, seed_zone, wait_until
from workers.demo_cloud import DemoCloud

#: kvm.ha settings shortened as Marvin's HA tests shorten them.
FAST = HaSettings(
    health_check_timeout=1,
    activity_check_timeout=2,
    activity_check_interval=1,
    activity_check_max_attempts=2,
    activity_check_failure_ratio=0.5,
    degraded_max_period=3600,
    recover_wait_period=2,
    recover_failure_threshold=1,
    fence_timeout=1,
    monitor_interval=1,
)


@pytest.fixture(scope="module")
def bmc() -> Iterator[BmcProcess]:
    process = BmcProcess(2)  # two machines: two hosts of one cluster
    yield process
    process.stop()


class PowerTie:
    """The simulated host's power follows its BMC's: powered off or reset, its VMs are gone."""

    def __init__(self, port: int, driver: SimulatorDriver, host_id: UUID) -> None:
        self.port, self.driver, self.host_id = port, driver, host_id

    def saw(self, port: int, event: tuple[str, ...]) -> None:
        if port == self.port and event[0] in ("power_off", "reset", "cycle"):
            self.driver.power_off_host(str(self.host_id))


def power_control() -> IpmiPowerControl:
    return IpmiPowerControl(
        BmcLogins(default=BmcLogin(USER, PASSWORD)),
        IpmiClient(cipher_suite=3),
        settle_timeout=10,
        poll_interval=0.1,
    )


async def host_with_vms(harness: Harness, zone: DemoCloud) -> tuple[UUID, UUID, UUID]:
    """A plain and an HA-enabled VM running on one host: (host, plain VM, HA VM)."""
    plain = await running(harness, zone, "plain")
    ha_vm = await running(harness, zone, "ha-vm", offering_id=ha_offering(harness.cloud))
    host_id = vm(harness.cloud, plain).host_id
    assert host_id is not None and vm(harness.cloud, ha_vm).host_id == host_id  # first fit
    return host_id, plain, ha_vm


async def watch(
    harness: Harness,
    zone: DemoCloud,
    host_id: UUID,
    bmc_address: str,
    settings: HaSettings = FAST,
) -> None:
    """HA on for the host (its BMC configured), and its cluster's monitor started as the API
    starts it."""
    cloud = harness.cloud
    host = cloud.load(Host, host_id)
    host.configure_out_of_band("ipmitool", bmc_address, True, command_id="test/oobm")
    cloud.save(host)
    host_ha_operations.configure_cluster(cloud, host.cluster_id, settings, "test/ha-settings")
    host_ha_operations.set_host_ha(cloud, host_id, True, datetime.now(UTC), "test/ha-on")
    await harness.client.start_workflow(
        MONITOR_WORKFLOW,
        HostHaMonitorInput(cluster_id=host.cluster_id, account_id=zone.admin_account_id),
        id=monitor_id(host.cluster_id),
        task_queue=harness.task_queue,
        start_signal=CHECK_NOW_SIGNAL,
    )


def dead(harness: Harness, host_id: UUID, operation: str = "*") -> None:
    harness.faults.append(
        {
            "operation": operation,
            "action": "fail",
            "host_id": str(host_id),
            "error_code": 534,
            "message": "simulated: the host does not answer",
            "delay_seconds": 0,
        }
    )


def ha_states(cloud: Cloud, host_id: UUID) -> list[str]:
    """Every HA state the host went through, in order (repeats folded)."""
    states: list[str] = []
    for event in cloud.events.get(host_id):
        if type(event).__qualname__ == "Host.HaChanged":
            state = getattr(event, "status", {})["state"]
            if not states or states[-1] != state:
                states.append(state)
    return states


def state_reached_at(cloud: Cloud, host_id: UUID, state: HaState) -> datetime:
    return next(
        e.timestamp  # type: ignore[attr-defined]
        for e in cloud.events.get(host_id)
        if type(e).__qualname__ == "Host.HaChanged"
        and getattr(e, "status", {})["state"] == state.value
    )


def placements(harness: Harness, zone: DemoCloud, vm_id: UUID) -> list[str]:
    """Where the simulator runs the VM (the hypervisors' own view)."""
    return [
        str(h)
        for h in zone.host_ids
        for v in harness.driver.vms_on(str(h))
        if v.vm_id == str(vm_id) and v.power_state.value == "PowerOn"
    ]


async def declare(
    harness: Harness, zone: DemoCloud, host_id: UUID, job_id: UUID
) -> tuple[str, Any]:
    """`declare-fenced` as the API runs it: the HA job, with the administrator's word first."""
    await harness.client.start_workflow(
        RESTART_JOB,
        RestartVmsRequest(
            job_id=job_id,
            account_id=zone.admin_account_id,
            host_id=host_id,
            summary="declared fenced",
            declared_by="test-admin",
        ),
        id=str(job_id),
        task_queue=harness.task_queue,
    )
    return await outcome(harness.client, job_id)


async def running_elsewhere(cloud: Cloud, vm_id: UUID, host_id: UUID) -> None:
    """Wait for the VM to run on another host than the failed one."""

    async def load() -> VirtualMachine:
        return vm(cloud, vm_id)

    await wait_until(
        load,
        lambda v: v.state is VmState.RUNNING and v.host_id not in (None, host_id),
        timeout=90,
        what="the HA VM running elsewhere",
    )


async def ha_state(cloud: Cloud, host_id: UUID, *states: HaState, what: str) -> Host:
    async def load() -> Host:
        return cloud.load(Host, host_id)

    return await wait_until(load, lambda h: h.ha_state in states, timeout=60, what=what)


async def test_a_dead_host_is_cycled_then_fenced_and_only_then_its_ha_vm_restarts_elsewhere(
    temporal_client: Client, cloud: Cloud, bmc: BmcProcess
) -> None:
    zone = seed_zone(cloud)
    port = bmc.ports[0]
    bmc.command("power", port, "on")
    async with running_worker(temporal_client, cloud, power_control=power_control()) as harness:
        host_id, plain, ha_vm = await host_with_vms(harness, zone)
        tie = PowerTie(port, harness.driver, host_id)
        bmc.listeners.append(tie)
        try:
            await watch(harness, zone, host_id, f"127.0.0.1:{port}")
            await ha_state(cloud, host_id, HaState.AVAILABLE, what="the host watched")
            mark = bmc.mark(port)
            dead(harness, host_id)
            await ha_state(cloud, host_id, HaState.FENCED, what="the dead host fenced")
            await running_elsewhere(cloud, ha_vm, host_id)
        finally:
            bmc.listeners.remove(tie)
        # CloudStack's path through the machine, and the BMC's own account of it.
        assert ha_states(cloud, host_id)[-6:] == [
            "Available",
            "Suspect",
            "Checking",
            "Recovering",
            "Fencing",
            "Fenced",
        ]
        seen = [e[0] for e in bmc.events[port][mark:]]
        assert "cycle" in seen, seen  # the recovery's power cycle
        assert seen[-1] == "power_off", seen  # the fence
        # No split brain: the HA VM runs in one place, and started only after the fence.
        assert placements(harness, zone, ha_vm) == [str(vm(cloud, ha_vm).host_id)]
        fenced_at = state_reached_at(cloud, host_id, HaState.FENCED)
        starts = [
            e.timestamp
            for e in cloud.events.get(ha_vm)
            if isinstance(e, VirtualMachine.Transitioned) and e.vm_event == "StartRequested"
        ]
        assert starts[-1] > fenced_at
        # The plain VM stays Stopped, its room given back; the fenced host holds nothing.
        assert vm(cloud, plain).state is VmState.STOPPED
        assert cloud.load(Host, host_id).reservations == {}
        assert placements(harness, zone, plain) == []


async def test_a_partitioned_host_whose_vms_still_run_is_degraded_never_fenced(
    temporal_client: Client, cloud: Cloud, bmc: BmcProcess
) -> None:
    zone = seed_zone(cloud)
    port = bmc.ports[0]
    bmc.command("power", port, "on")
    async with running_worker(temporal_client, cloud, power_control=power_control()) as harness:
        host_id, plain, ha_vm = await host_with_vms(harness, zone)
        await watch(harness, zone, host_id, f"127.0.0.1:{port}")
        await ha_state(cloud, host_id, HaState.AVAILABLE, what="the host watched")
        mark = bmc.mark(port)
        dead(harness, host_id, "host_capacity")  # it stops answering; its VMs do not stop
        await ha_state(cloud, host_id, HaState.DEGRADED, what="the partitioned host degraded")
        harness.faults.clear()
        await ha_state(cloud, host_id, HaState.AVAILABLE, what="the host back in service")
    assert "Fencing" not in ha_states(cloud, host_id)
    assert bmc.events[port][mark:] == []  # its BMC was never touched
    for vm_id in (plain, ha_vm):
        assert vm(cloud, vm_id).state is VmState.RUNNING and vm(cloud, vm_id).host_id == host_id
        assert placements(harness, zone, vm_id) == [str(host_id)]


async def test_a_fence_the_bmc_cannot_confirm_restarts_nothing_until_an_admin_declares_it(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud, power_control=power_control()) as harness:
        host_id, plain, ha_vm = await host_with_vms(harness, zone)
        await watch(harness, zone, host_id, f"127.0.0.1:{closed_udp_port()}")
        dead(harness, host_id)

        async def fence_tried() -> Host:
            return cloud.load(Host, host_id)

        host = await wait_until(
            fence_tried,
            lambda h: h.ha_state is HaState.FENCING and h.ha.fence_attempts >= 1,
            timeout=120,
            what="a fence attempt that failed",
        )
        assert "not confirmed" in host.ha.reason
        # Nothing restarted: the books still say the VMs run there; no VM started anywhere.
        assert vm(cloud, ha_vm).state is VmState.RUNNING and vm(cloud, ha_vm).host_id == host_id
        assert placements(harness, zone, ha_vm) == [str(host_id)]  # it may well still run
        # The operator has pulled the plug and says so.
        harness.driver.power_off_host(str(host_id))
        job_id = uuid.uuid4()
        status, value = await declare(harness, zone, host_id, job_id)
        assert status == "succeeded", value
        assert value["restarted"] == [str(ha_vm)] and value["stopped"] == [str(plain)]
    assert cloud.load(Host, host_id).ha_state is HaState.FENCED
    assert "declared fenced by test-admin" in cloud.load(Host, host_id).ha.reason
    assert vm(cloud, ha_vm).state is VmState.RUNNING and vm(cloud, ha_vm).host_id != host_id
    assert cloud.load(Job, job_id).status is JobStatus.SUCCEEDED


class OffMeansDead(PowerTie):
    """As PowerTie, and a host its BMC powered off answers nothing any more (it is off)."""

    def __init__(self, port: int, harness: Harness, host_id: UUID) -> None:
        super().__init__(port, harness.driver, host_id)
        self.harness = harness

    def saw(self, port: int, event: tuple[str, ...]) -> None:
        super().saw(port, event)
        if port == self.port and event[0] == "power_off":
            dead(self.harness, self.host_id)


class Sightings:
    """Where the simulator runs each watched VM, looked at right after every hypervisor call
    of the worker (the only moments a VM can start anywhere) and every few milliseconds
    besides; each change is recorded, so a VM that ever ran in two places is caught."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[UUID, list[tuple[str, ...]]] = {}
        self.watched: tuple[Harness, DemoCloud] | None = None

    def watch(self, harness: Harness, zone: DemoCloud, *vm_ids: UUID) -> None:
        with self.lock:
            self.seen = {vm_id: [] for vm_id in vm_ids}
            self.watched = (harness, zone)
        self.look()

    def look(self) -> None:
        with self.lock:
            if self.watched is None:
                return
            harness, zone = self.watched
            for vm_id, seen in self.seen.items():
                now = tuple(placements(harness, zone, vm_id))
                if not seen or seen[-1] != now:
                    seen.append(now)

    def around(self, name: str, call: Callable[[], Any]) -> Any:
        """running_worker's hook: a look once each hypervisor call has done its work."""
        try:
            return call()
        finally:
            if name.startswith("hypervisor."):
                self.look()

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.look()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.01)  # a sampling period


def vm_story(cloud: Cloud, vm_id: UUID) -> list[str]:
    """The VM's life in its event log, folded: `Running on <host>` and `Stopped`, in order."""
    story: list[str] = []
    host: UUID | None = None
    for event in cloud.events.get(vm_id):
        if not isinstance(event, VirtualMachine.Transitioned):
            continue
        state = VmState(event.new_state)
        host = event.host_id if event.host_id is not None else host
        chapter = (
            f"Running on {host}"
            if state is VmState.RUNNING
            else "Stopped"
            if state is VmState.STOPPED
            else None
        )
        if state not in ON_HOST_STATES:
            host = None
        if chapter is not None and (not story or story[-1] != chapter):
            story.append(chapter)
    return story


async def healthy_while_fencing(client: Client, cluster_id: UUID, host_id: UUID) -> int:
    """How many times the cluster's monitor found the host answering its health check while a
    fence of it was under way (after an attempt the BMC did not confirm, before one it did),
    read from the monitor's own history."""
    fencing, healthy = False, 0
    handle = client.get_workflow_handle(monitor_id(cluster_id))
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        scheduled = event.activity_task_scheduled_event_attributes
        name = scheduled.activity_type.name
        if name not in ("ha.observe_health", "ha.record_fence"):
            continue
        (seen,) = await client.data_converter.decode(scheduled.input.payloads, [HaObservation])
        if seen.host_id != host_id:
            continue
        if name == "ha.record_fence":
            fencing = not seen.seen
        elif fencing and seen.seen:
            healthy += 1
    return healthy


async def ha_job_started_by(client: Client, cluster_id: UUID) -> UUID:
    """The HA job the cluster's monitor started, from the monitor's own history."""

    async def started() -> list[str]:
        handle = client.get_workflow_handle(monitor_id(cluster_id))
        return [
            event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            async for event in handle.fetch_history_events()
            if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
            and event.start_child_workflow_execution_initiated_event_attributes.workflow_type.name
            == RESTART_JOB
        ]

    (job_id,) = await wait_until(started, timeout=30, what="the monitor to start the HA job")
    return UUID(job_id)


async def test_a_host_that_comes_back_in_the_middle_of_fencing_is_never_split_brained(
    temporal_client: Client, cloud: Cloud, bmc: BmcProcess
) -> None:
    """The third partition of issue 12: the host stops answering, is found without activity
    and fenced straight away (no recovery), but its BMC does not answer either; while that
    fence is under way the host answers again. Fencing is finished once begun: the host stays
    Fencing and nothing restarts while it runs its VMs; once its BMC answers, the next attempt
    powers it off, and only then does its HA VM start elsewhere. At no moment does a VM run in
    two places, by the simulator's own state or by the event log."""
    zone = seed_zone(cloud)
    port = bmc.ports[0]
    bmc.command("power", port, "on")
    # Fenced on the first activity check that finds nothing; a failed fence waits 5 s, long
    # enough for the monitor to find the host healthy in between.
    settings = FAST.model_copy(update={"recover_failure_threshold": 0, "fence_timeout": 5})
    sightings = Sightings()
    stop_sampling = asyncio.Event()
    async with running_worker(
        temporal_client, cloud, power_control=power_control(), around=sightings.around
    ) as harness:
        host_id, plain, ha_vm = await host_with_vms(harness, zone)
        cluster_id = cloud.load(Host, host_id).cluster_id
        sightings.watch(harness, zone, plain, ha_vm)
        sampler = asyncio.create_task(sightings.sample(stop_sampling))
        tie = OffMeansDead(port, harness, host_id)
        bmc.listeners.append(tie)
        try:
            # Its BMC is on the same failed network: not reachable for now.
            await watch(harness, zone, host_id, f"127.0.0.1:{closed_udp_port()}", settings)
            await ha_state(cloud, host_id, HaState.AVAILABLE, what="the host watched")
            mark = bmc.mark(port)
            vm_events = {v: len(list(cloud.events.get(v))) for v in (plain, ha_vm)}
            dead(harness, host_id)
            await ha_state(cloud, host_id, HaState.FENCING, what="the dead host being fenced")
            harness.faults.clear()  # the host is back, its fence not confirmed

            async def fencing() -> tuple[Host, int]:
                host = cloud.load(Host, host_id)
                return host, await healthy_while_fencing(temporal_client, cluster_id, host_id)

            host, _ = await wait_until(
                fencing,
                lambda seen: seen[0].ha_state is HaState.FENCING and seen[1] >= 2,
                timeout=120,
                what="the monitor to find the host healthy twice while fencing it",
            )
            assert "not confirmed" in host.ha.reason
            # The host runs its VMs, and nothing has touched them: no restart anywhere.
            for vm_id in (plain, ha_vm):
                assert vm(cloud, vm_id).state is VmState.RUNNING
                assert vm(cloud, vm_id).host_id == host_id
                assert placements(harness, zone, vm_id) == [str(host_id)]
                assert len(list(cloud.events.get(vm_id))) == vm_events[vm_id]
            # Its BMC answers again: the fence still under way powers it off.
            cloud.decide(
                lambda d: d.get(Host, host_id).configure_out_of_band(
                    None, f"127.0.0.1:{port}", None, command_id="test/bmc-back"
                )
            )
            await ha_state(cloud, host_id, HaState.FENCED, what="the host fenced")
            await running_elsewhere(cloud, ha_vm, host_id)
            ha_job = await ha_job_started_by(temporal_client, cluster_id)
            status, value = await outcome(temporal_client, ha_job)
            assert status == "succeeded", value
            assert value["restarted"] == [str(ha_vm)] and value["stopped"] == [str(plain)]
        finally:
            bmc.listeners.remove(tie)
            stop_sampling.set()
            await sampler
        sightings.look()
    restarted_on = vm(cloud, ha_vm).host_id
    # Healthy answers never ended the fence: CloudStack's path, straight from Fencing to Fenced.
    assert ha_states(cloud, host_id)[-5:] == [
        "Available",
        "Suspect",
        "Checking",
        "Fencing",
        "Fenced",
    ]
    assert bmc.since(port, mark) == [("power_off",)]  # one fence reached the BMC: it took
    # The simulator's own view, over time: each VM in one place at most, the HA VM on the
    # failed host, then nowhere (the fence), then elsewhere.
    for vm_id, seen in sightings.seen.items():
        assert all(len(hosts) <= 1 for hosts in seen), (vm_id, seen)
    assert sightings.seen[ha_vm] == [(str(host_id),), (), (str(restarted_on),)]
    assert sightings.seen[plain] == [(str(host_id),), ()]
    # The event log: never Running on another host without being Stopped first, and stopped
    # (its room released) and restarted only once the host was Fenced.
    for vm_id in (plain, ha_vm):
        story = vm_story(cloud, vm_id)
        assert all("Stopped" in pair for pair in itertools.pairwise(story)), story
    assert vm_story(cloud, ha_vm)[-3:] == [
        f"Running on {host_id}",
        "Stopped",
        f"Running on {restarted_on}",
    ]
    assert vm_story(cloud, plain)[-2:] == [f"Running on {host_id}", "Stopped"]
    fenced_at = state_reached_at(cloud, host_id, HaState.FENCED)
    after_fence = [
        e
        for e in list(cloud.events.get(ha_vm))[vm_events[ha_vm] :]
        if isinstance(e, VirtualMachine.Transitioned)
    ]
    assert after_fence and all(e.timestamp > fenced_at for e in after_fence)
    assert vm(cloud, plain).state is VmState.STOPPED
    assert cloud.load(Host, host_id).reservations == {}


async def test_a_fence_held_up_on_one_host_never_delays_another_hosts_fence(
    temporal_client: Client, cloud: Cloud, bmc: BmcProcess
) -> None:
    """Two hosts of one cluster die; host A's fence is held at its BMC (its power OFF not sent
    until the test lets it), and host B is fenced meanwhile: the monitor works on each host
    apart. Once A's BMC is let through, A is fenced too."""
    zone = seed_zone(cloud)
    host_a, host_b = zone.host_ids[0], zone.host_ids[1]
    assert cloud.load(Host, host_a).cluster_id == cloud.load(Host, host_b).cluster_id
    port_a, port_b = bmc.ports
    for port in (port_a, port_b):
        bmc.command("power", port, "on")
    held, reached = threading.Event(), threading.Event()

    def hold_host_a(name: str, call: Callable[[], Any]) -> Any:
        if name == "oobm.send_power_action":
            job = cloud.find(Job, UUID(activity.info().workflow_id))
            if job is not None and job.resource_id == host_a:
                reached.set()
                held.wait(timeout=120)
        return call()

    fast = FAST.model_copy(update={"recover_failure_threshold": 0})
    async with running_worker(
        temporal_client, cloud, around=hold_host_a, power_control=power_control()
    ) as harness:
        try:
            for host_id, port in ((host_a, port_a), (host_b, port_b)):
                await watch(harness, zone, host_id, f"127.0.0.1:{port}", settings=fast)
            await ha_state(cloud, host_a, HaState.AVAILABLE, what="host A watched")
            await ha_state(cloud, host_b, HaState.AVAILABLE, what="host B watched")
            dead(harness, host_a)
            await wait_until(reached.is_set, timeout=60, what="host A's fence at its BMC")
            dead(harness, host_b)
            await ha_state(cloud, host_b, HaState.FENCED, what="host B fenced, A's still held")
            assert not held.is_set() and cloud.load(Host, host_a).ha_state is HaState.FENCING
        finally:
            held.set()
        await ha_state(cloud, host_a, HaState.FENCED, what="host A fenced once let through")
