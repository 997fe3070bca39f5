"""Helpers for the usage tests: a clock that stamps events, a database of one's own, running
the usage projection to a position, and exporting records as bytes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.domain import CanCreateTimestamp
from eventsourcing.projection import ProjectionRunner
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from domain.account import AccountType
from domain.catalog import GIB, Template
from domain.cloud import Cloud, postgres_env
from domain.ids import named_id
from domain.inventory import add_account
from domain.virtual_machine import VirtualMachine, VmEvent
from domain.volume import Volume, VolumeEvent
from projections.runner import bind
from projections.usage import UsageProjection, UsageView
from projections.usage_records import RecordQuery, UsageRecords, export_chunks
from projections.usage_windows import AggregationWindow


@contextlib.contextmanager
def clock(at: datetime) -> Iterator[None]:
    """Every event created inside carries the timestamp `at` (eventsourcing takes event
    timestamps from `create_timestamp`, which this replaces for the duration)."""
    original = CanCreateTimestamp.__dict__["create_timestamp"]
    CanCreateTimestamp.create_timestamp = staticmethod(lambda: at)  # type: ignore[method-assign]
    try:
        yield
    finally:
        CanCreateTimestamp.create_timestamp = original  # type: ignore[method-assign]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@contextlib.contextmanager
def own_database(server_url: str) -> Iterator[str]:
    """A fresh database on the test server: the usage watermark is global to an event store,
    so fixed timelines in the past need a store of their own."""
    name = f"stratus_usage_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, tail = server_url.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{tail}" if tail else "")
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def usage_runner(
    env: dict[str, str],
    projection: type[UsageProjection] = UsageProjection,
    view: type[UsageView] = UsageView,
) -> ProjectionRunner[Any, Any]:
    runner: ProjectionRunner[Any, Any] = ProjectionRunner(
        application_class=Cloud,
        projection_class=bind(projection, env),
        view_class=view,
        env=env,
    )
    return runner.__enter__()


def project(
    env: dict[str, str],
    cloud: Cloud,
    projection: type[UsageProjection] = UsageProjection,
    timeout: float = 60,
) -> None:
    """Run the usage projection until it has every event recorded so far."""
    runner = usage_runner(env, projection)
    try:
        runner.wait(cloud.position(), timeout=timeout)
    finally:
        runner.__exit__(None, None, None)


def pool_for(database_url: str) -> ConnectionPool[Any]:
    return ConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        kwargs={"row_factory": dict_row, "autocommit": True},
        open=True,
    )


def export(
    database_url: str, window: AggregationWindow, query: RecordQuery, fmt: str = "csv"
) -> bytes:
    pool = pool_for(database_url)
    try:
        return b"".join(export_chunks(UsageRecords(pool, window).stream(query), fmt))
    finally:
        pool.close()


def records(
    database_url: str, window: AggregationWindow, query: RecordQuery
) -> list[dict[str, Any]]:
    pool = pool_for(database_url)
    try:
        return list(UsageRecords(pool, window).stream(query))
    finally:
        pool.close()


def drop_usage_tables(database_url: str) -> None:
    """Drop the usage read model for a rebuild; the served ledger (`usage_served`) stays, as
    it must: it records what readers were given, which the events cannot tell."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in (
            "usage_intervals",
            "usage_resources",
            "usage_corrections",
            "usage_projection_tracking",
        ):
            conn.execute(f"DROP TABLE IF EXISTS {table}")


class Timeline:
    """Builds aggregates with events at chosen instants, through the domain's own methods."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.account_name = f"acct-{uuid.uuid4().hex[:8]}"
        self.account_id = named_id("account", self.account_name)
        self.zone_id = uuid.uuid4()
        self.offering_id = uuid.uuid4()
        self.template_id = uuid.uuid4()
        self._step = 0

    def account(self, at: datetime) -> UUID:
        with clock(at):
            add_account(
                self.cloud,
                self.account_id,
                self.account_name,
                AccountType.USER.value,
                uuid.uuid4().hex,
            )
        return self.account_id

    def _command(self) -> str:
        self._step += 1
        return f"usage-test/{self._step}"

    def deploy(self, at: datetime, name: str = "web-1") -> VirtualMachine:
        with clock(at):
            vm = VirtualMachine(
                name=name,
                display_name=name,
                account_id=self.account_id,
                zone_id=self.zone_id,
                service_offering_id=self.offering_id,
                template_id=self.template_id,
                network_id=uuid.uuid4(),
                hypervisor="Simulator",
                cpu_count=1,
                cpu_speed_mhz=1000,
                memory_mib=512,
                root_volume_id=uuid.uuid4(),
                ha_enabled=False,
                job_id=uuid.uuid4(),
            )
            vm.transition(VmEvent.START_REQUESTED, self._command())
            vm.transition(VmEvent.OPERATION_SUCCEEDED, self._command(), host_id=uuid.uuid4())
        self.cloud.save(vm)
        return vm

    def vm(self, vm: VirtualMachine, at: datetime, *events: VmEvent) -> VirtualMachine:
        with clock(at):
            for vm_event in events:
                host = uuid.uuid4() if vm_event is VmEvent.START_REQUESTED else None
                vm.transition(vm_event, self._command(), host_id=host)
        self.cloud.save(vm)
        return vm

    def stop(self, vm: VirtualMachine, at: datetime) -> VirtualMachine:
        return self.vm(vm, at, VmEvent.STOP_REQUESTED, VmEvent.OPERATION_SUCCEEDED)

    def start(self, vm: VirtualMachine, at: datetime) -> VirtualMachine:
        return self.vm(vm, at, VmEvent.START_REQUESTED, VmEvent.OPERATION_SUCCEEDED)

    def volume(
        self, allocated: datetime, created: datetime, size_bytes: int, name: str = "root-1"
    ) -> Volume:
        with clock(allocated):
            volume = Volume(
                name=name,
                account_id=self.account_id,
                zone_id=self.zone_id,
                volume_type="ROOT",
                size_bytes=size_bytes,
                template_id=self.template_id,
            )
            volume.transition(VolumeEvent.CREATE_REQUESTED, self._command())
        with clock(created):
            volume.record_created(uuid.uuid4(), "/pool/x", size_bytes, self._command())
        self.cloud.save(volume)
        return volume

    def destroy_volume(self, volume: Volume, at: datetime) -> Volume:
        with clock(at):
            volume.transition(VolumeEvent.DESTROY_REQUESTED, self._command())
        self.cloud.save(volume)
        return volume

    def template(self, at: datetime, size_bytes: int = 2 * GIB, name: str = "tpl") -> Template:
        with clock(at):
            template = Template(
                name=name,
                display_text=name,
                hypervisor="Simulator",
                format="QCOW2",
                os_type="Linux",
                url="http://images.invalid/x.qcow2",
                size_bytes=size_bytes,
                zone_id=self.zone_id,
                account_id=self.account_id,
                public=False,
            )
        self.cloud.save(template)
        return template


def period(start: str, end: str, **kwargs: Any) -> RecordQuery:
    return RecordQuery(start=utc(start), end=utc(end), **kwargs)


HOUR_MS = 3_600_000
MINUTE_MS = 60_000


def minutes(n: float) -> int:
    return int(n * MINUTE_MS)


def env_of(database_url: str) -> dict[str, str]:
    return postgres_env(database_url)


__all__ = ["HOUR_MS", "MINUTE_MS", "timedelta"]
