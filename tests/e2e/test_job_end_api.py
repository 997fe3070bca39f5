"""The moment between a job recording its end and its workflow (and its VM's queue) hearing
of it: the API already answers as the record says."""

from __future__ import annotations

import pytest
from temporalio.client import Client

from domain.cloud import Cloud
from domain.job_requests import vm_queue_id
from tests.e2e.conftest import serving_stack, wait_for_job
from tests.e2e.test_deploy_api import order
from tests.support import SlowStep, wait_until


@pytest.mark.usefixtures("projector")
async def test_a_job_whose_end_is_recorded_leaves_the_queue_listing_and_refuses_cancel_as_ended(
    temporal_client: Client, cloud: Cloud, database_url: str
) -> None:
    # The reboot records its success, then its answer to the workflow is held back.
    held = SlowStep("vm.complete_reboot", after=True)
    async with (
        serving_stack(temporal_client, cloud, database_url, around=held) as stack,
        stack.http() as http,
    ):
        accepted = (await http.post("/v1/virtual-machines", json=order(stack, name="r"))).json()
        vm_id = accepted["virtual_machine_id"]
        assert (await wait_for_job(http, accepted["job_id"]))["status"] == "succeeded"
        reboot = (await http.post(f"/v1/virtual-machines/{vm_id}/reboot")).json()
        stop = (await http.post(f"/v1/virtual-machines/{vm_id}/stop")).json()
        try:
            await held.wait_started()
            # The record says succeeded; Temporal and the VM's queue still say running.
            assert (await wait_for_job(http, reboot["job_id"]))["status"] == "succeeded"
            queue = temporal_client.get_workflow_handle(vm_queue_id(vm_id))
            assert [str(j["job_id"]) for j in await queue.query("jobs")] == [
                reboot["job_id"],
                stop["job_id"],
            ]

            listed = (await http.get(f"/v1/virtual-machines/{vm_id}/jobs")).json()
            assert [(j["job_id"], j["status"]) for j in listed["data"]] == [
                (stop["job_id"], "queued")
            ]
            assert listed["data"][0]["position"] == 1  # nothing runs ahead of it but the end
            refused = await http.post(f"/v1/jobs/{reboot['job_id']}/cancel")
            assert refused.status_code == 409, refused.text
            assert "already ended (succeeded)" in refused.json()["detail"][0]["msg"]
        finally:
            held.release()
        assert (await wait_for_job(http, stop["job_id"]))["status"] == "succeeded"

        async def listed() -> int:
            return int((await http.get(f"/v1/virtual-machines/{vm_id}/jobs")).json()["count"])

        await wait_until(listed, lambda count: count == 0, what="the VM's queue listing empty")
