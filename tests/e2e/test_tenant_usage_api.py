"""Usage and events by domain: records and events carry the account's domain, admins filter
by it, and a domain admin reads and exports the usage of its subtree only."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.conftest import Stack, deploy_order, wait_for_job
from tests.e2e.tenants import Tenant, new_domain, new_tenant
from tests.support import wait_until
from tests.usage_support import Timeline, utc

DAY = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
PERIOD = {"start": f"{DAY}T00:00:00Z", "end": f"{datetime.now(UTC).date().isoformat()}T00:00:00Z"}


def ran_yesterday(stack: Stack, tenant: Tenant) -> str:
    """A VM of the tenant's that ran 09:20-10:20 yesterday (final usage today)."""
    timeline = Timeline(stack.cloud)
    timeline.account_id = uuid.UUID(tenant.account_id)
    vm = timeline.deploy(utc(f"{DAY} 09:20"), name=f"vm-{uuid.uuid4().hex[:6]}")
    timeline.stop(vm, utc(f"{DAY} 10:20"))
    return str(vm.id)


@pytest.fixture(scope="module")
async def tenancy(stack: Stack) -> dict[str, Any]:
    async with stack.http() as admin:
        parent = await new_domain(admin)
        boss = await new_tenant(admin, account_type="DomainAdmin", domain_id=parent["id"])
        inside = await new_tenant(admin, domain_id=(await new_domain(admin, parent["id"]))["id"])
        outside = await new_tenant(admin)
    return {
        "parent": parent,
        "boss": boss,
        "inside": inside,
        "outside": outside,
        "inside_vm": ran_yesterday(stack, inside),
        "outside_vm": ran_yesterday(stack, outside),
    }


async def records(http: Any, **params: Any) -> list[dict[str, Any]]:
    async def read() -> dict[str, Any]:
        response = await http.get(
            "/v1/usage-records", params={**PERIOD, **params, "consistent": "true"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    body = await wait_until(
        read,
        lambda b: b["final_until"] is not None,
        timeout=60,
        what="usage records to be final",
    )
    found: list[dict[str, Any]] = body["data"]
    return found


async def test_a_domain_admin_reads_and_exports_the_usage_of_its_subtree_only(
    stack: Stack, tenancy: dict[str, Any]
) -> None:
    async with tenancy["boss"].http(stack) as http:
        listed = await records(http)
        resources = {r["resource_id"] for r in listed}
        assert tenancy["inside_vm"] in resources and tenancy["outside_vm"] not in resources
        inside = next(r for r in listed if r["resource_id"] == tenancy["inside_vm"])
        assert inside["domain_id"] == tenancy["inside"].domain_id
        assert inside["domain"].startswith(tenancy["parent"]["path"] + "/")

        exported = await http.get("/v1/usage-records/export", params={**PERIOD, "format": "csv"})
        assert exported.status_code == 200, exported.text
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        exported_ids = {row["resource_id"] for row in rows}
        assert tenancy["inside_vm"] in exported_ids and tenancy["outside_vm"] not in exported_ids
        assert tenancy["outside"].name not in exported.text

        refused = await http.get(
            "/v1/usage-records", params={**PERIOD, "account": tenancy["outside"].account_id}
        )
        assert refused.status_code == 403 and tenancy["outside"].name not in refused.text


async def test_the_root_admin_filters_usage_and_events_by_domain(
    stack: Stack, tenancy: dict[str, Any]
) -> None:
    async with stack.http() as admin:
        in_parent = await records(admin, domain=tenancy["parent"]["id"])
        resources = {r["resource_id"] for r in in_parent}
        assert tenancy["inside_vm"] in resources and tenancy["outside_vm"] not in resources
        crossed = await records(
            admin, domain=tenancy["parent"]["id"], account=tenancy["outside"].account_id
        )
        assert crossed == []

    jobs = {}
    for who in ("inside", "outside"):
        async with tenancy[who].http(stack) as http:
            deployed = await http.post("/v1/virtual-machines", json=deploy_order(stack))
            assert deployed.status_code == 202, deployed.text
            jobs[who] = deployed.json()["job_id"]
            await wait_for_job(http, jobs[who])
    async with stack.http() as admin:
        events = await admin.get(
            "/v1/events",
            params={"domain_id": tenancy["parent"]["id"], "consistent": "true", "limit": 500},
        )
        assert events.status_code == 200, events.text
        rows = events.json()["data"]
        assert jobs["inside"] in {r["job_id"] for r in rows}
        assert all(r["account_id"] != tenancy["outside"].account_id for r in rows)
        mine = next(r for r in rows if r["job_id"] == jobs["inside"])
        assert mine["domain_id"] == tenancy["inside"].domain_id
        assert mine["domain"].startswith(tenancy["parent"]["path"] + "/")
