"""Changing a stopped VM's service offering and restoring a VM's root volume, through the HTTP
API: jobs in the VM's queue, bad input refused 4xx naming the reason or the field."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.conftest import Stack, wait_for_job
from tests.e2e.test_deploy_api import order
from tests.e2e.test_events_api import events, steps
from tests.e2e.test_vm_operations_api import vm_state


async def test_offering_change_and_restore_through_http_with_bad_input_refused_4xx(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        accepted = (await http.post("/v1/virtual-machines", json=order(stack, name="scale"))).json()
        vm_id = accepted["virtual_machine_id"]
        assert (await wait_for_job(http, accepted["job_id"]))["status"] == "succeeded"
        vm = await vm_state(http, vm_id)
        old_root = vm["root_volume_id"]
        medium = str(stack.zone.medium_offering_id)
        url = f"/v1/virtual-machines/{vm_id}"

        # A running VM keeps its offering: 409 (431) naming the state it must be in.
        refused = await http.post(
            f"{url}/change-service-offering", json={"service_offering_id": medium}
        )
        assert refused.status_code == 409 and refused.json()["errorcode"] == 431
        assert "Stopped" in refused.json()["detail"][0]["msg"]

        # Restore a running VM: a new root volume, Running again.
        restore = await http.post(f"{url}/restore")
        assert restore.status_code == 202, restore.text
        job = await wait_for_job(http, restore.json()["job_id"])
        assert job["status"] == "succeeded" and job["job_type"] == "RestoreVirtualMachine"
        vm = await vm_state(http, vm_id)
        assert vm["state"] == "Running" and vm["root_volume_id"] != old_root
        gone = await http.get(f"/v1/volumes/{old_root}", params={"consistent": "true"})
        assert gone.status_code == 404 or gone.json()["state"] == "Expunged", gone.text
        listing = await events(http, job_id=restore.json()["job_id"])
        assert ("VM.RESTORE", "Completed", "INFO") in steps(listing, restore.json()["job_id"])

        unknown_template = await http.post(
            f"{url}/restore", json={"template_id": str(uuid.uuid4())}
        )
        assert unknown_template.status_code == 422, unknown_template.text
        assert unknown_template.json()["detail"][0]["loc"] == ["body", "template_id"]

        stop = await http.post(f"{url}/stop")
        assert (await wait_for_job(http, stop.json()["job_id"]))["status"] == "succeeded"

        bad: list[tuple[Any, int, list[str]]] = [
            ({"service_offering_id": str(uuid.uuid4())}, 422, ["body", "service_offering_id"]),
            (
                {"service_offering_id": str(stack.zone.small_offering_id)},
                422,
                ["body", "service_offering_id"],
            ),
            ({"service_offering_id": "not-a-uuid"}, 422, ["body", "service_offering_id"]),
            ({}, 422, ["body", "service_offering_id"]),
        ]
        for body, status, loc in bad:
            response = await http.post(f"{url}/change-service-offering", json=body)
            assert response.status_code == status, (body, response.text)
            assert response.json()["detail"][0]["loc"] == loc, (body, response.text)

        change = await http.post(
            f"{url}/change-service-offering", json={"service_offering_id": medium}
        )
        assert change.status_code == 202, change.text
        job = await wait_for_job(http, change.json()["job_id"])
        assert job["status"] == "succeeded" and job["job_type"] == "ScaleVirtualMachine"
        vm = await vm_state(http, vm_id)
        assert vm["state"] == "Stopped" and vm["service_offering_id"] == medium
        assert (vm["cpu_count"], vm["memory_mib"]) == (2, 2048)
        listing = await events(http, job_id=change.json()["job_id"])
        assert ("VM.UPGRADE", "Completed", "INFO") in steps(listing, change.json()["job_id"])

        start = await http.post(f"{url}/start")
        assert (await wait_for_job(http, start.json()["job_id"]))["status"] == "succeeded"
        assert (await vm_state(http, vm_id))["state"] == "Running"
