"""The machinery shared by Stratus read models.

A read model here is a PostgreSQL table with one row per aggregate, rebuilt from the aggregate's
own state as of each event: the projection applies the event to its cached copy of the
aggregate (or loads that exact version from the event store after a restart) and upserts the
row computed from it. The aggregate's mutators stay the only place state is derived, so a row can
never disagree with the domain, and dropping the tables and replaying gives the same rows.

Rows and the tracking position are written in one transaction (exactly once): an event is either
reflected and tracked, or neither. Text PostgreSQL cannot store (NUL) is written as U+FFFD
(`projections.storable_text`).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate, CanMutateAggregate
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Composed, Identifier, Literal

from domain.cloud import Cloud
from projections.storable_text import storable

Row = dict[str, Any]


def event_topics(*aggregate_classes: type[Aggregate]) -> tuple[str, ...]:
    """Every event topic of the given aggregates: what a projection subscribes to."""
    topics = []
    for cls in aggregate_classes:
        for value in vars(cls).values():
            if isinstance(value, type) and issubclass(value, CanMutateAggregate):
                topics.append(get_topic(value))
    return tuple(sorted(set(topics)))


class Table:
    """One read-model table: its DDL, primary key and columns."""

    def __init__(self, name: str, columns: Mapping[str, str], indexes: Sequence[str] = ()) -> None:
        self.name = name
        self.columns = dict(columns)
        self.indexes = list(indexes)

    def create_statements(self, schema: str) -> list[Composed]:
        cols = ", ".join(f"{name} {ddl}" for name, ddl in self.columns.items())
        statements = [
            SQL("CREATE TABLE IF NOT EXISTS {0}.{1} (" + cols + ")").format(
                Identifier(schema), Identifier(self.name)
            )
        ]
        # A column added to a read model after its table was made (an upgrade) is added in
        # place when the rows it already has can take it: nullable, or with a default. Rows
        # fill in as their aggregates change. A NOT NULL column without a default cannot be:
        # such a table is dropped and replayed (rule 7: read models are disposable).
        for name, ddl in self.columns.items():
            upper = ddl.upper()
            if "PRIMARY KEY" in upper or ("NOT NULL" in upper and "DEFAULT" not in upper):
                continue
            # Checked before altering: ALTER TABLE locks the table even when the column is
            # there, and every process that opens the read models runs these statements.
            statements.append(
                SQL(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns "
                    "WHERE table_schema = {0} AND table_name = {1} AND column_name = {2}) "
                    "THEN ALTER TABLE {3}.{4} ADD COLUMN " + f"{name} {ddl}" + "; END IF; END $$"
                ).format(
                    Literal(schema),
                    Literal(self.name),
                    Literal(name),
                    Identifier(schema),
                    Identifier(self.name),
                )
            )
        for index in self.indexes:
            index_name = f"{self.name}_{index.replace(',', '_').replace(' ', '')}_idx"
            statements.append(
                SQL("CREATE INDEX IF NOT EXISTS {0} ON {1}.{2} (" + index + ")").format(
                    Identifier(index_name[:63]), Identifier(schema), Identifier(self.name)
                )
            )
        return statements

    def upsert_statement(self, schema: str) -> Composed:
        names = list(self.columns)
        updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n != "id")
        return SQL(
            "INSERT INTO {0}.{1} ("
            + ", ".join(names)
            + ") VALUES ("
            + ", ".join(f"%({n})s" for n in names)
            + ") ON CONFLICT (id) DO UPDATE SET "
            + updates
        ).format(Identifier(schema), Identifier(self.name))


class ReadModelView(PostgresTrackingRecorder):
    """A tracking recorder that also owns the projection's tables."""

    tables: ClassVar[Sequence[Table]] = ()

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        for table in self.tables:
            self.sql_create_statements.extend(table.create_statements(datastore.schema))
        self._upserts = {t.name: t.upsert_statement(datastore.schema) for t in self.tables}

    def record(self, table: str, rows: Iterable[Row], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for row in rows:
                curs.execute(self._upserts[table], _adapt(row))
            self._insert_tracking(curs, tracking)


def _adapt(row: Row) -> Row:
    """A row as PostgreSQL takes it: JSON for dicts and lists, and only storable text (see
    `projections.storable_text`), so no event's text can make a read model unwritable."""
    return {
        k: json.dumps(storable(v), default=str) if isinstance(v, dict | list) else storable(v)
        for k, v in row.items()
    }


class AggregateStates:
    """Each aggregate's state as of the event being projected: the event applied to a cached
    copy, or that exact version loaded from the event store (after a restart, or once the copy
    was evicted)."""

    CACHE_SIZE = 10_000

    def __init__(self, cloud_env: Callable[[], Mapping[str, str] | None]) -> None:
        self._cache: OrderedDict[UUID, Aggregate] = OrderedDict()
        self._cloud_env = cloud_env
        self._cloud: Cloud | None = None

    def after(self, domain_event: Any) -> Aggregate:
        aggregate_id = domain_event.originator_id
        version = domain_event.originator_version
        cached = self._cache.pop(aggregate_id, None)
        if cached is not None and cached.version == version - 1:
            aggregate = domain_event.mutate(cached)
        elif version == Aggregate.INITIAL_VERSION:
            aggregate = domain_event.mutate(None)
        else:
            aggregate = self._repository_cloud().repository.get(aggregate_id, version=version)
        self._cache[aggregate_id] = aggregate
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return aggregate

    def _repository_cloud(self) -> Cloud:
        if self._cloud is None:
            self._cloud = Cloud(env=dict(self._cloud_env() or {}))
        return self._cloud


class AggregateStateProjection(Projection[ReadModelView]):
    """Keeps one table row per aggregate, computed from the aggregate's state.

    Subclasses name their `table` and map an aggregate to its row with `row_of`; the runner
    (`projections.runner`) binds `cloud_env` so a projection that resumes mid-stream can load the
    version it needs from the event store.
    """

    table: ClassVar[str]
    cloud_env: ClassVar[Mapping[str, str] | None] = None

    def __init__(self, view: ReadModelView) -> None:
        super().__init__(view)
        self._states = AggregateStates(lambda: self.cloud_env)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        aggregate = self._states.after(domain_event)
        rows = self.rows_of(aggregate)
        self.view.record(self.table, rows, tracking)

    def rows_of(self, aggregate: Any) -> list[Row]:
        return [self.row_of(aggregate)]

    @abstractmethod
    def row_of(self, aggregate: Any) -> Row:
        """The table row of an aggregate in its current state."""
