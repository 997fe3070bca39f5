"""The event log (listEvents) derived from the domain events: each job logged Scheduled,
Started and Completed with its outcome, out-of-band power changes logged as the system's, and
the whole log rebuilt identically from the event store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row
from temporalio.client import Client

from domain.cloud import Cloud
from domain.host import Host
from domain.inventory import add_account
from domain.power_state import HostReport, SyncPolicy, reconcile_cluster
from domain.virtual_machine import VirtualMachine
from domain.vm_operations import record_queued_job_cancelled
from domain.vm_requests import StartVmRequest, StopVmRequest
from projections.events import (
    EVENT_LOG,
    SYSTEM_USER,
    EventLogProjection,
    EventLogView,
    event_type_of,
    page_event_log,
    row_id,
)
from projections.runner import Projector
from projections.store import ReadStore
from tests.support import fail_before, running_worker, seed_zone, vm_of
from workers.demo_cloud import DemoCloud

ONLY_THE_EVENT_LOG = ((EventLogProjection, EventLogView),)


@pytest.fixture
def reads(database_url: str) -> Iterator[ReadStore]:
    store = ReadStore(database_url)
    yield store
    store.close()


def project(cloud_env: dict[str, str], reads: ReadStore) -> None:
    """Run the event-log projection until it has processed every event recorded so far."""
    with Projector(cloud_env, projections=ONLY_THE_EVENT_LOG):
        assert reads.wait_until_current(EVENT_LOG.name, timeout=30)


def log_of(reads: ReadStore, **filters: Any) -> list[dict[str, Any]]:
    return page_event_log(reads.pool, filters, limit=500).rows


def snapshot(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(f"SELECT * FROM {EVENT_LOG.name} ORDER BY id").fetchall()


def drop_event_log(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {EVENT_LOG.name}")
        conn.execute(f"DROP TABLE IF EXISTS {EventLogProjection.name}_tracking")


def cancel_while_queued(cloud: Cloud, zone: DemoCloud, vm_id: UUID) -> UUID:
    """A stop job cancelled before its turn came, recorded as the VM's queue records it."""
    job_id = uuid.uuid4()
    request = StopVmRequest(
        job_id=job_id,
        vm_id=vm_id,
        account_id=zone.admin_account_id,
        summary=f"stop {vm_id}",
    )
    record_queued_job_cancelled(cloud, request, datetime.now(UTC), "cancelled by test-admin")
    return job_id


def power_off_out_of_band(cloud: Cloud, vm_id: UUID) -> None:
    """The hypervisor lists the VM's host without the VM: the power-state sync follows it."""
    host_id = cloud.load(VirtualMachine, vm_id).host_id
    assert host_id is not None
    outcome = reconcile_cluster(
        cloud,
        cloud.load(Host, host_id).cluster_id,
        f"power-sync-test/{uuid.uuid4()}",
        [HostReport(host_id=host_id, vms={})],
        listed_at=datetime.now(UTC),
        now=datetime.now(UTC),
        policy=SyncPolicy(clock_skew=timedelta(0)),
    )
    assert [c.vm_event for c in outcome.changes] == ["FollowAgentPowerOffReport"]


async def test_jobs_and_out_of_band_changes_are_logged_with_who_what_when_and_outcome(
    temporal_client: Client,
    cloud: Cloud,
    cloud_env: dict[str, str],
    database_url: str,
    reads: ReadStore,
) -> None:
    zone = seed_zone(cloud)
    async with running_worker(temporal_client, cloud) as harness:
        ok = await harness.deploy(zone, "logged-ok")
        await ok.result()
    async with running_worker(
        temporal_client, cloud, around=fail_before("deployment.complete")
    ) as harness:
        failing = await harness.deploy(zone, "logged-fail")
        await asyncio.gather(failing.result(), return_exceptions=True)
    ok_job, failed_job = UUID(ok.id), UUID(failing.id)
    vm_id = vm_of(cloud, ok_job).id
    cancelled_job = cancel_while_queued(cloud, zone, vm_id)
    await asyncio.sleep(0.01)  # the sync compares the VM's last change with its listing time
    power_off_out_of_band(cloud, vm_id)

    project(cloud_env, reads)

    succeeded = log_of(reads, job_id=ok_job)
    assert [(r["state"], r["level"], r["outcome"]) for r in succeeded] == [
        ("Scheduled", "INFO", None),
        ("Started", "INFO", None),
        ("Completed", "INFO", "succeeded"),
    ]
    assert {r["type"] for r in succeeded} == {"VM.CREATE"}
    assert {r["account_id"] for r in succeeded} == {zone.admin_account_id}
    assert {r["username"] for r in succeeded} == {"test-admin"}
    assert {(r["resource_type"], r["resource_id"]) for r in succeeded} == {
        ("VirtualMachine", vm_id)
    }
    assert succeeded[2]["description"] == "deploy logged-ok: completed"
    assert succeeded[0]["created"] < succeeded[1]["created"] < succeeded[2]["created"]

    failed = log_of(reads, job_id=failed_job)
    assert [r["state"] for r in failed] == ["Scheduled", "Started", "Completed"]
    end = failed[-1]
    assert (end["level"], end["outcome"], end["error_code"]) == ("ERROR", "failed", 530)
    assert "injected failure at deployment.complete" in end["error_text"]
    assert end["error_text"] in end["description"] and "530" in end["description"]
    assert [r["level"] for r in failed[:2]] == ["INFO", "INFO"]

    cancelled = log_of(reads, job_id=cancelled_job)
    # Cancelled before its turn: scheduled and cancelled, never started.
    assert [(r["type"], r["state"], r["level"], r["outcome"]) for r in cancelled] == [
        ("VM.STOP", "Scheduled", "INFO", None),
        ("VM.STOP", "Completed", "INFO", "cancelled"),
    ]
    assert cancelled[1]["error_text"] == "cancelled by test-admin"

    out_of_band = [r for r in log_of(reads, resource_id=vm_id) if r["job_id"] is None]
    assert len(out_of_band) == 1
    (power_off,) = out_of_band
    assert (power_off["type"], power_off["level"], power_off["state"]) == (
        "VM.POWER.OFF",
        "INFO",
        "Completed",
    )
    assert power_off["username"] == SYSTEM_USER
    assert power_off["account_id"] == zone.admin_account_id
    assert power_off["outcome"] == "FollowAgentPowerOffReport"
    assert "Running → Stopped" in power_off["description"]
    assert "power-state sync" in power_off["description"]

    # The whole VM's story, oldest first, in one listing.
    story = [(r["type"], r["state"]) for r in log_of(reads, resource_id=vm_id)]
    assert story == [
        ("VM.CREATE", "Scheduled"),
        ("VM.CREATE", "Started"),
        ("VM.CREATE", "Completed"),
        ("VM.STOP", "Scheduled"),
        ("VM.STOP", "Completed"),
        ("VM.POWER.OFF", "Completed"),
    ]

    # Rebuilt from nothing, the log is the same, row for row.
    before = snapshot(database_url)
    drop_event_log(database_url)
    project(cloud_env, reads)
    assert snapshot(database_url) == before


def test_the_listing_filters_by_account_time_window_level_and_pages_without_gaps(
    cloud: Cloud, cloud_env: dict[str, str], reads: ReadStore
) -> None:
    zone = seed_zone(cloud)
    other = add_account(
        cloud, uuid.uuid4(), f"other-{uuid.uuid4().hex[:6]}", "User", f"key-{uuid.uuid4()}"
    )
    vm_id = uuid.uuid4()  # a queued job needs no VM to be logged
    jobs = [cancel_while_queued(cloud, zone, vm_id) for _ in range(3)]
    theirs = uuid.uuid4()
    record_queued_job_cancelled(
        cloud,
        StartVmRequest(
            job_id=theirs,
            vm_id=vm_id,
            account_id=other.id,
            summary="start it",
        ),
        datetime.now(UTC),
        "changed my mind",
    )
    project(cloud_env, reads)

    everything = log_of(reads, resource_id=vm_id)
    assert len(everything) == 8
    mine = log_of(reads, resource_id=vm_id, account_id=zone.admin_account_id)
    assert {r["job_id"] for r in mine} == set(jobs)
    (theirs_scheduled, theirs_cancelled) = log_of(reads, resource_id=vm_id, account_id=other.id)
    assert theirs_scheduled["job_id"] == theirs and theirs_cancelled["username"] == other.name
    assert theirs_scheduled["type"] == "VM.START"
    assert log_of(reads, resource_id=vm_id, level="ERROR") == []

    middle = everything[3]["created"]
    window = page_event_log(
        reads.pool, {"resource_id": vm_id}, start=middle, end=middle, limit=500
    ).rows
    assert window and all(r["created"] == middle for r in window)

    seen: list[UUID] = []
    after = None
    for _ in range(10):
        page = page_event_log(reads.pool, {"resource_id": vm_id}, limit=3, after=after)
        assert page.count == 8
        seen += [r["id"] for r in page.rows]
        if page.last is None:
            break
        after = page.last
    assert seen == [r["id"] for r in everything]


def test_row_ids_come_from_the_domain_event_and_unknown_job_types_still_read_well() -> None:
    job_id = uuid.uuid4()
    assert row_id(job_id, 1, "scheduled") == row_id(job_id, 1, "scheduled")
    assert row_id(job_id, 1, "scheduled") != row_id(job_id, 2, "scheduled")
    assert row_id(job_id, 1, "scheduled") != row_id(job_id, 1, "started")
    assert {
        job_type: event_type_of(job_type)
        for job_type in (
            "DeployVirtualMachine",
            "StartVirtualMachine",
            "StopVirtualMachine",
            "RebootVirtualMachine",
            "DestroyVirtualMachine",
            "RecoverVirtualMachine",
            "ExpungeVirtualMachine",
            "AddHost",
            "CreateVolume",
            "AttachVolume",
            "ConfigureSimulator",
            "EnableStaticNat",
            "power sync",
            "",
        )
    } == {
        "DeployVirtualMachine": "VM.CREATE",
        "StartVirtualMachine": "VM.START",
        "StopVirtualMachine": "VM.STOP",
        "RebootVirtualMachine": "VM.REBOOT",
        "DestroyVirtualMachine": "VM.DESTROY",
        "RecoverVirtualMachine": "VM.RECOVER",
        "ExpungeVirtualMachine": "VM.EXPUNGE",
        "AddHost": "HOST.ADD",
        "CreateVolume": "VOLUME.CREATE",
        "AttachVolume": "VOLUME.ATTACH",
        "ConfigureSimulator": "SIMULATOR.CONFIGURE",
        "EnableStaticNat": "STATICNAT.ENABLE",
        "power sync": "JOB.POWER_SYNC",
        "": "JOB.UNKNOWN",
    }
