"""The base of Stratus aggregates: remembering which commands were already applied.

Temporal runs activities at least once, so the same command can reach an aggregate twice.
Every command method takes a `command_id` built from stable parts of the job
(`job_id/step[/index]`); the aggregate records the ids it has applied and ignores a repeat,
which makes every append idempotent without locks.
"""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Any, Self
from uuid import UUID

from eventsourcing.domain import Aggregate, CanInitAggregate, Snapshot
from eventsourcing.utils import get_topic, resolve_topic

ENUM_TYPES_KEY = "__enum_types__"


class TypedSnapshot(Snapshot):
    """A snapshot that gives enum attributes their types back.

    A snapshot is the aggregate's `__dict__` as JSON, where a `StrEnum` becomes a plain string:
    restored as is, `host.status is HostStatus.UP` would be False and every state check would
    quietly change meaning once an aggregate had enough events to be snapshotted. The snapshot
    records which attributes held which enum, and restores them.
    """

    @classmethod
    def take(cls, aggregate: Any) -> Self:
        snapshot = super().take(aggregate)
        enums = {k: get_topic(type(v)) for k, v in vars(aggregate).items() if isinstance(v, Enum)}
        if enums:
            snapshot.state[ENUM_TYPES_KEY] = enums
        return snapshot

    def mutate(self, _: None) -> Any:
        aggregate = super().mutate(_)
        state = aggregate.__dict__
        for attribute, topic in state.pop(ENUM_TYPES_KEY, {}).items():
            state[attribute] = resolve_topic(topic)(state[attribute])
        return aggregate


class CloudAggregate(Aggregate):
    Snapshot = TypedSnapshot

    #: How many recent command ids an aggregate remembers. A repeat of an older command would
    #: have to survive longer than Temporal's retry window for a single activity, which is
    #: far shorter than this many later commands on the same aggregate.
    REMEMBERED_COMMANDS = 256

    def has_applied(self, command_id: str) -> bool:
        return command_id in self.__dict__.get("applied_commands", ())

    def _remember(self, command_id: str) -> None:
        """Called from mutators: the list is rebuilt identically when events replay."""
        applied: list[str] = self.__dict__.setdefault("applied_commands", [])
        applied.append(command_id)
        if len(applied) > self.REMEMBERED_COMMANDS:
            del applied[: len(applied) - self.REMEMBERED_COMMANDS]

    @classmethod
    def create_with_id(cls, aggregate_id: UUID, **kwargs: Any) -> Self:
        """Create under a given id (derived from a job id), so that a repeated create collides
        in the event store instead of making a second aggregate."""
        created_event = next(
            value
            for value in vars(cls).values()
            if isinstance(value, type) and issubclass(value, CanInitAggregate)
        )
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        }
        return cls._create(event_class=created_event, id=aggregate_id, **{**defaults, **kwargs})
