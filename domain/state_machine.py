"""A transition table, the way CloudStack's StateMachine2 keeps its VM and volume states.

The table is data, not code, so that the property tests can walk every (state, event) pair and
the API can refuse an operation before a job starts when the read model already shows the
state forbids it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar

from domain.errors import IllegalStateTransition

S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


class StateMachine(Generic[S, E]):
    def __init__(self, resource: str, transitions: Mapping[tuple[S, E], S]) -> None:
        self.resource = resource
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
