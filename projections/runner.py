"""The projector: runs every read-model projection against the event store.

Each projection follows the `cloud_events` notification log through eventsourcing's
ProjectionRunner (LISTEN/NOTIFY on PostgreSQL) and resumes from its own tracking position, so
several projector processes may run: the tracking row makes a second write of the same event
fail, and that process reconnects and resumes past it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from eventsourcing.projection import ProjectionRunner

from domain.cloud import Cloud
from projections.host_capacity import HostCapacityProjection, HostCapacityView
from projections.inventory import InventoryProjection, InventoryView
from projections.jobs import JobsProjection, JobsView
from projections.read_model import AggregateStateProjection, ReadModelView
from projections.virtual_machines import VirtualMachinesProjection, VirtualMachinesView
from projections.volumes import VolumesProjection, VolumesView

PROJECTIONS: tuple[tuple[type[AggregateStateProjection], type[ReadModelView]], ...] = (
    (VirtualMachinesProjection, VirtualMachinesView),
    (VolumesProjection, VolumesView),
    (JobsProjection, JobsView),
    (HostCapacityProjection, HostCapacityView),
    (InventoryProjection, InventoryView),
)


def bind(
    projection_class: type[AggregateStateProjection], env: Mapping[str, str]
) -> type[AggregateStateProjection]:
    """The projection class with the event store's settings, keeping its name (and tables)."""
    return type(
        projection_class.__name__,
        (projection_class,),
        {"name": projection_class.name, "cloud_env": dict(env)},
    )


class Projector:
    def __init__(
        self,
        env: Mapping[str, str],
        projections: tuple[tuple[type[AggregateStateProjection], type[ReadModelView]], ...] = (
            PROJECTIONS
        ),
    ) -> None:
        self.runners: dict[str, ProjectionRunner[Any, Any]] = {}
        for projection_class, view_class in projections:
            runner: ProjectionRunner[Any, Any] = ProjectionRunner(
                application_class=Cloud,
                projection_class=bind(projection_class, env),
                view_class=view_class,
                env=dict(env),
            )
            self.runners[projection_class.name] = runner.__enter__()

    def wait(self, position: int, timeout: float = 10.0) -> None:
        """Block until every projection has processed the event at `position`."""
        deadline = time.monotonic() + timeout
        for runner in self.runners.values():
            runner.wait(position, timeout=max(0.01, deadline - time.monotonic()))

    def check(self) -> None:
        """Raise the error that stopped a projection, if one did."""
        for runner in self.runners.values():
            runner.run_forever(timeout=0)

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.__exit__(None, None, None)
        self.runners.clear()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
