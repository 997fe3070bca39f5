"""Read models are disposable: rebuilt from the events they come out the same, and two
projectors following the same event store write every row exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg.rows import dict_row
from temporalio.client import Client, WorkflowFailureError

from domain.cloud import Cloud
from projections.read_model import Table
from projections.runner import PROJECTIONS, Projector
from projections.store import ReadStore
from tests.support import fail_before, running_worker, seed_zone, wait_until

TABLES = [view.tables[0].name for _, view in PROJECTIONS]


def snapshot(database_url: str, tables: list[str] = TABLES) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in tables}


def drop_read_models(database_url: str, projections: Any = PROJECTIONS) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for projection, view in projections:
            conn.execute(f"DROP TABLE IF EXISTS {view.tables[0].name}")
            conn.execute(f"DROP TABLE IF EXISTS {projection.name}_tracking")


async def catch_up(
    projectors: list[Projector], reads: ReadStore, tables: list[str] = TABLES
) -> None:
    def current() -> bool:
        for projector in projectors:
            projector.check()
        return all(reads.is_current(table) for table in tables)

    await wait_until(current, timeout=60, what="the projections to catch up")


async def test_dropping_the_read_models_and_replaying_gives_the_same_rows(
    temporal_client: Client, cloud: Cloud, cloud_env: dict[str, str], database_url: str
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        handles = [await harness.deploy(zone, f"keep-{n}") for n in range(3)]
        await asyncio.gather(*(h.result() for h in handles))
    async with running_worker(
        temporal_client, cloud, around=fail_before("deployment.complete")
    ) as h:
        failing = await h.deploy(zone, "lost")
        lost: object
        (lost,) = await asyncio.gather(failing.result(), return_exceptions=True)
        assert isinstance(lost, WorkflowFailureError), lost
    reads = ReadStore(database_url)
    try:
        with Projector(cloud_env) as first:
            await catch_up([first], reads)
        before = snapshot(database_url)
        assert before["virtual_machines"] and before["jobs"] and before["host_capacity"]

        drop_read_models(database_url)
        with Projector(cloud_env) as rebuilt:
            await catch_up([rebuilt], reads)
        assert snapshot(database_url) == before
    finally:
        reads.close()


async def test_two_projectors_at_once_write_every_row_exactly_once(
    cloud: Cloud, cloud_env: dict[str, str], database_url: str
) -> None:
    # Two busy read models are enough to make the projectors collide; all eight twice over
    # would hold more connections than the test server allows next to the rest of the suite.
    pair = tuple(
        spec for spec in PROJECTIONS if spec[1].tables[0].name in ("jobs", "host_capacity")
    )
    tables = [view.tables[0].name for _, view in pair]
    seed_zone(cloud)
    reads = ReadStore(database_url)
    try:
        with Projector(cloud_env, pair) as alone:
            await catch_up([alone], reads, tables)
        expected = snapshot(database_url, tables)

        drop_read_models(database_url, pair)
        with Projector(cloud_env, pair) as one, Projector(cloud_env, pair) as two:
            await catch_up([one, two], reads, tables)
        assert snapshot(database_url, tables) == expected
    finally:
        reads.close()


def test_a_table_made_before_a_column_existed_gets_it_in_place(database_url: str) -> None:
    """An upgrade: nullable and defaulted columns a read model gained are added to the table it
    already has, its rows kept; asking again changes nothing."""
    table = Table(
        "upgrade_probe",
        {
            "id": "uuid PRIMARY KEY",
            "name": "text NOT NULL",
            "errors": "jsonb",
            "enabled": "boolean NOT NULL DEFAULT false",
        },
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.upgrade_probe")
        conn.execute("CREATE TABLE public.upgrade_probe (id uuid PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO public.upgrade_probe VALUES (gen_random_uuid(), 'old row')")
        for _ in range(2):
            for statement in table.create_statements("public"):
                conn.execute(statement)
        rows = conn.execute("SELECT name, errors, enabled FROM public.upgrade_probe").fetchall()
        conn.execute("DROP TABLE public.upgrade_probe")
    assert rows == [("old row", None, False)]
