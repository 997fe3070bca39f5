"""Volume snapshots through the HTTP API: take, list, revert, make a volume and a template from
one, delete, each a job; what the read models already forbid is refused 4xx naming the reason."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Stack, wait_for_job
from tests.e2e.test_deploy_api import order
from tests.e2e.test_volumes_api import succeeded, volume_row


async def snapshot_row(http: Any, snapshot_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/snapshots/{snapshot_id}", params={"consistent": "true"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_snapshot_over_http_from_take_to_delete_and_bad_requests_get_4xx(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        deployed = (await http.post("/v1/virtual-machines", json=order(stack, name="snap"))).json()
        vm_id = deployed["virtual_machine_id"]
        assert (await wait_for_job(http, deployed["job_id"]))["status"] == "succeeded"
        root = (
            await http.get("/v1/volumes", params={"vm_id": vm_id, "consistent": "true"})
        ).json()["data"][0]

        # An allocated volume has no disk to snapshot: refused at submission, naming why.
        created = await http.post(
            "/v1/volumes",
            json={
                "zone_id": str(stack.zone.zone_id),
                "disk_offering_id": str(stack.zone.disk_offering_id),
                "name": "lazy",
            },
        )
        lazy = created.json()["volume_id"]
        await succeeded(http, created)
        refused = await http.post(f"/v1/volumes/{lazy}/snapshots", json={})
        assert refused.status_code == 409 and "not on primary storage" in refused.text
        assert refused.json()["errorcode"] == 431

        # The running VM's root volume, live.
        taken = await http.post(f"/v1/volumes/{root['id']}/snapshots", json={"name": "root-1"})
        snapshot_id = taken.json()["snapshot_id"]
        job = await succeeded(http, taken)
        assert job["job_type"] == "CreateSnapshot"
        row = await snapshot_row(http, snapshot_id)
        assert (row["state"], row["name"], row["interval_type"], row["on_primary"]) == (
            "BackedUp",
            "root-1",
            "MANUAL",
            False,
        )
        listed = (
            await http.get("/v1/snapshots", params={"volume_id": root["id"], "consistent": "true"})
        ).json()
        assert [s["id"] for s in listed["data"]] == [snapshot_id]

        # Revert while the VM runs: the job fails with 431 (only the run time knows the VM
        # state for sure); stopped, it reverts.
        reverted = await http.post(f"/v1/snapshots/{snapshot_id}/revert")
        assert reverted.status_code == 202, reverted.text
        failed = await wait_for_job(http, reverted.json()["job_id"])
        assert (failed["status"], failed["error_code"]) == ("failed", 431), failed
        await succeeded(http, await http.post(f"/v1/virtual-machines/{vm_id}/stop", json={}))
        await succeeded(http, await http.post(f"/v1/snapshots/{snapshot_id}/revert"))

        made = await http.post(f"/v1/snapshots/{snapshot_id}/volumes", json={"name": "copy"})
        await succeeded(http, made)
        copy = await volume_row(http, made.json()["volume_id"])
        assert (copy["state"], copy["name"], copy["size_bytes"]) == (
            "Ready",
            "copy",
            root["size_bytes"],
        )
        template = await http.post(
            f"/v1/snapshots/{snapshot_id}/templates", json={"name": "golden"}
        )
        job = await succeeded(http, template)
        assert job["result"]["template_id"] == template.json()["template_id"]

        missing_name = await http.post(f"/v1/snapshots/{snapshot_id}/volumes", json={})
        assert missing_name.status_code == 422
        assert missing_name.json()["detail"][0]["loc"][-1] == "name"
        unknown = await http.delete("/v1/snapshots/00000000-0000-0000-0000-000000000000")
        assert unknown.status_code == 404

        await succeeded(http, await http.delete(f"/v1/snapshots/{snapshot_id}"))
        assert (await snapshot_row(http, snapshot_id))["state"] == "Destroyed"
        gone = await http.post(f"/v1/snapshots/{snapshot_id}/volumes", json={"name": "late"})
        assert gone.status_code == 409 and "deleted" in gone.text
