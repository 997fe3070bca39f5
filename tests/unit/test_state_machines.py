"""CloudStack's VM, volume, snapshot and VM snapshot state machines, and the aggregates that
follow them.

The tables below are the specification, written out in full: every (state, event) pair they
hold must move the aggregate to the state they name, and every other pair must be refused and
change nothing. A change to a table in domain/ that is not made here too fails
`test_the_domain_table_is_the_specified_one`.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import IllegalStateTransition
from domain.snapshot import SNAPSHOT_STATE_MACHINE, SnapshotEvent, SnapshotState
from domain.state_machine import StateMachine, StateMachineAggregate
from domain.virtual_machine import (
    ON_HOST_STATES,
    TRANSITIONAL_STATES,
    VM_STATE_MACHINE,
    VirtualMachine,
    VmEvent,
    VmState,
)
from domain.vm_snapshot import VM_SNAPSHOT_STATE_MACHINE, VmSnapshotEvent, VmSnapshotState
from domain.volume import VOLUME_STATE_MACHINE, VolumeEvent, VolumeState
from tests.unit.builders import (
    bring_to,
    new_snapshot,
    new_vm,
    new_vm_snapshot,
    new_volume,
    path_to,
)

VM_TABLE = """
Stopped    StartRequested             Starting
Stopped    DestroyRequested           Destroyed
Stopped    ExpungeOperation           Expunging
Stopped    OperationFailedToError     Error
Stopped    StorageMigrationRequested  Migrating
Stopped    FollowAgentPowerOnReport   Running
Stopped    StopRequested              Stopped
Stopped    AgentReportStopped         Stopped
Stopped    OperationFailed            Stopped
Stopped    FollowAgentPowerOffReport  Stopped
Starting   OperationRetry             Starting
Starting   OperationSucceeded         Running
Starting   AgentReportRunning         Running
Starting   FollowAgentPowerOnReport   Running
Starting   OperationFailed            Stopped
Starting   AgentReportStopped         Stopped
Starting   FollowAgentPowerOffReport  Stopped
Running    MigrationRequested         Migrating
Running    StopRequested              Stopping
Running    AgentReportStopped         Stopped
Running    FollowAgentPowerOffReport  Stopped
Stopping   OperationSucceeded         Stopped
Stopping   AgentReportStopped         Stopped
Stopping   FollowAgentPowerOffReport  Stopped
Stopping   OperationFailed            Running
Stopping   AgentReportRunning         Running
Migrating  OperationSucceeded         Running
Migrating  OperationFailed            Running
Migrating  AgentReportRunning         Running
Migrating  AgentReportStopped         Stopped
Migrating  FollowAgentPowerOffReport  Stopped
Destroyed  RecoveryRequested          Stopped
Destroyed  ExpungeOperation           Expunging
Expunging  OperationFailed            Expunging
Expunging  ExpungeOperation           Expunging
Error      DestroyRequested           Expunging
Error      ExpungeOperation           Expunging
"""

VOLUME_TABLE = """
Allocated           CreateRequested          Creating
Allocated           DestroyRequested         Destroy
Creating            OperationSucceeded       Ready
Creating            OperationFailed          Allocated
Ready               DestroyRequested         Destroy
Ready               ResizeRequested          Resizing
Ready               SnapshotRequested        Snapshotting
Ready               RevertSnapshotRequested  RevertSnapshotting
Ready               MigrationRequested       Migrating
Ready               AttachRequested          Attaching
Resizing            OperationSucceeded       Ready
Resizing            OperationFailed          Ready
Snapshotting        OperationSucceeded       Ready
Snapshotting        OperationFailed          Ready
RevertSnapshotting  OperationSucceeded       Ready
RevertSnapshotting  OperationFailed          Ready
Migrating           OperationSucceeded       Ready
Migrating           OperationFailed          Ready
Attaching           OperationSucceeded       Ready
Attaching           OperationFailed          Ready
Destroy             ExpungingRequested       Expunging
Destroy             RecoverRequested         Ready
Expunging           OperationSucceeded       Expunged
Expunging           OperationFailed          Expunging
"""

SNAPSHOT_TABLE = """
Allocated         CreateRequested     Creating
Allocated         OperationFailed     Error
Creating          OperationSucceeded  CreatedOnPrimary
Creating          OperationFailed     Error
CreatedOnPrimary  BackupToSecondary   BackingUp
CreatedOnPrimary  OperationFailed     Error
BackingUp         OperationSucceeded  BackedUp
BackingUp         OperationFailed     Error
BackedUp          DestroyRequested    Destroying
Destroying        OperationSucceeded  Destroyed
Destroying        OperationFailed     BackedUp
Error             DestroyRequested    Destroyed
"""

VM_SNAPSHOT_TABLE = """
Allocated  CreateRequested     Creating
Creating   OperationSucceeded  Ready
Creating   OperationFailed     Error
Ready      RevertRequested     Reverting
Ready      ExpungeRequested    Expunging
Reverting  OperationSucceeded  Ready
Reverting  OperationFailed     Ready
Expunging  ExpungeRequested    Expunging
Expunging  OperationSucceeded  Removed
Expunging  OperationFailed     Error
Error      ExpungeRequested    Expunging
"""


@dataclass(frozen=True)
class Machine:
    """One aggregate kind, its table, and how to make a fresh one."""

    name: str
    machine: StateMachine[Any, Any]
    states: type[StrEnum]
    events: type[StrEnum]
    spec: str
    initial: StrEnum
    new: Callable[[], StateMachineAggregate[Any, Any]]
    #: What every transition of this kind is given (a VM is told its host).
    facts: Callable[[], dict[str, Any]] = dict

    @property
    def table(self) -> dict[tuple[StrEnum, StrEnum], StrEnum]:
        rows = (line.split() for line in self.spec.strip().splitlines())
        return {(self.states(s), self.events(e)): self.states(n) for s, e, n in rows}


MACHINES = [
    Machine(
        "vm",
        VM_STATE_MACHINE,
        VmState,
        VmEvent,
        VM_TABLE,
        VmState.STOPPED,
        new_vm,
        lambda: {"host_id": uuid.uuid4()},
    ),
    Machine(
        "volume",
        VOLUME_STATE_MACHINE,
        VolumeState,
        VolumeEvent,
        VOLUME_TABLE,
        VolumeState.ALLOCATED,
        new_volume,
    ),
    Machine(
        "snapshot",
        SNAPSHOT_STATE_MACHINE,
        SnapshotState,
        SnapshotEvent,
        SNAPSHOT_TABLE,
        SnapshotState.ALLOCATED,
        new_snapshot,
    ),
    Machine(
        "vm-snapshot",
        VM_SNAPSHOT_STATE_MACHINE,
        VmSnapshotState,
        VmSnapshotEvent,
        VM_SNAPSHOT_TABLE,
        VmSnapshotState.ALLOCATED,
        new_vm_snapshot,
    ),
]
BY_NAME = {m.name: m for m in MACHINES}


def allowed_pairs() -> list[Any]:
    return [
        pytest.param(m.name, state, event, expected, id=f"{m.name}:{state}+{event}")
        for m in MACHINES
        for (state, event), expected in m.table.items()
    ]


def refused_pairs() -> list[Any]:
    return [
        pytest.param(m.name, state, event, id=f"{m.name}:{state}+{event}")
        for m in MACHINES
        for state, event in itertools.product(m.states, m.events)
        if (state, event) not in m.table
    ]


def at(m: Machine, state: StrEnum) -> StateMachineAggregate[Any, Any]:
    """A fresh aggregate of this kind, walked to `state`, its setup events already collected."""
    aggregate = m.new()
    bring_to(aggregate, state, **m.facts())
    aggregate.collect_events()
    return aggregate


@pytest.mark.parametrize("name", BY_NAME)
def test_the_domain_table_is_the_specified_one(name: str) -> None:
    m = BY_NAME[name]
    assert m.machine.transitions == m.table
    assert m.machine.states is m.states


@pytest.mark.parametrize("name", BY_NAME)
def test_a_new_aggregate_starts_in_the_initial_state_and_every_state_can_be_reached(
    name: str,
) -> None:
    m = BY_NAME[name]
    assert m.new().state is m.initial
    for state in m.states:
        path_to(m.machine, m.initial, state)  # raises when the table has no way there


@pytest.mark.parametrize(("name", "state", "event", "expected"), allowed_pairs())
def test_an_allowed_pair_moves_the_aggregate_and_records_one_transition(
    name: str, state: StrEnum, event: StrEnum, expected: StrEnum
) -> None:
    m = BY_NAME[name]
    aggregate = at(m, state)
    assert aggregate.transition(event, "job/step", **m.facts()) is True
    assert aggregate.state is expected
    [recorded] = aggregate.collect_events()
    assert isinstance(recorded, StateMachineAggregate.Transitioned)
    assert (recorded.machine_event, recorded.old_state, recorded.new_state) == (
        event.value,
        state.value,
        expected.value,
    )
    assert recorded.command_id == "job/step" and aggregate.has_applied("job/step")


@pytest.mark.parametrize(("name", "state", "event"), refused_pairs())
def test_a_refused_pair_raises_and_changes_nothing(
    name: str, state: StrEnum, event: StrEnum
) -> None:
    m = BY_NAME[name]
    aggregate = at(m, state)
    version = aggregate.version
    with pytest.raises(IllegalStateTransition) as refused:
        aggregate.transition(event, "job/step", **m.facts())
    assert state.value in str(refused.value) and event.value in str(refused.value)
    assert refused.value.code == 431
    assert aggregate.state is state and aggregate.version == version
    assert not aggregate.collect_events() and not aggregate.has_applied("job/step")


@pytest.mark.parametrize("name", BY_NAME)
def test_a_repeated_command_is_applied_once(name: str) -> None:
    m = BY_NAME[name]
    aggregate = m.new()
    first = sorted(m.machine.events_from(m.initial))[0]
    assert aggregate.transition(first, "job/first", **m.facts()) is True
    state, version = aggregate.state, aggregate.version
    # Ignored, not refused, even where the table refuses the event from the new state.
    assert aggregate.transition(first, "job/first", **m.facts()) is False
    assert (aggregate.state, aggregate.version) == (state, version)


@pytest.mark.parametrize("name", BY_NAME)
def test_the_reason_of_the_last_transition_is_kept_and_cleared_by_the_next(name: str) -> None:
    m = BY_NAME[name]
    aggregate = m.new()
    first = sorted(m.machine.events_from(m.initial))[0]
    aggregate.transition(first, "job/1", reason="the hypervisor said no", **m.facts())
    assert aggregate.last_reason == "the hypervisor said no"
    follow_up = sorted(m.machine.events_from(aggregate.state))[0]
    aggregate.transition(follow_up, "job/2", **m.facts())
    assert aggregate.last_reason is None


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(MACHINES), st.data())
def test_any_event_sequence_follows_the_table_and_replays_to_the_same_aggregate(
    m: Machine, data: st.DataObject
) -> None:
    events = data.draw(st.lists(st.sampled_from(list(m.events)), max_size=30))
    aggregate = m.new()
    for n, event in enumerate(events):
        before = aggregate.state
        if m.machine.allows(before, event):
            aggregate.transition(event, f"cmd/{n}", **m.facts())
            assert aggregate.state is m.machine.next_state(before, event)
        else:
            with pytest.raises(IllegalStateTransition):
                aggregate.transition(event, f"cmd/{n}", **m.facts())
            assert aggregate.state is before
        if m.name == "vm":
            # A VM holds a host exactly while it is on one.
            assert isinstance(aggregate, VirtualMachine)
            assert (aggregate.host_id is not None) == (aggregate.state in ON_HOST_STATES)
    replayed = None
    for domain_event in aggregate.collect_events():
        replayed = domain_event.mutate(replayed)
    assert replayed is not None and vars(replayed) == vars(aggregate)


def test_a_vm_keeps_the_host_it_was_started_on_and_remembers_it_once_stopped() -> None:
    vm, host = new_vm(), uuid.uuid4()
    vm.transition(VmEvent.START_REQUESTED, "job/start-requested", host_id=host)
    assert (vm.host_id, vm.last_host_id) == (host, None)  # not yet run there
    vm.transition(VmEvent.OPERATION_SUCCEEDED, "job/running")  # no host named: it stays
    assert (vm.host_id, vm.last_host_id) == (host, host)
    vm.transition(VmEvent.STOP_REQUESTED, "stop/stop-requested")
    vm.transition(VmEvent.OPERATION_SUCCEEDED, "stop/stopped")
    assert (vm.state, vm.host_id, vm.last_host_id) == (VmState.STOPPED, None, host)


def test_a_migrated_vm_is_on_its_new_host() -> None:
    vm, source, target = new_vm(), uuid.uuid4(), uuid.uuid4()
    bring_to(vm, VmState.RUNNING, host_id=source)
    vm.transition(VmEvent.MIGRATION_REQUESTED, "migrate/requested")
    vm.transition(VmEvent.OPERATION_SUCCEEDED, "migrate/done", host_id=target)
    assert (vm.state, vm.host_id, vm.last_host_id) == (VmState.RUNNING, target, target)


def test_every_transitional_vm_state_but_expunging_has_a_way_out() -> None:
    """Expunging ends in removal of the VM, not in another state."""
    for state in TRANSITIONAL_STATES - {VmState.EXPUNGING}:
        outcomes = {
            VM_STATE_MACHINE.next_state(state, e) for e in VM_STATE_MACHINE.events_from(state)
        }
        assert outcomes - {state}, f"{state} cannot be left"


@pytest.mark.parametrize(
    ("name", "ends"),
    [
        ("vm", set()),
        ("volume", {VolumeState.EXPUNGED}),
        ("snapshot", {SnapshotState.DESTROYED}),
        ("vm-snapshot", {VmSnapshotState.REMOVED}),
    ],
)
def test_only_the_final_states_have_no_way_out(name: str, ends: set[StrEnum]) -> None:
    machine = BY_NAME[name].machine
    assert {s for s in BY_NAME[name].states if not machine.events_from(s)} == ends
