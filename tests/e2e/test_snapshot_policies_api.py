"""Snapshot policies through the HTTP API: create (a job), list with the schedule's next runs,
create again to update, delete (a job); every bad field refused 4xx naming it, before any
job."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import Stack, wait_for_job

POLICIES = "/v1/snapshot-policies"


async def new_volume(http: Any, stack: Stack, name: str) -> str:
    created = await http.post(
        "/v1/volumes",
        json={
            "zone_id": str(stack.zone.zone_id),
            "disk_offering_id": str(stack.zone.disk_offering_id),
            "name": name,
        },
    )
    assert created.status_code == 202, created.text
    assert (await wait_for_job(http, created.json()["job_id"]))["status"] == "succeeded"
    return str(created.json()["volume_id"])


async def succeeded(http: Any, response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    job = await wait_for_job(http, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


def policy(volume_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "volume_id": volume_id,
        "interval_type": "DAILY",
        "schedule": "30:02",
        "timezone": "Europe/Berlin",
        "max_snaps": 3,
        **overrides,
    }


async def test_a_policy_is_created_listed_updated_and_deleted_over_http(stack: Stack) -> None:
    async with stack.http() as http:
        volume_id = await new_volume(http, stack, "with-policy")

        created = await http.post(POLICIES, json=policy(volume_id))
        job = await succeeded(http, created)
        policy_id = created.json()["snapshot_policy_id"]
        assert job["job_type"] == "CreateSnapshotPolicy"
        assert job["resource_id"] == policy_id and job["resource_type"] == "SnapshotPolicy"

        listed = await http.get(POLICIES, params={"volume_id": volume_id, "consistent": "true"})
        assert listed.status_code == 200, listed.text
        (row,) = listed.json()["data"]
        assert (row["id"], row["interval_type"], row["schedule"], row["timezone"]) == (
            policy_id,
            "DAILY",
            "30:02",
            "Europe/Berlin",
        )
        assert row["max_snaps"] == 3 and row["active"] is True
        berlin = ZoneInfo("Europe/Berlin")
        next_runs = [datetime.fromisoformat(t) for t in row["next_run_times"]]
        assert next_runs and all(
            (t.astimezone(berlin).hour, t.minute) == (2, 30) for t in next_runs
        )
        if berlin.utcoffset(next_runs[0].replace(tzinfo=None)) == timedelta(hours=1):
            assert next_runs[0].hour == 1  # 02:30 Berlin in winter is 01:30Z

        # createSnapshotPolicy again for the same interval: the same policy, updated.
        updated = await http.post(
            POLICIES, json=policy(volume_id, schedule="05:00", timezone="UTC", max_snaps=5)
        )
        await succeeded(http, updated)
        assert updated.json()["snapshot_policy_id"] == policy_id
        shown = (await http.get(f"{POLICIES}/{policy_id}", params={"consistent": "true"})).json()
        assert (shown["schedule"], shown["timezone"], shown["max_snaps"]) == ("05:00", "UTC", 5)
        assert {datetime.fromisoformat(t).hour for t in shown["next_run_times"]} == {0}

        deleted = await http.delete(f"{POLICIES}/{policy_id}")
        assert (await succeeded(http, deleted))["job_type"] == "DeleteSnapshotPolicies"
        left = await http.get(POLICIES, params={"volume_id": volume_id, "consistent": "true"})
        assert left.json()["count"] == 0
        kept = await http.get(POLICIES, params={"volume_id": volume_id, "include_deleted": "true"})
        assert [r["active"] for r in kept.json()["data"]] == [False]
        again = await http.delete(f"{POLICIES}/{policy_id}")
        assert again.status_code == 404 and again.json()["detail"][0]["loc"] == [
            "path",
            "policy_id",
        ]


@pytest.mark.parametrize(
    ("overrides", "status", "field"),
    [
        ({"interval_type": "YEARLY"}, 422, "interval_type"),
        ({"interval_type": "MANUAL"}, 422, "interval_type"),
        ({"schedule": "30"}, 422, "schedule"),  # DAILY is MM:HH
        ({"schedule": "30:25"}, 422, "schedule"),
        ({"interval_type": "WEEKLY", "schedule": "00:03:8"}, 422, "schedule"),
        ({"interval_type": "MONTHLY", "schedule": "00:03:31"}, 422, "schedule"),
        ({"interval_type": "HOURLY", "schedule": "30:02"}, 422, "schedule"),
        ({"timezone": "Mars/Olympus_Mons"}, 422, "timezone"),
        ({"max_snaps": 0}, 422, "max_snaps"),
        ({"max_snaps": 9}, 422, "max_snaps"),
        ({"max_snaps": "many"}, 422, "max_snaps"),
        ({"volume_id": "not-a-uuid"}, 422, "volume_id"),
        ({"volume_id": str(uuid.uuid4())}, 404, "volume_id"),
        ({"extra": 1}, 422, "extra"),
    ],
)
async def test_each_bad_field_of_a_policy_is_refused_with_a_4xx_naming_it(
    stack: Stack, overrides: dict[str, Any], status: int, field: str
) -> None:
    async with stack.http() as http:
        body = {**policy(str(uuid.uuid4())), **overrides}
        response = await http.post(POLICIES, json=body)
        assert response.status_code == status, response.text
        assert response.json()["detail"][0]["loc"] == ["body", field], response.text


async def test_a_missing_field_and_a_deleted_volume_are_refused_naming_the_field(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        missing = await http.post(POLICIES, json={"volume_id": str(uuid.uuid4())})
        assert missing.status_code == 422
        assert ["body", "schedule"] in [e["loc"] for e in missing.json()["detail"]]

        volume_id = await new_volume(http, stack, "soon-gone")
        await succeeded(http, await http.delete(f"/v1/volumes/{volume_id}"))
        refused = await http.post(POLICIES, json=policy(volume_id))
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "volume_id"]
        assert "deleted" in refused.json()["detail"][0]["msg"]
