"""Usage records through the HTTP API: paging, exports in three formats, scoping, refusals."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest

from domain.account import AccountType
from domain.inventory import add_account
from tests.e2e.conftest import Stack
from tests.usage_support import Timeline, utc

START, END = "2024-06-01T00:00:00Z", "2024-06-02T00:00:00Z"


@pytest.fixture(scope="module")
def usage_account(stack: Stack) -> dict[str, Any]:
    """A user account with a VM that ran 09:20-12:10 and a volume, on 1 June 2024."""
    key = f"usage-key-{uuid.uuid4().hex}"
    t = Timeline(stack.cloud)
    add_account(stack.cloud, t.account_id, "usage-user", AccountType.USER.value, key)
    vm = t.deploy(utc("2024-06-01 09:20"))
    t.volume(utc("2024-06-01 09:20"), utc("2024-06-01 09:21"), 4 * 1024**3)
    t.stop(vm, utc("2024-06-01 12:10"))
    return {"key": key, "account_id": str(t.account_id), "vm_id": str(vm.id)}


def period(**extra: Any) -> dict[str, Any]:
    return {"start": START, "end": END, **extra}


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
        "2024-06-01T09:00:00Z": 40 * 60_000,
        "2024-06-01T10:00:00Z": 3_600_000,
        "2024-06-01T11:00:00Z": 3_600_000,
        "2024-06-01T12:00:00Z": 10 * 60_000,
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
