"""Out-of-band management through the API, against a pyghmi BMC on loopback: an operator
records a host's BMC (never its login), enables it, powers the host through it, reads what the
BMC reported on the host and in the event log; CloudStack clients do the same with
issueOutOfBandManagementPowerAction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from tests.e2e.conftest import Stack, wait_for_job
from tests.e2e.test_cloudstack_client import root_admin_client
from tests.integration.drivers.test_baremetal_contract import BmcProcess
from tests.support import seed_zone


@pytest.fixture(scope="module")
def bmc() -> Iterator[BmcProcess]:
    process = BmcProcess(1)
    yield process
    process.stop()


async def host_row(stack: Stack, host_id: str) -> dict[str, Any]:
    async with stack.http() as http:
        listing = await http.get("/v1/hosts", params={"consistent": "true", "limit": 500})
    row: dict[str, Any] = next(h for h in listing.json()["data"] if h["id"] == host_id)
    return row


async def test_an_operator_powers_a_host_through_its_bmc(stack: Stack, bmc: BmcProcess) -> None:
    zone = seed_zone(stack.cloud)
    host_id, port = str(zone.host_ids[0]), bmc.ports[0]
    bmc.command("power", port, "off")
    oobm = f"/v1/hosts/{host_id}/out-of-band-management"
    async with stack.http() as http:
        # A login is refused, naming the field: it belongs to the agent's configuration.
        refused = await http.put(oobm, json={"address": f"127.0.0.1:{port}", "password": "x"})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "password"]
        bad = await http.put(oobm, json={"address": "not an address"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "address"]
        # Enabling before configuring, or powering before enabling: 409 naming the host.
        early = await http.post(f"{oobm}/enable")
        assert early.status_code == 409 and early.json()["detail"][0]["loc"] == ["path", "host_id"]

        configured = await http.put(
            oobm, json={"driver": "ipmitool", "address": f"127.0.0.1:{port}"}
        )
        assert configured.status_code == 200, configured.text
        assert configured.json()["enabled"] is False
        disabled = await http.post(f"/v1/hosts/{host_id}/power", json={"action": "ON"})
        assert disabled.status_code == 409, disabled.text
        enabled = await http.post(f"{oobm}/enable")
        assert enabled.status_code == 200 and enabled.json()["enabled"] is True

        mark = bmc.mark(port)
        accepted = await http.post(f"/v1/hosts/{host_id}/power", json={"action": "ON"})
        assert accepted.status_code == 202, accepted.text
        job = await wait_for_job(http, accepted.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["result"]["power_state"] == "On"
        assert [e[0] for e in bmc.since(port, mark)] == ["power_on"]

        row = await host_row(stack, host_id)
        assert row["power_state"] == "On" and row["oobm_address"] == f"127.0.0.1:{port}"
        assert row["oobm_enabled"] is True and row["oobm_driver"] == "ipmitool"
        events = await http.get("/v1/events", params={"resource_id": host_id, "consistent": "true"})
        assert "HOST.OOBM.POWERACTION" in {e["type"] for e in events.json()["data"]}

        wrong = await http.post(f"/v1/hosts/{host_id}/power", json={"action": "EXPLODE"})
        assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "action"]

    # The same through a CloudStack client, unchanged.
    admin = root_admin_client(stack)
    answer = await asyncio.to_thread(
        partial(
            admin.issueOutOfBandManagementPowerAction,
            hostid=host_id,
            action="OFF",
            fetch_result=True,
        )
    )
    assert answer["outofbandmanagement"]["powerstate"] == "Off"
    assert answer["outofbandmanagement"]["hostid"] == host_id
    assert (await host_row(stack, host_id))["power_state"] == "Off"
