"""CloudStack's VM and volume state machines, and the aggregates that enforce them."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import IllegalStateTransition
from domain.virtual_machine import (
    TRANSITIONAL_STATES,
    VM_STATE_MACHINE,
    VirtualMachine,
    VmEvent,
    VmState,
)
from domain.volume import VOLUME_STATE_MACHINE, Volume, VolumeEvent, VolumeState


def new_vm() -> VirtualMachine:
    return VirtualMachine(
        name="vm",
        display_name="vm",
        account_id=uuid.uuid4(),
        zone_id=uuid.uuid4(),
        service_offering_id=uuid.uuid4(),
        template_id=uuid.uuid4(),
        network_id=uuid.uuid4(),
        hypervisor="Simulator",
        cpu_count=1,
        cpu_speed_mhz=1000,
        memory_mib=512,
        root_volume_id=uuid.uuid4(),
        ha_enabled=False,
        job_id=uuid.uuid4(),
    )


def new_volume() -> Volume:
    return Volume(
        name="v", account_id=uuid.uuid4(), zone_id=uuid.uuid4(), volume_type="ROOT", size_bytes=1
    )


def test_a_new_vm_is_stopped_and_a_new_volume_allocated() -> None:
    assert new_vm().state is VmState.STOPPED
    assert new_volume().state is VolumeState.ALLOCATED


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (VmState.STOPPED, VmEvent.START_REQUESTED, VmState.STARTING),
        (VmState.STARTING, VmEvent.OPERATION_RETRY, VmState.STARTING),
        (VmState.STARTING, VmEvent.OPERATION_SUCCEEDED, VmState.RUNNING),
        (VmState.STARTING, VmEvent.OPERATION_FAILED, VmState.STOPPED),
        (VmState.RUNNING, VmEvent.STOP_REQUESTED, VmState.STOPPING),
        (VmState.RUNNING, VmEvent.FOLLOW_AGENT_POWER_OFF_REPORT, VmState.STOPPED),
        (VmState.STOPPING, VmEvent.OPERATION_FAILED, VmState.RUNNING),
        (VmState.STOPPED, VmEvent.OPERATION_FAILED_TO_ERROR, VmState.ERROR),
        (VmState.DESTROYED, VmEvent.RECOVERY_REQUESTED, VmState.STOPPED),
        (VmState.ERROR, VmEvent.DESTROY_REQUESTED, VmState.EXPUNGING),
        (VmState.MIGRATING, VmEvent.OPERATION_FAILED, VmState.RUNNING),
    ],
)
def test_the_vm_table_follows_cloudstack(state: VmState, event: VmEvent, expected: VmState) -> None:
    assert VM_STATE_MACHINE.next_state(state, event) is expected


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (VmState.STOPPED, VmEvent.OPERATION_SUCCEEDED),
        (VmState.RUNNING, VmEvent.START_REQUESTED),
        (VmState.DESTROYED, VmEvent.START_REQUESTED),
        (VmState.EXPUNGING, VmEvent.RECOVERY_REQUESTED),
        (VmState.ERROR, VmEvent.START_REQUESTED),
    ],
)
def test_an_illegal_vm_transition_raises_a_domain_error(state: VmState, event: VmEvent) -> None:
    with pytest.raises(IllegalStateTransition) as refused:
        VM_STATE_MACHINE.next_state(state, event)
    assert state.value in str(refused.value) and event.value in str(refused.value)
    assert refused.value.code == 431


vm_events = st.lists(st.sampled_from(list(VmEvent)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(vm_events)
def test_any_event_sequence_keeps_the_vm_in_a_state_the_table_allows(events: list[VmEvent]) -> None:
    vm = new_vm()
    for n, event in enumerate(events):
        before = vm.state
        allowed = VM_STATE_MACHINE.allows(before, event)
        if allowed:
            vm.transition(event, f"cmd/{n}", host_id=uuid.uuid4())
            assert vm.state is VM_STATE_MACHINE.next_state(before, event)
        else:
            with pytest.raises(IllegalStateTransition):
                vm.transition(event, f"cmd/{n}")
            assert vm.state is before
        # A VM holds a host exactly while it is on one.
        if vm.state in {VmState.STOPPED, VmState.DESTROYED, VmState.ERROR, VmState.EXPUNGING}:
            assert vm.host_id is None


@settings(max_examples=200, deadline=None)
@given(vm_events)
def test_replaying_a_vm_event_sequence_rebuilds_the_same_state(events: list[VmEvent]) -> None:
    vm = new_vm()
    for n, event in enumerate(events):
        if VM_STATE_MACHINE.allows(vm.state, event):
            vm.transition(event, f"cmd/{n}", host_id=uuid.uuid4())
    replayed = None
    for domain_event in vm.collect_events():
        replayed = domain_event.mutate(replayed)
    assert replayed is not None
    assert (replayed.state, replayed.host_id, replayed.last_host_id) == (
        vm.state,
        vm.host_id,
        vm.last_host_id,
    )


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([e for e in VmEvent]))
def test_a_repeated_command_is_applied_once(event: VmEvent) -> None:
    vm = new_vm()
    vm.transition(VmEvent.START_REQUESTED, "job/start")
    version = vm.version
    assert vm.transition(VmEvent.START_REQUESTED, "job/start") is False
    assert vm.version == version and vm.state is VmState.STARTING


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(VolumeEvent)), max_size=40))
def test_any_event_sequence_keeps_the_volume_in_a_state_the_table_allows(
    events: list[VolumeEvent],
) -> None:
    volume = new_volume()
    for n, event in enumerate(events):
        before = volume.state
        if VOLUME_STATE_MACHINE.allows(before, event):
            volume.transition(event, f"cmd/{n}")
            assert volume.state is VOLUME_STATE_MACHINE.next_state(before, event)
        else:
            with pytest.raises(IllegalStateTransition):
                volume.transition(event, f"cmd/{n}")
            assert volume.state is before


def test_every_transitional_state_but_expunging_has_a_way_out() -> None:
    """Expunging ends in removal of the VM, not in another state."""
    for state in TRANSITIONAL_STATES - {VmState.EXPUNGING}:
        outcomes = {
            VM_STATE_MACHINE.next_state(state, e) for e in VM_STATE_MACHINE.events_from(state)
        }
        assert outcomes - {state}, f"{state} cannot be left"


def test_expunged_is_the_only_volume_state_without_a_way_out() -> None:
    dead_ends = {s for s in VolumeState if not VOLUME_STATE_MACHINE.events_from(s)}
    assert dead_ends == {VolumeState.EXPUNGED}


def test_a_bare_metal_host_takes_a_single_instance_whatever_its_size() -> None:
    from domain.errors import InsufficientCapacity
    from domain.host import Host

    machine = Host(
        name="bm",
        zone_id=uuid.uuid4(),
        pod_id=uuid.uuid4(),
        cluster_id=uuid.uuid4(),
        hypervisor="BareMetal",
        address="127.0.0.1:6230",
        cpu_count=64,
        cpu_speed_mhz=3000,
        memory_mib=524288,
    )
    machine.reserve_capacity(uuid.uuid4(), 1000, 1024, 1.0, 1.0, "job-1/reserve")
    assert not machine.can_take_deployments()
    with pytest.raises(InsufficientCapacity):
        machine.reserve_capacity(uuid.uuid4(), 1000, 1024, 1.0, 1.0, "job-2/reserve")
