"""The projector: runs every read-model projection against the event store.

Each projection follows the `cloud_events` notification log through eventsourcing's
ProjectionRunner (LISTEN/NOTIFY on PostgreSQL) and resumes from its own tracking position, so
several projector processes may run (see `Projector`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg.errors
from eventsourcing.persistence import IntegrityError, InternalError, OperationalError
from eventsourcing.projection import Projection, ProjectionRunner

from domain.cloud import Cloud
from projections.events import EventLogProjection, EventLogView
from projections.host_capacity import HostCapacityProjection, HostCapacityView
from projections.inventory import InventoryProjection, InventoryView
from projections.jobs import JobsProjection, JobsView
from projections.read_model import ReadModelView
from projections.snapshot_policies import SnapshotPoliciesProjection, SnapshotPoliciesView
from projections.snapshots import SnapshotsProjection, SnapshotsView
from projections.usage import UsageProjection, UsageView
from projections.virtual_machines import VirtualMachinesProjection, VirtualMachinesView
from projections.vm_snapshots import VmSnapshotsProjection, VmSnapshotsView
from projections.volumes import VolumesProjection, VolumesView

#: A projection class (which may read `cloud_env`) and the view holding its tables.
ProjectionClass = type[Projection[Any]]

PROJECTIONS: tuple[tuple[ProjectionClass, type[ReadModelView]], ...] = (
    (VirtualMachinesProjection, VirtualMachinesView),
    (VolumesProjection, VolumesView),
    (JobsProjection, JobsView),
    (HostCapacityProjection, HostCapacityView),
    (InventoryProjection, InventoryView),
    (UsageProjection, UsageView),
    (EventLogProjection, EventLogView),
    (VmSnapshotsProjection, VmSnapshotsView),
    (SnapshotsProjection, SnapshotsView),
    (SnapshotPoliciesProjection, SnapshotPoliciesView),
)


def bind(projection_class: ProjectionClass, env: Mapping[str, str]) -> ProjectionClass:
    """The projection class with the event store's settings, keeping its name (and tables)."""
    return type(
        projection_class.__name__,
        (projection_class,),
        {"name": projection_class.name, "cloud_env": {**env, "CREATE_TABLE": "false"}},
    )


T = TypeVar("T")


def retrying_ddl_races(create: Callable[[], T], attempts: int = 5) -> T:
    """Run something that creates tables, again if another process created them at the same
    moment: PostgreSQL's IF NOT EXISTS does not guard its catalog against concurrent DDL, and
    two processes creating a table and its indexes at once can deadlock on the catalog."""
    for attempt in range(1, attempts + 1):
        try:
            return create()
        except (IntegrityError, InternalError, OperationalError) as error:
            if attempt == attempts or not lost_a_race(error):
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


def lost_a_race(error: BaseException) -> bool:
    """Whether another projector process got there first, and trying again will do: it wrote
    the same tracking position (IntegrityError), changed the catalog at the same moment
    (InternalError: "tuple concurrently updated"), or its DDL and our writes deadlocked
    (PostgreSQL rolled our transaction back whole). A lost connection is not a race."""
    if isinstance(error, IntegrityError | InternalError):
        return True
    return isinstance(error, OperationalError) and isinstance(
        error.__cause__, psycopg.errors.DeadlockDetected
    )


def ensure_event_store(env: Mapping[str, str]) -> None:
    """Create the event store's tables and functions once, before any runner starts."""
    retrying_ddl_races(lambda: Cloud(env=dict(env))).close()


class Projector:
    """Runs the projections, each in its own ProjectionRunner, and keeps them running.

    Several projector processes may follow the same event store. Two that process the same
    event both write its rows and then its tracking position in one transaction; the second
    insert of the position fails (IntegrityError) and rolls back that whole transaction, so
    the rows are written exactly once. The losing runner stops on that error (or on a deadlock
    between one projector's writes and another's start-up DDL, rolled back just as whole), and
    `check` starts it again from the position now recorded.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        projections: tuple[tuple[type[Any], type[ReadModelView]], ...] = PROJECTIONS,
    ) -> None:
        ensure_event_store(env)
        # The event store exists now: the runners' own applications must not issue its DDL
        # again (concurrent CREATE OR REPLACE FUNCTION fails: "tuple concurrently updated").
        self.env = {**env, "CLOUD_CREATE_TABLE": "false"}
        self.specs = {projection.name: (projection, view) for projection, view in projections}
        self.runners: dict[str, ProjectionRunner[Any, Any]] = {}
        self.restarts = 0
        for name in self.specs:
            self._start(name)

    def _start(self, name: str) -> None:
        projection_class, view_class = self.specs[name]
        runner: ProjectionRunner[Any, Any] = retrying_ddl_races(
            lambda: ProjectionRunner(
                application_class=Cloud,
                projection_class=bind(projection_class, self.env),
                view_class=view_class,
                env=self.env,
            )
        )
        self.runners[name] = runner.__enter__()

    def wait(self, position: int, timeout: float = 10.0) -> None:
        """Block until every projection has processed the event at `position`."""
        deadline = time.monotonic() + timeout
        for runner in self.runners.values():
            runner.wait(position, timeout=max(0.01, deadline - time.monotonic()))

    def check(self) -> None:
        """Restart a projection that lost a race to another projector; raise any other error
        that stopped one."""
        for name, runner in list(self.runners.items()):
            if not runner.is_interrupted.is_set():
                continue
            try:
                self._close(runner)
            except Exception as error:
                if not lost_a_race(error):
                    raise
                self.restarts += 1
                self._start(name)

    def stop(self) -> None:
        for runner in self.runners.values():
            with contextlib.suppress(Exception):
                self._close(runner)
        self.runners.clear()

    @staticmethod
    def _close(runner: ProjectionRunner[Any, Any]) -> None:
        """Stop a runner and give back its connections: the runner closes its application's
        pool but not its view's, which a restarted runner would otherwise leak."""
        try:
            runner.__exit__(None, None, None)
        finally:
            runner.view.datastore.close()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
