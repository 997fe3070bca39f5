"""A poisoned event already in the event store (written before the API refused such input)
stops nothing but its own projection, which is retried and reported, and an operator mends it
without SQL.

Each test has a database of its own: a poisoned event stays in an event store for good, and
the rest of the suite replays the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload
from uuid import UUID

import httpx
import psycopg
import pytest
import uvicorn
from psycopg.rows import dict_row
from temporalio.client import Client
from typer.testing import CliRunner, Result

from api.app import create_app
from api.reads import CONSISTENCY_HEADER
from api.services import CloudServices
from domain.catalog import Template
from domain.cloud import Cloud, postgres_env
from domain.volume import Volume
from projections.runner import PROJECTIONS, Backoff, ProjectionFailure, Projector
from projections.skips import record_skip
from projections.status import ProjectionHealth, ProjectionState
from projections.store import ReadStore
from projections.usage import UsageProjection, UsageView
from projections.volumes import VolumesProjection, VolumesView
from tests.support import ADMIN_KEY, seed_zone
from workers.cli import app as stratus
from workers.stack import supervise

#: Retries quick enough for a test to see several, the same doubling and cap as in production.
QUICK = Backoff(first=0.05, factor=2.0, cap=0.4)
#: Past a PostgreSQL bigint: what a volume size could be before sizes were bounded.
BEYOND_BIGINT = 2**63
VOLUMES_ONLY = ((VolumesProjection, VolumesView),)
T = TypeVar("T")


@pytest.fixture
def store(database_url: str) -> Iterator[str]:
    """A database of the test's own, on the suite's PostgreSQL server."""
    head, _, query = database_url.partition("?")
    base = head.rsplit("/", 1)[0]
    name = f"stratus_poison_{uuid.uuid4().hex[:10]}"
    admin = f"{base}/postgres" + (f"?{query}" if query else "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}" + (f"?{query}" if query else "")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cloud(store: str) -> Iterator[Cloud]:
    app = Cloud(env=postgres_env(store))
    yield app
    app.close()


@pytest.fixture(autouse=True)
def projector_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="projections.runner")
    return caplog


def data_volume(cloud: Cloud, zone_id: UUID, account_id: UUID, name: str, size: int) -> Volume:
    volume = Volume(
        name=name, account_id=account_id, zone_id=zone_id, volume_type="DATADISK", size_bytes=size
    )
    cloud.save(volume)
    return volume


def rows(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def messages(caplog: pytest.LogCaptureFixture, level: int, *parts: str) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.levelno == level]
    return [m for m in found if all(part in m for part in parts)]


def failed_at(projector: Projector, *notification_ids: int) -> list[ProjectionFailure]:
    """The projector's failed attempts at these events (not, say, a connection the busy test
    server refused)."""
    return [
        f
        for f in projector.failures
        if f.event is not None and f.event.notification_id in notification_ids
    ]


def until(projector: Projector, condition: Callable[[], T | None], what: str) -> T:
    """Supervise the projector, as `stratus projector` does, until `condition` holds."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        projector.check()
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within 60 s: {what}")


@overload
async def eventually(condition: Callable[[], Awaitable[T | None]], what: str) -> T: ...


@overload
async def eventually(condition: Callable[[], T | None], what: str) -> T: ...


async def eventually(condition: Callable[[], Any], what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        found = condition()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within 60 s: {what}")


@dataclass
class Served:
    url: str
    projector: Projector

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"X-API-Key": ADMIN_KEY}, timeout=30)

    async def stratus(self, *args: str) -> Result:
        """The `stratus` CLI against this API, as an operator runs it."""
        env = {"STRATUS_API_URL": self.url, "STRATUS_API_KEY": ADMIN_KEY, "COLUMNS": "300"}
        return await asyncio.to_thread(CliRunner().invoke, stratus, list(args), env=env)


@asynccontextmanager
async def serving(url: str, cloud: Cloud, temporal_client: Client) -> AsyncIterator[Served]:
    """The API (uvicorn on a loopback port) and a supervised projector, as `stratus up` runs
    them."""
    projector = Projector(postgres_env(url), backoff=QUICK, heartbeat_every=0.1)
    reads = ReadStore(url)
    services = CloudServices(
        cloud=cloud,
        reads=reads,
        temporal=temporal_client,
        task_queue="poison-tests",
        consistency_timeout=20,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning")
    )
    serve = asyncio.create_task(server.serve())
    supervisor = asyncio.create_task(supervise(projector, every=0.05))
    try:
        await eventually(lambda: server.started, "the API to start")
        yield Served(f"http://127.0.0.1:{port}", projector)
    finally:
        server.should_exit = True
        await serve
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        projector.stop()
        reads.close()


async def test_a_poisoned_event_blocks_only_its_projection_until_an_operator_skips_it(
    store: str, cloud: Cloud, temporal_client: Client, projector_log: pytest.LogCaptureFixture
) -> None:
    zone = seed_zone(cloud)
    poisoned = data_volume(cloud, zone.zone_id, zone.admin_account_id, "huge", BEYOND_BIGINT)
    n = cloud.position()
    topic = "domain.volume:Volume.Allocated"

    async with serving(store, cloud, temporal_client) as served, served.http() as http:

        async def blocked() -> dict[str, Any] | None:
            answer = await http.get("/healthz")
            states = {p["projection"]: p for p in answer.json()["projections"]}
            volumes = states["volumes_projection"]
            return answer.json() if volumes["state"] == "retrying" else None

        # /healthz names the projection, the event and the error, and answers 503.
        health = await eventually(blocked, "/healthz to report the volumes projection blocked")
        assert (await http.get("/healthz")).status_code == 503
        states = {p["projection"]: p for p in health["projections"]}
        volumes = states["volumes_projection"]
        assert volumes["blocking_event"] == {
            "notification_id": n,
            "topic": topic,
            "originator_id": str(poisoned.id),
        }
        assert "out of range" in volumes["error"]
        assert health["status"] == "failing"
        assert {name for name, p in states.items() if p["state"] != "running"} == {
            "volumes_projection"
        }
        assert (await http.get("/livez")).status_code == 200

        # Every attempt is logged, with the event.
        attempts = (logging.ERROR, "volumes_projection", f"event {n}", topic, str(poisoned.id))
        await eventually(
            lambda: len(messages(projector_log, *attempts, "out of range")) >= 3,
            "three attempts logged",
        )

        # The other read models keep up with later events; the blocked one answers at once.
        later = seed_zone(cloud)
        fine = data_volume(cloud, later.zone_id, later.admin_account_id, "fine", 2**30)
        zones = await http.get("/v1/zones", params={"consistent": "true", "limit": 500})
        assert zones.headers[CONSISTENCY_HEADER] == "true"
        assert str(later.zone_id) in {z["id"] for z in zones.json()["data"]}
        started = time.monotonic()
        listing = await http.get("/v1/volumes", params={"consistent": "true"})
        assert time.monotonic() - started < 5  # the consistency timeout is 20 s
        assert listing.headers[CONSISTENCY_HEADER] == "false"
        assert str(fine.id) not in {v["id"] for v in listing.json()["data"]}

        # The operator sees it in the CLI, and mends it there: only the blocking event.
        status = await served.stratus("projections", "status")
        assert status.exit_code == 1, status.output
        assert "volumes_projection" in status.output and str(n) in status.output
        retried = await served.stratus("projections", "retry", "volumes_projection")
        assert retried.exit_code == 0, retried.output
        await eventually(
            lambda: messages(
                projector_log, logging.WARNING, "volumes_projection", "trying again now"
            ),
            "the retry request honoured",
        )
        wrong = await served.stratus(
            "projections", "skip", "volumes_projection", str(n + 1000), "--reason", "typo"
        )
        assert wrong.exit_code == 1 and f"blocked on event {n}" in wrong.output, wrong.output
        reason = "size beyond any disk, accepted before sizes were bounded"
        skipped = await served.stratus(
            "projections", "skip", "volumes_projection", str(n), "--reason", reason
        )
        assert skipped.exit_code == 0, skipped.output

        # It resumes: later volumes appear, the poisoned one never does.
        async def healthy() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await eventually(healthy, "/healthz to answer 200 after the skip")
        listing = await http.get("/v1/volumes", params={"consistent": "true"})
        assert listing.headers[CONSISTENCY_HEADER] == "true"
        listed = {v["id"] for v in listing.json()["data"]}
        assert str(fine.id) in listed and str(poisoned.id) not in listed

        # The skip is audited and was logged when applied.
        audit = (await http.get("/v1/projections/volumes_projection/skips")).json()["data"]
        assert len(audit) == 1
        assert audit[0]["notification_id"] == n and audit[0]["reason"] == reason
        assert audit[0]["skipped_by"].startswith("test-admin")
        assert audit[0]["applied_at"] is not None and "out of range" in audit[0]["error"]
        listed_skips = await served.stratus("projections", "skips", "volumes_projection")
        assert reason in listed_skips.output and str(n) in listed_skips.output
        assert messages(projector_log, logging.WARNING, "skipped event", str(n), reason)
        again = await http.post(
            "/v1/projections/volumes_projection/skips",
            json={"notification_id": n, "reason": reason},
        )
        assert again.status_code == 409
        assert (await served.stratus("projections", "status")).exit_code == 0


def test_a_skip_holds_when_the_read_model_is_rebuilt(store: str, cloud: Cloud) -> None:
    zone = seed_zone(cloud)
    data_volume(cloud, zone.zone_id, zone.admin_account_id, "before", 2**30)
    data_volume(cloud, zone.zone_id, zone.admin_account_id, "huge", BEYOND_BIGINT)
    n = cloud.position()
    data_volume(cloud, zone.zone_id, zone.admin_account_id, "after", 2**31)
    env = postgres_env(store)
    reads = ReadStore(store)
    try:
        with Projector(env, VOLUMES_ONLY, backoff=QUICK, heartbeat_every=0.05) as projector:

            def blocked_at_n() -> bool:
                (health,) = [
                    h for h in reads.projection_health() if h.projection == "volumes_projection"
                ]
                return (
                    health.blocking_event is not None and health.blocking_event.notification_id == n
                )

            until(projector, blocked_at_n, f"the volumes projection blocked at {n}")
            with reads.pool.connection() as conn:
                record_skip(
                    conn, "volumes_projection", n, reason="test", by_account_id=None, by="test"
                )
            until(projector, lambda: reads.is_current("volumes"), "the volumes read model")
        before = rows(store, "SELECT * FROM volumes ORDER BY id")
        assert [v["name"] for v in sorted(before, key=lambda v: v["created"])] == [
            "before",
            "after",
        ]

        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute("DROP TABLE volumes")
            conn.execute("DROP TABLE volumes_projection_tracking")
        with Projector(env, VOLUMES_ONLY, backoff=QUICK, heartbeat_every=0.05) as rebuilt:
            until(rebuilt, lambda: reads.is_current("volumes"), "the rebuilt volumes read model")
            # The recorded skip applies without failing on the event first.
            assert not failed_at(rebuilt, n), list(rebuilt.failures)
        assert rows(store, "SELECT * FROM volumes ORDER BY id") == before
    finally:
        reads.close()


def test_text_postgresql_cannot_store_is_written_as_replacement_characters(
    store: str, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    volume = data_volume(cloud, zone.zone_id, zone.admin_account_id, "a\x00b\x00", 2**30)
    reads = ReadStore(store)
    try:
        with Projector(postgres_env(store), backoff=QUICK) as projector:
            until(
                projector,
                lambda: all(reads.is_current(view.tables[0].name) for _, view in PROJECTIONS),
                "every read model",
            )
            # What a NUL made PostgreSQL raise, at every attempt, before it was replaced.
            refused = [f for f in projector.failures if "DataError" in f.error]
            assert not refused, refused
        (row,) = rows(store, "SELECT name FROM volumes WHERE id = %s", volume.id)
        assert row["name"] == "a\ufffdb\ufffd"  # visible where the NULs were
    finally:
        reads.close()


def test_with_no_live_projector_its_projections_are_stopped_and_reads_do_not_wait(
    store: str, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    reads = ReadStore(store)

    def volumes() -> ProjectionHealth:
        (health,) = [h for h in reads.projection_health() if h.projection == "volumes_projection"]
        return health

    def answers_at_once() -> bool:
        started = time.monotonic()
        caught_up = reads.wait_until_current("volumes", timeout=20)
        return not caught_up and time.monotonic() - started < 5

    try:
        with Projector(postgres_env(store), VOLUMES_ONLY, backoff=QUICK) as projector:
            until(projector, lambda: reads.is_current("volumes"), "the volumes read model")
        data_volume(cloud, zone.zone_id, zone.admin_account_id, "unseen", 2**30)
        # Stopped cleanly, the projector withdrew its rows: none runs the projection.
        assert volumes().state is ProjectionState.STOPPED and "no projector" in volumes().detail
        assert answers_at_once()
        # A projector that died left its last report behind, and it goes stale.
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO projection_status (projection, projector, state, position, "
                "heartbeat_at) VALUES ('volumes_projection', 'gone:1:dead', 'running', 1, "
                "now() - interval '2 minutes')"
            )
        assert volumes().state is ProjectionState.STOPPED
        assert "no heartbeat from projector gone:1:dead for " in volumes().detail
        assert answers_at_once()
    finally:
        reads.close()


class SmallBatchUsage(UsageProjection):
    """The usage projection batching a handful of events per transaction, so that a short
    test has a poisoned event in the middle of a batch."""

    name = UsageProjection.name
    BATCH_SIZE = 5


def test_a_batching_projection_names_the_event_it_cannot_write_inside_a_batch(
    store: str, cloud: Cloud, projector_log: pytest.LogCaptureFixture
) -> None:
    zone = seed_zone(cloud)

    def registered(name: str, size: int) -> Template:
        """A private template: its registration opens a TEMPLATE usage interval at once."""
        template = Template(
            name=name,
            display_text=name,
            hypervisor="Simulator",
            format="QCOW2",
            os_type="Linux",
            url=f"http://templates.example/{name}.qcow2",
            size_bytes=size,
            zone_id=zone.zone_id,
            account_id=zone.admin_account_id,
            public=False,
        )
        cloud.save(template)
        return template

    fine = [registered(f"fine-{i}", 2**30) for i in range(7)]
    poisoned = registered("huge", BEYOND_BIGINT)
    n = cloud.position()
    fine += [registered(f"later-{i}", 2**30) for i in range(7)]
    reads = ReadStore(store)
    try:
        usage_only = ((SmallBatchUsage, UsageView),)
        with Projector(postgres_env(store), usage_only, backoff=QUICK) as projector:

            def blocked() -> Any:
                (health,) = [
                    h for h in reads.projection_health() if h.projection == "usage_projection"
                ]
                return health.blocking_event

            event = until(projector, blocked, "the usage projection blocked")
            assert event.notification_id == n
            assert event.topic == "domain.catalog:Template.Registered"
            assert event.originator_id == str(poisoned.id)
            assert messages(projector_log, logging.WARNING, "usage_projection", "batch")
            with reads.pool.connection() as conn:
                record_skip(conn, "usage_projection", n, reason="test", by_account_id=None, by="t")
            until(projector, lambda: reads.is_current("usage_intervals"), "usage to catch up")
        metered = {r["resource_id"] for r in rows(store, "SELECT resource_id FROM usage_intervals")}
        assert {v.id for v in fine} <= metered and poisoned.id not in metered
    finally:
        reads.close()
