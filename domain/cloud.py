"""The event store of the cloud, and the one way to change it: load, decide, save.

`Cloud` is the eventsourcing `Application` holding every aggregate in one notification log
(table `cloud_events`), which is what projections follow. Changes go through `Cloud.decide`:
it hands a decision function a fresh `Decision` (a unit of work that loads aggregates), saves
every aggregate the decision touched in one transaction, and on a stale save
(`IntegrityError`: someone else saved first) runs the decision again on fresh state. That is the
optimistic concurrency the host capacity rule relies on.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlparse
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from domain.account import Account
from domain.aggregate import CloudAggregate
from domain.catalog import DiskOffering, ServiceOffering, Template
from domain.cluster import Cluster
from domain.domain_tree import Domain
from domain.errors import ConcurrentChangeConflict, NotFound
from domain.guest_network import GuestNetwork
from domain.host import Host
from domain.job import Job
from domain.snapshot import Snapshot
from domain.snapshot_policy import SnapshotPolicy
from domain.storage import PrimaryStorage, SecondaryStorage
from domain.user import User
from domain.virtual_machine import VirtualMachine
from domain.volume import Volume
from domain.zone import Zone

A = TypeVar("A", bound=CloudAggregate)
R = TypeVar("R")

#: How often a decision is retried after losing an optimistic-concurrency race.
MAX_DECISION_ATTEMPTS = 20


class Cloud(Application[UUID]):
    name = "Cloud"
    env = {"ORIGINATOR_ID_TYPE": "uuid"}
    snapshotting_intervals = {
        Host: 100,
        Cluster: 100,
        Zone: 100,
        PrimaryStorage: 100,
        SecondaryStorage: 100,
        GuestNetwork: 100,
        VirtualMachine: 100,
        Volume: 100,
        Job: 100,
        ServiceOffering: 100,
        DiskOffering: 100,
        Template: 100,
        Snapshot: 100,
        SnapshotPolicy: 100,
        Account: 100,
        Domain: 100,
        User: 100,
    }

    def load(self, cls: type[A], aggregate_id: UUID) -> A:
        found = self.find(cls, aggregate_id)
        if found is None:
            raise NotFound(f"{label_of(cls)} {aggregate_id} not found")
        return found

    def find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, cls) else None

    def decide(self, decision: Callable[[Decision], R]) -> R:
        """Run `decision` on fresh state and save what it changed, retrying lost races.

        Losers back off for a random, growing while: deployments racing for the same host
        (FirstFit packs them onto the first one) would otherwise collide again at once.
        """
        for attempt in range(MAX_DECISION_ATTEMPTS):
            unit = Decision(self)
            result = decision(unit)
            try:
                unit.commit()
            except IntegrityError:
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))
                continue
            return result
        raise ConcurrentChangeConflict(
            "too many concurrent changes to the same resources; try again"
        )

    def position(self) -> int:
        """The id of the last recorded event: what a read-your-writes read waits for."""
        return self.recorder.max_notification_id() or 0


class Decision:
    """One unit of work: the aggregates it loads or adds are saved together, or not at all."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self._touched: dict[UUID, CloudAggregate] = {}

    def get(self, cls: type[A], aggregate_id: UUID) -> A:
        held = self._touched.get(aggregate_id)
        if held is not None:
            if not isinstance(held, cls):
                raise NotFound(f"{label_of(cls)} {aggregate_id} not found")
            return held
        aggregate = self.cloud.load(cls, aggregate_id)
        self._touched[aggregate_id] = aggregate
        return aggregate

    def find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        try:
            return self.get(cls, aggregate_id)
        except NotFound:
            return None

    def add(self, aggregate: A) -> A:
        self._touched[aggregate.id] = aggregate
        return aggregate

    def commit(self) -> None:
        pending = [a for a in self._touched.values() if a.pending_events]
        if pending:
            self.cloud.save(*pending)


def label_of(cls: type[Any]) -> str:
    """'VirtualMachine' -> 'virtual machine', for error messages a user reads."""
    name = cls.__name__
    return "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()


def postgres_env(database_url: str, *, prefix: str = "") -> dict[str, str]:
    """eventsourcing's POSTGRES_* settings from a libpq URL.

    Accepts both TCP URLs (postgresql://user:pw@host:5432/db) and the socket form the embedded
    server gives (postgresql://postgres:@/postgres?host=/path/to/socket/dir).
    """
    url = urlparse(database_url)
    query = parse_qs(url.query)
    host = query.get("host", [url.hostname or "127.0.0.1"])[0]
    port = query.get("port", [str(url.port or 5432)])[0]
    env: Mapping[str, str] = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": port,
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "9",
        "POSTGRES_CONNECT_TIMEOUT": "10",
    }
    return {f"{prefix}{key}": value for key, value in env.items()}
