"""Host maintenance and allocation state through the API, as an operator uses them: a host is
emptied into Maintenance by visible migrate jobs and returned to service; hosts and clusters are
disabled and enabled for new VMs; asking what the state does not allow is a 409 naming the
host. Each test seeds a zone of its own, so the shared zone's hosts stay in service."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import httpx

from domain.host_maintenance import evacuation_job_id
from tests.e2e.conftest import Stack, wait_for_job
from tests.support import seed_zone
from workers.demo_cloud import DemoCloud


def own_zone_order(zone: DemoCloud, name: str) -> dict[str, Any]:
    return {
        "zone_id": str(zone.zone_id),
        "service_offering_id": str(zone.small_offering_id),
        "template_id": str(zone.template_id),
        "name": name,
    }


async def deploy(
    http: httpx.AsyncClient, zone: DemoCloud, name: str, **order: str
) -> dict[str, Any]:
    accepted = await http.post("/v1/virtual-machines", json={**own_zone_order(zone, name), **order})
    assert accepted.status_code == 202, accepted.text
    job = await wait_for_job(http, accepted.json()["job_id"])
    assert job["status"] == "succeeded", job
    vm = await http.get(
        f"/v1/virtual-machines/{accepted.json()['virtual_machine_id']}",
        params={"consistent": "true"},
    )
    assert vm.status_code == 200, vm.text
    body: dict[str, Any] = vm.json()
    return body


async def host_row(http: httpx.AsyncClient, zone: DemoCloud, host_id: str) -> dict[str, Any]:
    listing = await http.get(
        "/v1/hosts", params={"zone_id": str(zone.zone_id), "consistent": "true"}
    )
    assert listing.status_code == 200, listing.text
    row: dict[str, Any] = next(h for h in listing.json()["data"] if h["id"] == host_id)
    return row


def refused_naming_the_host(response: httpx.Response, words: str) -> None:
    assert response.status_code == 409, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["path", "host_id"] and words in detail["msg"], detail


async def test_a_host_is_emptied_into_maintenance_by_visible_migrate_jobs_and_returned(
    stack: Stack,
) -> None:
    zone = seed_zone(stack.cloud)
    async with stack.http() as http:
        vms = [await deploy(http, zone, f"maint-{n}") for n in range(2)]
        host_id = vms[0]["host_id"]
        assert all(vm["host_id"] == host_id for vm in vms)  # first fit

        accepted = await http.post(f"/v1/hosts/{host_id}/maintenance")
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["host_id"] == host_id
        job_id = accepted.json()["job_id"]
        job = await wait_for_job(http, job_id)
        assert job["status"] == "succeeded" and job["job_type"] == "PrepareHostForMaintenance"
        assert job["result"]["resource_state"] == "Maintenance"

        row = await host_row(http, zone, host_id)
        assert row["resource_state"] == "Maintenance" and row["vm_count"] == 0
        assert row["maintenance_job_id"] == job_id and row["maintenance_errors"] == []
        for vm in vms:
            # Each VM left by a migrate job of its own, which an operator can read.
            move = evacuation_job_id(UUID(job_id), UUID(vm["id"]), 1)
            moved = await wait_for_job(http, str(move))
            assert moved["job_type"] == "MigrateVirtualMachine" and moved["status"] == "succeeded"
            now = (
                await http.get(f"/v1/virtual-machines/{vm['id']}", params={"consistent": "true"})
            ).json()
            assert now["state"] == "Running" and now["host_id"] not in (None, host_id)

        # What the state does not allow is refused, naming the host.
        refused_naming_the_host(
            await http.post(f"/v1/hosts/{host_id}/maintenance"), "already in Maintenance"
        )
        refused_naming_the_host(
            await http.post(f"/v1/hosts/{host_id}/disable"), "cancel its maintenance first"
        )
        # The event log tells the story in CloudStack's words.
        events = await http.get("/v1/events", params={"resource_id": host_id, "consistent": "true"})
        assert "MAINT.PREPARE" in {e["type"] for e in events.json()["data"]}

        back = await http.post(f"/v1/hosts/{host_id}/cancel-maintenance")
        assert back.status_code == 202, back.text
        done = await wait_for_job(http, back.json()["job_id"])
        assert done["status"] == "succeeded" and done["result"]["resource_state"] == "Enabled"
        assert (await host_row(http, zone, host_id))["resource_state"] == "Enabled"
        refused_naming_the_host(
            await http.post(f"/v1/hosts/{host_id}/cancel-maintenance"), "not in maintenance"
        )


async def test_disabled_hosts_and_clusters_take_no_new_vms_until_enabled(stack: Stack) -> None:
    zone = seed_zone(stack.cloud)
    first_host, other_cluster = str(zone.host_ids[0]), str(zone.cluster_ids[1])
    async with stack.http() as http:
        disabled = await http.post(f"/v1/hosts/{first_host}/disable")
        assert disabled.status_code == 200, disabled.text
        assert disabled.json() == {
            "id": first_host,
            "name": disabled.json()["name"],
            "allocation_state": "Disabled",
        }
        assert (await deploy(http, zone, "not-there"))["host_id"] != first_host
        assert (await host_row(http, zone, first_host))["resource_state"] == "Disabled"
        # Disabling again changes nothing and says so.
        again = await http.post(f"/v1/hosts/{first_host}/disable")
        assert again.status_code == 200 and again.json()["allocation_state"] == "Disabled"

        # With the first cluster disabled too, a deployment goes to the other cluster.
        cluster = await http.post(f"/v1/clusters/{zone.cluster_ids[0]}/disable")
        assert cluster.status_code == 200 and cluster.json()["allocation_state"] == "Disabled"
        placed = await deploy(http, zone, "other-cluster")
        assert (await host_row(http, zone, placed["host_id"]))["cluster_id"] == other_cluster

        for path in (
            f"/v1/clusters/{zone.cluster_ids[0]}/enable",
            f"/v1/hosts/{first_host}/enable",
        ):
            enabled = await http.post(path)
            assert enabled.status_code == 200 and enabled.json()["allocation_state"] == "Enabled"
        assert (await host_row(http, zone, first_host))["resource_state"] == "Enabled"


async def test_unknown_hosts_and_clusters_are_404_naming_the_path(stack: Stack) -> None:
    nobody = uuid.uuid4()
    async with stack.http() as http:
        for path, name in (
            (f"/v1/hosts/{nobody}/maintenance", "host_id"),
            (f"/v1/hosts/{nobody}/cancel-maintenance", "host_id"),
            (f"/v1/hosts/{nobody}/enable", "host_id"),
            (f"/v1/clusters/{nobody}/disable", "cluster_id"),
        ):
            response = await http.post(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["detail"][0]["loc"] == ["path", name]
        not_a_uuid = await http.post("/v1/hosts/not-a-host/maintenance")
        assert not_a_uuid.status_code == 422
        assert not_a_uuid.json()["detail"][0]["loc"] == ["path", "host_id"]
