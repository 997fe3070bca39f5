"""The event log through HTTP (listEvents): a user reads who asked for what in their account,
when, and how it ended; an admin reads any account's; bad queries are 4xx naming the field."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from domain.inventory import add_account
from domain.quantities import MAX_PAGE
from tests.e2e.conftest import Stack, wait_for_job
from tests.e2e.tenants import key_works
from tests.e2e.test_deploy_api import order


async def events(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/v1/events", params={"consistent": "true", **params})
    assert response.status_code == 200, response.text
    assert response.headers["Stratus-Read-Consistent"] == "true"
    return response.json()


def steps(listing: dict[str, Any], job_id: str) -> list[tuple[str, str, str]]:
    return [(e["type"], e["state"], e["level"]) for e in listing["data"] if e["job_id"] == job_id]


async def with_fault(admin: httpx.AsyncClient, fault: dict[str, Any]) -> str:
    response = await admin.post("/v1/simulator/faults", json=fault)
    assert response.status_code == 201, response.text
    return str(response.json()["fault_id"])


async def test_a_user_reads_their_accounts_jobs_scheduled_started_and_how_they_ended(
    stack: Stack,
) -> None:
    user_key = f"user-{uuid.uuid4()}"
    user = add_account(
        stack.cloud, uuid.uuid4(), f"events-{uuid.uuid4().hex[:6]}", "User", user_key
    )
    await key_works(stack, user_key)
    async with stack.http() as admin, stack.http(user_key) as http:
        ok, theirs = [
            (await client.post("/v1/virtual-machines", json=order(stack, name=name))).json()
            for client, name in ((http, "ev-ok"), (admin, "ev-admin"))
        ]
        await asyncio.gather(
            wait_for_job(http, ok["job_id"]), wait_for_job(admin, theirs["job_id"])
        )

        fault = await with_fault(
            admin,
            {
                "operation": "create_volume",
                "action": "fail",
                "error_code": 530,
                "message": "simulated: storage backend crashed",
            },
        )
        try:
            sad = (await http.post("/v1/virtual-machines", json=order(stack, name="ev-sad"))).json()
            assert (await wait_for_job(http, sad["job_id"]))["status"] == "failed"
        finally:
            await admin.delete(f"/v1/simulator/faults/{fault}")

        vm_id = ok["virtual_machine_id"]
        fault = await with_fault(
            admin, {"operation": "reboot_vm", "action": "delay", "delay_seconds": 1.5}
        )
        try:
            reboot = (await http.post(f"/v1/virtual-machines/{vm_id}/reboot")).json()
            stop = (await http.post(f"/v1/virtual-machines/{vm_id}/stop")).json()
            cancelled = await http.post(f"/v1/jobs/{stop['job_id']}/cancel")
            assert cancelled.status_code == 202 and cancelled.json()["was"] == "queued"
            assert (await wait_for_job(http, stop["job_id"]))["status"] == "cancelled"
            assert (await wait_for_job(http, reboot["job_id"]))["status"] == "succeeded"
        finally:
            await admin.delete(f"/v1/simulator/faults/{fault}")

        mine = await events(http, limit=500)
        assert mine["count"] == len(mine["data"]) > 0
        assert {e["account_id"] for e in mine["data"]} == {str(user.id)}
        assert {e["username"] for e in mine["data"]} == {user.name}
        assert theirs["job_id"] not in {e["job_id"] for e in mine["data"]}
        assert steps(mine, ok["job_id"]) == [
            ("VM.CREATE", "Scheduled", "INFO"),
            ("VM.CREATE", "Started", "INFO"),
            ("VM.CREATE", "Completed", "INFO"),
        ]
        assert steps(mine, sad["job_id"])[-1] == ("VM.CREATE", "Completed", "ERROR")
        assert steps(mine, reboot["job_id"])[-1] == ("VM.REBOOT", "Completed", "INFO")
        assert steps(mine, stop["job_id"]) == [
            ("VM.STOP", "Scheduled", "INFO"),
            ("VM.STOP", "Completed", "INFO"),
        ]
        created = [e["created"] for e in mine["data"]]
        assert created == sorted(created)

        (failure,) = (await events(http, level="ERROR"))["data"]
        assert failure["job_id"] == sad["job_id"] and failure["error_code"] == 530
        assert "storage backend crashed" in failure["error_text"]
        assert failure["outcome"] == "failed"
        (ended,) = [e for e in mine["data"] if e["job_id"] == stop["job_id"]][1:]
        assert ended["outcome"] == "cancelled" and ended["error_text"] == "cancelled while queued"
        assert "cancelled while queued" in ended["description"]

        by_type = await events(http, type="vm.stop")
        assert {e["job_id"] for e in by_type["data"]} == {stop["job_id"]}
        by_job = await events(http, job_id=reboot["job_id"])
        assert {e["resource_id"] for e in by_job["data"]} == {vm_id}
        assert by_job["data"][0]["state"] == "Scheduled"

        since = failure["created"]
        later = await events(http, start=since, limit=500)
        assert 0 < later["count"] < mine["count"]
        assert all(e["created"] >= since for e in later["data"])
        before = await events(http, end=since, limit=500)
        assert before["count"] + later["count"] == mine["count"] + 1  # `since` is in both

        paged: list[str] = []
        cursor = None
        for _ in range(50):
            params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            page = await events(http, **params)
            paged += [e["id"] for e in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == [e["id"] for e in mine["data"]]
        numbered = await events(http, limit=4, page=2)
        assert [e["id"] for e in numbered["data"]] == paged[4:8]

        refused = await http.get(
            "/v1/events", params={"account_id": str(stack.zone.admin_account_id)}
        )
        assert refused.status_code == 403
        as_admin = await events(admin, account_id=str(user.id), limit=500)
        assert as_admin["data"] == mine["data"]
        everyone = await events(admin, limit=500)
        assert theirs["job_id"] in {e["job_id"] for e in everyone["data"]}


async def test_bad_event_queries_are_refused_422_naming_the_field(stack: Stack) -> None:
    async with stack.http() as http:
        for params, field in (
            ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
            ({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
            ({"start": "yesterday"}, "start"),
            ({"end": "2026-13-01"}, "end"),
            ({"level": "WARN"}, "level"),
            ({"state": "Done"}, "state"),
            ({"resource_id": "not-a-uuid"}, "resource_id"),
            ({"job_id": "42"}, "job_id"),
            ({"account_id": "x"}, "account_id"),
            ({"cursor": "not-a-cursor"}, "cursor"),
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"page": 0}, "page"),
            ({"type": ""}, "type"),
        ):
            response = await http.get("/v1/events", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["detail"][0]["loc"] == ["query", field], params
        far = await http.get("/v1/events", params={"page": MAX_PAGE, "limit": 500})
        assert far.status_code == 200 and far.json()["data"] == []
        past_any = await http.get("/v1/events", params={"page": 10**17, "limit": 500})
        assert past_any.status_code == 422
        assert past_any.json()["detail"][0]["loc"] == ["query", "page"]
        naive = await http.get(
            "/v1/events", params={"start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00"}
        )
        assert naive.status_code == 200, naive.text
    async with stack.http(None) as anonymous:
        assert (await anonymous.get("/v1/events")).status_code == 401
