"""Usage records through the HTTP API: paging, exports in three formats, scoping, refusals,
the open window's usage as provisional records, and corrections of listed windows."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.account import AccountType
from domain.inventory import add_account
from domain.virtual_machine import VmEvent
from projections.usage_windows import to_ms_precision
from tests.e2e.conftest import Stack
from tests.e2e.tenants import key_works
from tests.usage_support import Timeline, clock, utc

#: Yesterday (UTC): its windows are final, and events stamped in it are at most a day late
#: for readers that served recent windows before (each served window they change is a
#: correction row).
DAY = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
NEXT_DAY = (datetime.now(UTC).date()).isoformat()
START, END = f"{DAY}T00:00:00Z", f"{NEXT_DAY}T00:00:00Z"


def at(hh_mm: str) -> datetime:
    return utc(f"{DAY} {hh_mm}")


@pytest.fixture(scope="module")
async def usage_account(stack: Stack) -> dict[str, Any]:
    """A user account with a VM that ran 09:20-12:10 and a volume, yesterday."""
    key = f"usage-key-{uuid.uuid4().hex}"
    t = Timeline(stack.cloud)
    add_account(
        stack.cloud, t.account_id, f"usage-user-{t.account_id.hex[:8]}", AccountType.USER.value, key
    )
    vm = t.deploy(at("09:20"))
    t.volume(at("09:20"), at("09:21"), 4 * 1024**3)
    t.stop(vm, at("12:10"))
    await key_works(stack, key)
    return {"key": key, "account_id": str(t.account_id), "vm_id": str(vm.id)}


INFINITE_CURSOR = base64.urlsafe_b64encode(
    f'["{DAY}T00:00:00+00:00", Infinity, "{uuid.uuid4()}", "{uuid.uuid4()}"]'.encode()
).decode()
NESTED_CURSOR = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode()


def period(**extra: Any) -> dict[str, Any]:
    return {"start": START, "end": END, **extra}


async def consistent_get(http: httpx.AsyncClient, path: str, params: dict[str, Any]) -> Any:
    """GET with `consistent=true` until the read says it includes every earlier write (a busy
    machine may need longer than the server's own wait)."""
    deadline = time.monotonic() + 60
    while True:
        response = await http.get(path, params={**params, "consistent": "true"})
        assert response.status_code == 200, response.text
        if response.headers["Stratus-Read-Consistent"] == "true":
            return response.json()
        assert time.monotonic() < deadline, f"{path} never caught up"


async def test_records_page_through_every_record_once(
    stack: Stack, usage_account: dict[str, Any]
) -> None:
    async with stack.http(usage_account["key"]) as http:
        first = await http.get("/v1/usage-records", params=period(limit=2, consistent="true"))
        assert first.status_code == 200, first.text
        assert first.headers["Stratus-Read-Consistent"] == "true"
        body = first.json()
        seen = list(body["data"])
        cursor = body["next_cursor"]
        while cursor:
            page = (
                await http.get("/v1/usage-records", params=period(limit=2, cursor=cursor))
            ).json()
            seen += page["data"]
            cursor = page["next_cursor"]
    assert len(seen) == body["count"] == len({r["id"] for r in seen})
    running = {
        r["start_date"]: r["raw_usage_ms"]
        for r in seen
        if r["usage_type_name"] == "RUNNING_VM" and r["resource_id"] == usage_account["vm_id"]
    }
    assert running == {
        f"{DAY}T09:00:00Z": 40 * 60_000,
        f"{DAY}T10:00:00Z": 3_600_000,
        f"{DAY}T11:00:00Z": 3_600_000,
        f"{DAY}T12:00:00Z": 10 * 60_000,
    }
    assert {r["account_id"] for r in seen} == {usage_account["account_id"]}


async def test_exports_in_csv_json_and_ndjson_hold_the_same_records(
    stack: Stack, usage_account: dict[str, Any]
) -> None:
    async with stack.http(usage_account["key"]) as http:
        listed = (await http.get("/v1/usage-records", params=period(limit=500))).json()
        exports = {}
        for fmt in ("csv", "json", "ndjson"):
            response = await http.get("/v1/usage-records/export", params=period(format=fmt))
            assert response.status_code == 200, response.text
            exports[fmt] = response
    ids = [r["id"] for r in listed["data"]]
    assert exports["csv"].headers["content-type"].startswith("text/csv")
    assert "attachment" in exports["csv"].headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exports["csv"].text)))
    assert [r["id"] for r in rows] == ids
    assert rows[0]["usage"].endswith(" Hrs")
    assert [r["id"] for r in json.loads(exports["json"].text)] == ids
    ndjson = [json.loads(line) for line in exports["ndjson"].text.splitlines()]
    assert [r["id"] for r in ndjson] == ids
    assert ndjson == json.loads(exports["json"].text)


async def test_a_user_sees_only_its_own_usage_and_an_admin_anyones(
    stack: Stack, usage_account: dict[str, Any]
) -> None:
    async with stack.http(usage_account["key"]) as user:
        other = await user.get("/v1/usage-records", params=period(account=str(uuid.uuid4())))
        assert other.status_code == 403
        assert other.json()["errorcode"] == 531
    async with stack.http() as admin:
        found = await admin.get(
            "/v1/usage-records",
            params=period(account=usage_account["account_id"], type="RUNNING_VM"),
        )
        assert found.status_code == 200
        assert {r["usage_type"] for r in found.json()["data"]} == {1}
        assert found.json()["count"] == 4
        summary = (
            await admin.get(
                "/v1/usage-records/summary", params=period(account=usage_account["account_id"])
            )
        ).json()
    (account,) = summary
    by_type = {u["usage_type_name"]: u for u in account["usage"]}
    assert by_type["RUNNING_VM"]["raw_usage_ms"] == (2 * 60 + 50) * 60_000
    assert by_type["RUNNING_VM"]["usage"] == "2.833333 Hrs"
    assert by_type["VOLUME"]["gib_hours"] > 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"end": END}, "start"),
        ({"start": START, "end": START}, "end"),
        ({"start": "2020-01-01T00:00:00Z", "end": END}, "end"),
        ({"start": "yesterday", "end": END}, "start"),
        ({"start": START, "end": END, "type": "CPU_SECONDS"}, "type"),
        ({"start": START, "end": END, "account": "not-a-uuid"}, "account"),
        ({"start": START, "end": END, "cursor": "garbage"}, "cursor"),
        ({"start": START, "end": END, "cursor": INFINITE_CURSOR}, "cursor"),
        ({"start": START, "end": END, "cursor": NESTED_CURSOR}, "cursor"),
        ({"start": "1969-12-31T00:00:00Z", "end": "1970-01-02T00:00:00Z"}, "start"),
        ({"start": "9000-01-01T00:00:00Z", "end": "9000-01-02T00:00:00Z"}, "end"),
    ],
)
async def test_bad_parameters_are_4xx_naming_the_field(
    stack: Stack, params: dict[str, str], field: str
) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/usage-records", params=params)
    assert 400 <= response.status_code < 500, response.text
    assert field in response.json()["detail"][0]["loc"]


async def test_an_unknown_export_format_is_refused(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/usage-records/export", params=period(format="xml"))
    assert response.status_code == 422
    assert "format" in response.json()["detail"][0]["loc"]


async def test_usage_types_list_cloudstacks_ids_and_what_is_metered(stack: Stack) -> None:
    async with stack.http() as http:
        types = {t["name"]: t for t in (await http.get("/v1/usage-types")).json()}
    assert types["RUNNING_VM"]["id"] == 1 and types["RUNNING_VM"]["metered"]
    assert types["VM_SNAPSHOT"]["id"] == 25
    assert types["IP_ADDRESS"]["id"] == 3 and not types["IP_ADDRESS"]["metered"]


async def test_a_new_vm_shows_its_usage_so_far_as_provisional_and_exports_leave_it_out(
    stack: Stack,
) -> None:
    t = Timeline(stack.cloud)
    deployed = to_ms_precision(datetime.now(UTC) - timedelta(minutes=10))
    vm = t.deploy(deployed)
    around = {
        "start": (deployed - timedelta(hours=2)).isoformat(),
        "end": (deployed + timedelta(hours=2)).isoformat(),
        "type": "RUNNING_VM",
        "account": str(t.account_id),
    }
    async with stack.http() as http:
        before = datetime.now(UTC)
        body = await consistent_get(http, "/v1/usage-records", around)
        after = datetime.now(UTC)
        exported = await http.get("/v1/usage-records/export", params={**around, "format": "json"})
        summary = (await http.get("/v1/usage-records/summary", params=around)).json()
    mine = [r for r in body["data"] if r["resource_id"] == str(vm.id)]
    so_far = sum(r["raw_usage_ms"] for r in mine)
    assert (before - deployed) / timedelta(milliseconds=1) <= so_far
    assert so_far <= (after - deployed) / timedelta(milliseconds=1)
    provisional = {r["id"] for r in mine if r["provisional"]}
    assert provisional and body["provisional_count"] == len(provisional)
    assert all(
        datetime.fromisoformat(r["end_date"]) > datetime.fromisoformat(body["final_until"])
        for r in mine
        if r["provisional"]
    )
    assert exported.status_code == 200
    exported_ids = {r["id"] for r in exported.json()}
    assert exported_ids == {r["id"] for r in mine if not r["provisional"]}
    assert "provisional" not in exported.text
    (account,) = summary
    (running,) = account["usage"]
    assert account["provisional"] is True
    assert running["raw_usage_ms"] >= so_far
    assert running["provisional_raw_usage_ms"] > 0
    assert running["provisional_records"] >= 1


async def test_a_late_stop_after_the_day_was_listed_comes_as_corrections_of_listed_records(
    stack: Stack,
) -> None:
    t = Timeline(stack.cloud)
    vm = t.deploy(at("13:00"))
    with clock(at("13:20")):  # a stop a slow worker commits later
        vm.transition(VmEvent.STOP_REQUESTED, "late-stop/1")
        vm.transition(VmEvent.OPERATION_SUCCEEDED, "late-stop/2")
    day = {"start": START, "end": END, "account": str(t.account_id), "type": "RUNNING_VM"}
    async with stack.http() as admin:
        served = await consistent_get(admin, "/v1/usage-records", day)
        stack.cloud.save(vm)
        now = await consistent_get(admin, "/v1/usage-records", day)
        corrections = (
            await admin.get("/v1/usage-corrections", params={**day, "limit": 500})
        ).json()
    served_ms = {r["id"]: r["raw_usage_ms"] for r in served["data"]}
    now_ms = {r["id"]: r["raw_usage_ms"] for r in now["data"]}
    assert len(served_ms) == 11 and not any(r["provisional"] for r in served["data"])
    assert now_ms == {served["data"][0]["id"]: 20 * 60_000}
    # The stop's corrections (a reader may have served later windows too: those are not in
    # this listing, and were corrected as well).
    stop = [c for c in corrections["data"] if c["reason"] == "late stop"]
    assert set(served_ms) <= {c["record_id"] for c in stop}
    for record_id, served_usage in served_ms.items():
        delta = sum(c["delta_ms"] for c in stop if c["record_id"] == record_id)
        assert served_usage + delta == now_ms.get(record_id, 0)
    assert all(c["resource_id"] == str(vm.id) for c in stop)
    first = stop[0]
    assert (first["window_start"], first["period_start"], first["delta_ms"]) == (
        f"{DAY}T13:00:00Z",
        f"{DAY}T13:20:00Z",
        -40 * 60_000,
    )
