"""Host HA's state machine (CloudStack's, with kvm.ha.* settings) as pure decisions, and its
records on the in-memory event store: when a host is suspected, checked, left alone while its
VMs still show activity, recovered, fenced, and what its VMs become once it is fenced."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain import host_ha, host_ha_operations, inventory
from domain.cloud import Cloud
from domain.errors import IllegalStateTransition, InvalidParameter
from domain.host import Host
from domain.host_ha import HaAction, HaSettings, HaState, HaStatus
from domain.virtual_machine import VirtualMachine, VmState
from tests.unit.builders import bring_to, new_vm, seed_pod

T0 = datetime(2026, 12, 3, 12, tzinfo=UTC)
FAST = HaSettings(
    activity_check_interval=5,
    activity_check_max_attempts=4,
    activity_check_failure_ratio=0.5,
    recover_wait_period=30,
    recover_failure_threshold=1,
    fence_timeout=10,
    degraded_max_period=60,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def available() -> HaStatus:
    return HaStatus().to(HaState.AVAILABLE, T0, "HA enabled")


def health(status: HaStatus, healthy: bool, seconds: float, fence: bool = True) -> HaStatus:
    return host_ha.after_health(status, healthy, at(seconds), FAST, fence)


def activity(status: HaStatus, active: bool, seconds: float, fence: bool = True) -> HaStatus:
    return host_ha.after_activity(status, active, at(seconds), FAST, fence)


def checking() -> HaStatus:
    status = health(health(available(), False, 1), False, 2)
    assert status.state is HaState.CHECKING
    return status


def test_two_failed_health_checks_lead_to_activity_checks_and_one_healthy_clears_them() -> None:
    suspect = health(available(), False, 1)
    assert suspect.state is HaState.SUSPECT
    assert health(suspect, True, 2).state is HaState.AVAILABLE
    status = checking()
    assert host_ha.next_action(status, at(2), FAST) is HaAction.CHECK_ACTIVITY
    assert health(status, True, 3).state is HaState.AVAILABLE


def test_vms_still_active_leave_a_partitioned_host_degraded_never_fenced() -> None:
    status = checking()
    for n in range(FAST.activity_check_max_attempts):
        status = activity(status, True, 2 + 5 * n)
    assert status.state is HaState.DEGRADED
    assert host_ha.next_action(status, at(30), FAST) is HaAction.NONE
    # Still unreachable after degraded.max.period: checked again, not fenced outright.
    assert health(status, False, 30).state is HaState.DEGRADED
    assert health(status, False, 2 + 15 + 60).state is HaState.CHECKING


def test_activity_checks_wait_for_their_interval() -> None:
    status = activity(checking(), True, 2)
    assert status.state is HaState.CHECKING and status.activity_attempts == 1
    assert host_ha.next_action(status, at(4), FAST) is HaAction.NONE
    assert host_ha.next_action(status, at(7), FAST) is HaAction.CHECK_ACTIVITY


def test_enough_failed_activity_checks_recover_by_power_cycle_then_fence() -> None:
    status = activity(activity(checking(), False, 2), False, 7)  # 2 of 4 x 0.5
    assert status.state is HaState.RECOVERING
    assert host_ha.next_action(status, at(7), FAST) is HaAction.RECOVER
    status = host_ha.recovery_sent(status, at(8))
    assert host_ha.next_action(status, at(9), FAST) is HaAction.NONE
    assert health(status, False, 20).state is HaState.RECOVERING  # within the wait period
    fencing = health(status, False, 8 + 30)
    assert fencing.state is HaState.FENCING
    assert host_ha.next_action(fencing, at(38), FAST) is HaAction.FENCE
    # Recovered instead: answering within the wait period.
    recovered = health(status, True, 20)
    assert recovered.state is HaState.RECOVERED
    assert health(recovered, True, 21).state is HaState.AVAILABLE


def test_a_fence_not_confirmed_stays_fencing_and_retries_later_each_time_later() -> None:
    fencing = HaStatus().to(HaState.FENCING, at(0), "fencing", next_fence_at=at(0))
    once = host_ha.after_fence(fencing, False, at(1), "BMC unreachable", FAST.fence_timeout)
    assert once.state is HaState.FENCING and once.fence_attempts == 1
    assert "BMC unreachable" in once.reason
    assert host_ha.next_action(once, at(5), FAST) is HaAction.NONE
    assert host_ha.next_action(once, at(11), FAST) is HaAction.FENCE
    twice = host_ha.after_fence(once, False, at(11), "BMC unreachable", FAST.fence_timeout)
    assert twice.next_fence_at == at(11 + 20)
    # A host that answers while it is being fenced is fenced all the same.
    assert health(twice, True, 12).state is HaState.FENCING
    fenced = host_ha.after_fence(twice, True, at(31), "the BMC reports it off", 10)
    assert fenced.state is HaState.FENCED and fenced.fences == 1
    # Back on (someone powered it up): Fenced until its HA job has stopped its VMs in the books.
    held = host_ha.after_health(fenced, True, at(32), FAST, True, holds_vms=True)
    assert held.state is HaState.FENCED
    assert host_ha.after_health(fenced, True, at(33), FAST, True).state is HaState.AVAILABLE


def test_a_host_that_cannot_be_fenced_is_ineligible_instead() -> None:
    status = checking()
    status = activity(activity(status, False, 2, fence=False), False, 7, fence=False)
    assert status.state is HaState.INELIGIBLE
    assert "no out-of-band management" in status.reason


def test_settings_out_of_range_are_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidParameter) as refused:
        host_ha_operations.check_settings({"activity_check_failure_ratio": 1.5})
    assert refused.value.field == "activity_check_failure_ratio"
    with pytest.raises(InvalidParameter) as refused:
        host_ha_operations.check_settings({"fence_timeout": 0})
    assert refused.value.field == "fence_timeout"
    with pytest.raises(InvalidParameter) as refused:
        host_ha_operations.check_settings({"fence.timeout": 5})
    assert refused.value.field == "fence.timeout"
    assert HaSettings.cloudstack_name("fence_timeout") == "kvm.ha.fence.timeout"


def test_the_recorded_status_round_trips() -> None:
    status = host_ha.after_fence(
        HaStatus().to(HaState.FENCING, at(0), "x", next_fence_at=at(0)), False, at(1), "why", 10
    )
    assert HaStatus.from_recorded(status.recorded()) == status


# -- on the event store ----------------------------------------------------------------------
def cluster_with_a_host(cloud: Cloud, *, bmc: bool = True) -> Host:
    pod = seed_pod(cloud)
    cluster = inventory.add_cluster(cloud, uuid.uuid4(), pod.id, "c", "Simulator")
    host_ha_operations.configure_cluster(cloud, cluster.id, FAST, "configure")
    host = inventory.add_host(
        cloud,
        uuid.uuid4(),
        cluster.id,
        "h1",
        address="127.0.0.1",
        cpu_count=8,
        cpu_speed_mhz=2000,
        memory_mib=16384,
    )
    if bmc:
        host.configure_out_of_band("ipmitool", "127.0.0.1:623", True, command_id="oobm")
        cloud.save(host)
    return host_ha_operations.set_host_ha(cloud, host.id, True, T0, "enable")


def test_enabling_ha_makes_a_host_available_or_ineligible_without_a_bmc(
    memory_cloud: Cloud,
) -> None:
    host = cluster_with_a_host(memory_cloud)
    assert host.ha_state is HaState.AVAILABLE and host.can_take_deployments()
    bare = cluster_with_a_host(memory_cloud, bmc=False)
    assert bare.ha_state is HaState.INELIGIBLE
    off = host_ha_operations.set_host_ha(memory_cloud, host.id, False, at(1), "disable")
    assert off.ha_state is HaState.DISABLED and not off.ha_enabled


def test_observations_are_recorded_once_and_a_suspect_host_takes_no_new_vm(
    memory_cloud: Cloud,
) -> None:
    host = cluster_with_a_host(memory_cloud)
    for _ in range(2):  # a retried step
        host_ha_operations.observe_health(memory_cloud, host.id, False, at(1), "pass-1/health")
    host = memory_cloud.load(Host, host.id)
    assert host.ha_state is HaState.SUSPECT and not host.can_take_deployments()
    changes = [e for e in memory_cloud.events.get(host.id) if type(e).__name__ == "HaChanged"]
    assert len(changes) == 2  # enabled, suspected
    assert [(m["state"], m["ha_enabled"]) for m in host.ha_history] == [
        ("Available", True),
        ("Suspect", True),
    ]
    assert host.ha_history[-1]["reason"] == "the host failed its health check"


def test_a_fenced_hosts_running_vms_stop_releasing_room_and_the_ha_ones_are_named(
    memory_cloud: Cloud,
) -> None:
    host = cluster_with_a_host(memory_cloud)
    vms = []
    for name, ha in (("b-ha", True), ("a-plain", False)):
        vm = new_vm(name=name, ha_enabled=ha)
        bring_to(vm, VmState.RUNNING, host_id=host.id)
        host = memory_cloud.load(Host, host.id)
        host.reserve_capacity(vm.id, 1000, 512, 1.0, 1.0, f"reserve/{vm.id}")
        memory_cloud.save(vm, host)
        vms.append(vm)
    job = uuid.uuid4()
    with pytest.raises(IllegalStateTransition, match="not Fenced"):
        host_ha_operations.vms_of_fenced_host(memory_cloud, host.id)
    host_ha_operations.declare_fenced(memory_cloud, host.id, "admin", at(5), "declare")
    found = host_ha_operations.vms_of_fenced_host(memory_cloud, host.id)
    assert [(v.name, v.ha_enabled) for v in found] == [("b-ha", True), ("a-plain", False)]
    for _ in range(2):  # a retried step
        host_ha_operations.stop_vms_of_fenced_host(
            memory_cloud, job, host.id, [v.vm_id for v in found]
        )
    for vm in vms:
        stopped = memory_cloud.load(VirtualMachine, vm.id)
        assert stopped.state is VmState.STOPPED and stopped.last_host_id == host.id
    assert memory_cloud.load(Host, host.id).reservations == {}
    stops = [
        e
        for vm in vms
        for e in memory_cloud.events.get(vm.id)
        if isinstance(e, VirtualMachine.Transitioned) and str(job) in e.command_id
    ]
    assert len(stops) == 2  # once each, whatever the retries
    # The HA VM is still to restart (it holds no room any more), whatever HA says meanwhile:
    # a fenced host switched off and on is still Fenced.
    for enabled in (False, True):
        switched = host_ha_operations.set_host_ha(
            memory_cloud, host.id, enabled, at(5), f"{enabled}"
        )
        assert (switched.ha_enabled, switched.ha_state) == (enabled, HaState.FENCED)
        left = host_ha_operations.vms_of_fenced_host(memory_cloud, host.id)
        assert [(v.name, v.ha_enabled) for v in left] == [("b-ha", True)]
    # An HA job run while HA is off leaves it off (the monitor must not watch it again).
    host_ha_operations.set_host_ha(memory_cloud, host.id, False, at(6), "off-again")
    host_ha_operations.stop_vms_of_fenced_host(memory_cloud, uuid.uuid4(), host.id, [])
    assert not memory_cloud.load(Host, host.id).ha_enabled
    host_ha_operations.set_host_ha(memory_cloud, host.id, True, at(6), "on-again")
    # Declared again (to re-run a failed HA job): recorded once, the host as it was.
    version = memory_cloud.load(Host, host.id).version
    host_ha_operations.declare_fenced(memory_cloud, host.id, "admin", at(6), "again")
    assert memory_cloud.load(Host, host.id).version == version
