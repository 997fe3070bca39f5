"""Data volumes through the HTTP API: create, attach, resize, detach, migrate and delete, each a
job; states the read models already forbid are refused 4xx at submission."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Stack, wait_for_job
from tests.e2e.test_deploy_api import order
from tests.support import wait_until


async def volume_row(http: Any, volume_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/volumes/{volume_id}", params={"consistent": "true"})
    assert response.status_code == 200, response.text
    return response.json()


async def succeeded(http: Any, response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    job = await wait_for_job(http, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


async def test_a_volume_goes_through_every_operation_over_http_and_bad_requests_get_4xx(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        deployed = (await http.post("/v1/virtual-machines", json=order(stack, name="vols"))).json()
        vm_id = deployed["virtual_machine_id"]
        created = await http.post(
            "/v1/volumes",
            json={
                "zone_id": str(stack.zone.zone_id),
                "disk_offering_id": str(stack.zone.disk_offering_id),
                "name": "data-http",
            },
        )
        volume_id = created.json()["volume_id"]
        job = await succeeded(http, created)
        assert job["job_type"] == "CreateVolume"
        assert (await volume_row(http, volume_id))["state"] == "Allocated"
        assert (await wait_for_job(http, deployed["job_id"]))["status"] == "succeeded"

        # A fixed-size offering takes no size: refused before any job.
        sized = await http.post(
            "/v1/volumes",
            json={
                "zone_id": str(stack.zone.zone_id),
                "disk_offering_id": str(stack.zone.disk_offering_id),
                "name": "sized",
                "size_gib": 7,
            },
        )
        assert sized.status_code == 422 and sized.json()["errorcode"] == 431

        await succeeded(
            http, await http.post(f"/v1/volumes/{volume_id}/attach", json={"vm_id": vm_id})
        )
        row = await volume_row(http, volume_id)
        assert (row["state"], row["vm_id"], row["device_id"]) == ("Ready", vm_id, 1)
        # Deleting an attached volume: refused at submission (536, resource in use).
        refused = await http.delete(f"/v1/volumes/{volume_id}")
        assert refused.status_code == 409 and refused.json()["errorcode"] == 536

        size = row["size_bytes"] // 1024**3
        shrink = await http.post(f"/v1/volumes/{volume_id}/resize", json={"size_gib": size - 1})
        assert shrink.status_code == 422 and "shrink_ok" in shrink.text
        await succeeded(
            http, await http.post(f"/v1/volumes/{volume_id}/resize", json={"size_gib": size + 2})
        )
        assert (await volume_row(http, volume_id))["size_bytes"] == (size + 2) * 1024**3

        # The volume's queue is its VM's while it is attached: a slow detach shows in it.
        fault = await http.post(
            "/v1/simulator/faults",
            json={"operation": "detach_volume", "action": "delay", "delay_seconds": 1.5},
        )
        assert fault.status_code == 201, fault.text
        try:
            detach = await http.post(f"/v1/volumes/{volume_id}/detach")
            assert detach.status_code == 202, detach.text

            async def listed() -> dict[str, Any]:
                return (await http.get(f"/v1/volumes/{volume_id}/jobs")).json()

            queue = await wait_until(
                listed, lambda queue: queue["count"] > 0, what="the detach in the volume's queue"
            )
            assert [j["job_id"] for j in queue["data"]] == [detach.json()["job_id"]]
            assert (await wait_for_job(http, detach.json()["job_id"]))["status"] == "succeeded"
        finally:
            await http.delete(f"/v1/simulator/faults/{fault.json()['fault_id']}")
        assert (await volume_row(http, volume_id))["vm_id"] is None

        row = await volume_row(http, volume_id)
        target = next(str(p) for p in stack.zone.pool_ids if str(p) != row["pool_id"])
        await succeeded(
            http, await http.post(f"/v1/volumes/{volume_id}/migrate", json={"pool_id": target})
        )
        assert (await volume_row(http, volume_id))["pool_id"] == target

        await succeeded(http, await http.delete(f"/v1/volumes/{volume_id}"))
        assert (await volume_row(http, volume_id))["state"] == "Expunged"
        again = await http.post(f"/v1/volumes/{volume_id}/resize", json={"size_gib": size + 5})
        assert again.status_code == 409 and "deleted" in again.text
