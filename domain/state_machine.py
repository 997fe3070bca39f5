"""A transition table, the way CloudStack's StateMachine2 keeps its VM and volume states, and
the aggregate that follows one.

The table is data, not code, so that the property tests can walk every (state, event) pair and
the API can refuse an operation before a job starts when the read model already shows the
state forbids it.

`StateMachineAggregate` is the one place where an aggregate (VM, volume, snapshot, VM
snapshot) applies an event of its table: it skips a command it has already applied, asks the
table for the next state (refusing a pair the table does not hold) and records one
`Transitioned` event. Each aggregate still declares its own `Transitioned`, because the name of
the attribute holding the CloudStack event differs between them (`vm_event`, `volume_event`,
`snapshot_event`) and is stored in every event since the first release: projections and the
audit log read it. The event's topic (`domain.virtual_machine:VirtualMachine.Transitioned`, ...)
is the aggregate's, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from domain.aggregate import CloudAggregate
from domain.errors import IllegalStateTransition

S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


class StateMachine(Generic[S, E]):
    def __init__(
        self, resource: str, states: type[S], transitions: Mapping[tuple[S, E], S]
    ) -> None:
        self.resource = resource
        #: The state enum, to turn a stored state name back into a state.
        self.states = states
        self.transitions = dict(transitions)

    def next_state(self, state: S, event: E) -> S:
        try:
            return self.transitions[(state, event)]
        except KeyError:
            raise IllegalStateTransition(
                f"{self.resource} in state {state} does not accept {event}"
            ) from None

    def allows(self, state: S, event: E) -> bool:
        return (state, event) in self.transitions

    def events_from(self, state: S) -> set[E]:
        return {event for (source, event) in self.transitions if source == state}


class StateMachineAggregate(CloudAggregate, Generic[S, E]):
    """An aggregate whose `state` moves only along its `state_machine`'s table.

    A subclass sets `state_machine`, sets `state` in its created event, and declares
    `class Event(StateMachineAggregate.Event)` and
    `class Transitioned(Event, StateMachineAggregate.Transitioned)` with its stored attributes,
    naming the one that holds the CloudStack event in `EVENT_FIELD`.
    """

    # For the type checker only: an annotation in an aggregate's body makes eventsourcing turn
    # the class into a dataclass.
    if TYPE_CHECKING:
        state_machine: StateMachine[S, E]
        state: S
        last_reason: str | None

    #: Aggregates restored from a snapshot taken before they kept the reason still answer.
    last_reason = None

    class Event(CloudAggregate.Event):
        """Declared here (and in each subclass), not left to eventsourcing to make, so that
        `Transitioned` can derive from it: an event class declared in an aggregate's body that
        does not derive from the aggregate's `Event` is replaced by a copy of the same name that
        does, and the original, left in the copy's MRO, would then claim the copy's topic for a
        second class (eventsourcing refuses that when a reader, as the usage projection does,
        asks the topic of every class in an event's MRO)."""

    class Transitioned(Event):
        """One step along the table: `old_state` --(the event)--> `new_state`.

        A subclass declares every stored attribute itself, in the order stored since the first
        release (the CloudStack event first), so the stored JSON stays the same byte for byte.
        """

        #: The stored name of the attribute that holds the CloudStack event.
        EVENT_FIELD: ClassVar[str]

        # Declared for the type checker only: declared here, these dataclass fields would come
        # first in every subclass and change the order of the stored JSON.
        if TYPE_CHECKING:
            old_state: str
            new_state: str
            reason: str | None
            command_id: str

        @property
        def machine_event(self) -> str:
            """The CloudStack event, whatever this aggregate stores it as."""
            return str(getattr(self, self.EVENT_FIELD))

        def apply(self, aggregate: Any) -> None:
            aggregate._on_transitioned(self)

    def transition(self, event: E, command_id: str, *, reason: str | None = None) -> bool:
        """Apply a state-machine event; False when this command was already applied."""
        return self._transition(event, command_id, reason=reason)

    def state_after(self, event: E) -> S:
        """The state `event` leads to from here (IllegalStateTransition if the table says no),
        for the `record_*` methods whose own event carries the new state."""
        return self.state_machine.next_state(self.state, event)

    def _transition(self, event: E, command_id: str, *, reason: str | None, **facts: Any) -> bool:
        """`transition`, with the attributes a subclass's `Transitioned` adds (`facts`)."""
        if self.has_applied(command_id):
            return False
        new_state = self.state_after(event)
        self.trigger_event(
            self.Transitioned,
            **{self.Transitioned.EVENT_FIELD: event.value},
            old_state=self.state.value,
            new_state=new_state.value,
            reason=reason,
            command_id=command_id,
            **facts,
        )
        return True

    def _on_transitioned(self, event: StateMachineAggregate.Transitioned) -> None:
        """The mutator of `Transitioned`: extended by an aggregate that keeps more (a VM's
        host), it runs again, identically, whenever the events are replayed."""
        self.state = self.state_machine.states(event.new_state)
        self.last_reason = event.reason
        self._remember(event.command_id)
