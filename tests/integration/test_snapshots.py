"""Aggregates loaded from a snapshot behave exactly as aggregates rebuilt from their events."""

from __future__ import annotations

import uuid
from enum import Enum

from domain.catalog import Template
from domain.cloud import Cloud
from domain.host import Host, HostStatus, ResourceState
from domain.job import Job, JobStatus
from domain.storage import PrimaryStorage, StorageScope
from tests.support import seed_zone


def enum_attributes(aggregate: object) -> dict[str, Enum]:
    return {k: v for k, v in vars(aggregate).items() if isinstance(v, Enum)}


def test_a_snapshotted_host_keeps_its_enum_states_and_takes_deployments(cloud: Cloud) -> None:
    zone = seed_zone(cloud)
    host_id = zone.host_ids[0]
    cloud.decide(
        lambda d: d.get(Host, host_id).reserve_capacity(
            uuid.uuid4(), 1000, 512, 1.0, 1.0, f"{uuid.uuid4()}/reserve"
        )
    )
    from_events = cloud.load(Host, host_id)
    cloud.take_snapshot(host_id)
    from_snapshot = cloud.load(Host, host_id)

    assert from_snapshot.status is HostStatus.UP
    assert from_snapshot.resource_state is ResourceState.ENABLED
    assert from_snapshot.can_take_deployments()
    assert vars(from_snapshot) == vars(from_events)
    # A later change still applies on top of the snapshot.
    cloud.decide(
        lambda d: d.get(Host, host_id).reserve_capacity(
            uuid.uuid4(), 1000, 512, 1.0, 1.0, f"{uuid.uuid4()}/reserve"
        )
    )
    assert len(cloud.load(Host, host_id).reservations) == 2


def test_every_enum_attribute_survives_a_snapshot(cloud: Cloud) -> None:
    zone = seed_zone(cloud)
    for cls, aggregate_id in (
        (PrimaryStorage, zone.pool_ids[0]),
        (Template, zone.template_id),
        (Host, zone.host_ids[1]),
    ):
        before = cloud.load(cls, aggregate_id)
        cloud.take_snapshot(aggregate_id)
        after = cloud.load(cls, aggregate_id)
        assert enum_attributes(after) == enum_attributes(before)
        assert all(type(after.__dict__[k]) is type(v) for k, v in enum_attributes(before).items())
    assert cloud.load(PrimaryStorage, zone.pool_ids[0]).scope is StorageScope.CLUSTER


def test_a_snapshotted_job_reports_its_status(cloud: Cloud) -> None:
    from datetime import UTC, datetime

    job = Job(
        job_type="Test",
        account_id=uuid.uuid4(),
        resource_type="VirtualMachine",
        resource_id=uuid.uuid4(),
        zone_id=None,
        summary="s",
        submitted_at=datetime.now(UTC),
    )
    job.succeed({"ok": True}, "c1")
    cloud.save(job)
    cloud.take_snapshot(job.id)
    loaded = cloud.load(Job, job.id)
    assert loaded.status is JobStatus.SUCCEEDED and loaded.status.is_final


def test_a_decision_that_keeps_losing_races_gives_up_with_a_retryable_conflict(
    cloud: Cloud, monkeypatch: object
) -> None:
    import pytest

    import domain.cloud
    from domain.errors import ConcurrentChangeConflict

    zone = seed_zone(cloud)
    host_id = zone.host_ids[0]
    attempts = []

    def always_overtaken(d: object) -> None:
        attempts.append(1)
        rival = cloud.load(Host, host_id)  # someone else saves first, every time
        rival.reserve_capacity(uuid.uuid4(), 1, 1, 1.0, 1.0, f"{uuid.uuid4()}/rival")
        mine = d.get(Host, host_id)  # type: ignore[attr-defined]
        mine.reserve_capacity(uuid.uuid4(), 1, 1, 1.0, 1.0, f"{uuid.uuid4()}/mine")
        cloud.save(rival)

    monkeypatch.setattr(domain.cloud, "MAX_DECISION_ATTEMPTS", 3)  # type: ignore[attr-defined]
    with pytest.raises(ConcurrentChangeConflict):
        cloud.decide(always_overtaken)
    assert len(attempts) == 3
