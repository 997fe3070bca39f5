"""Operating a VM through the HTTP API: each operation a job in the VM's queue."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus

from domain.host import Host
from domain.storage import PrimaryStorage
from tests.e2e.conftest import Stack, step_reached, wait_for_job
from tests.e2e.test_deploy_api import order
from tests.support import wait_until


async def vm_state(http: Any, vm_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/virtual-machines/{vm_id}", params={"consistent": "true"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_operation_through_http_and_bad_states_are_refused_4xx(stack: Stack) -> None:
    async with stack.http() as http:
        accepted = (await http.post("/v1/virtual-machines", json=order(stack, name="ops"))).json()
        vm_id = accepted["virtual_machine_id"]

        async def registered() -> bool:  # the deployment's first step, not yet Running
            return (await http.get(f"/v1/virtual-machines/{vm_id}")).status_code == 200

        await wait_until(registered, interval=0.02, what=f"VM {vm_id} registered")
        # Submitted while the deployment runs: it waits behind it in the VM's queue.
        stop = await http.post(f"/v1/virtual-machines/{vm_id}/stop", json={"forced": True})
        assert stop.status_code == 202, stop.text
        assert (await wait_for_job(http, accepted["job_id"]))["status"] == "succeeded"
        job = await wait_for_job(http, stop.json()["job_id"])
        assert job["status"] == "succeeded" and job["job_type"] == "StopVirtualMachine"
        assert (await vm_state(http, vm_id))["state"] == "Stopped"

        refused = await http.post(f"/v1/virtual-machines/{vm_id}/stop")
        assert refused.status_code == 409 and refused.json()["errorcode"] == 431
        assert "Stopped" in refused.json()["detail"][0]["msg"]

        for operation, body, state in (
            ("start", None, "Running"),
            ("reboot", None, "Running"),
            ("destroy", {}, "Destroyed"),
            ("recover", None, "Stopped"),
            ("destroy", {}, "Destroyed"),
            ("expunge", None, None),
        ):
            response = await http.post(f"/v1/virtual-machines/{vm_id}/{operation}", json=body)
            assert response.status_code == 202, (operation, response.text)
            job = await wait_for_job(http, response.json()["job_id"])
            assert job["status"] == "succeeded", (operation, job)
            if state is not None:
                assert (await vm_state(http, vm_id))["state"] == state
            if operation == "start":
                recover = await http.post(f"/v1/virtual-machines/{vm_id}/recover")
                assert recover.status_code == 409
        gone = await vm_state(http, vm_id)
        assert gone["removed"] is not None
        params: dict[str, str | int] = {
            "consistent": "true",
            "zone_id": str(stack.zone.zone_id),
            "limit": 500,
        }
        listing = (await http.get("/v1/virtual-machines", params=params)).json()
        assert vm_id not in {v["id"] for v in listing["data"]}
        everything = (
            await http.get("/v1/virtual-machines", params={**params, "include_removed": "true"})
        ).json()
        assert vm_id in {v["id"] for v in everything["data"]}


async def test_the_queue_is_visible_and_jobs_cancel_or_refuse_409(
    stack: Stack, temporal_client: Client
) -> None:
    async with stack.http() as http:
        accepted = (await http.post("/v1/virtual-machines", json=order(stack, name="q"))).json()
        vm_id = accepted["virtual_machine_id"]
        await wait_for_job(http, accepted["job_id"])
        fault = (
            await http.post(
                "/v1/simulator/faults",
                json={"operation": "reboot_vm", "action": "delay", "delay_seconds": 3},
            )
        ).json()
        try:
            running = (await http.post(f"/v1/virtual-machines/{vm_id}/reboot")).json()
            queued = (await http.post(f"/v1/virtual-machines/{vm_id}/stop")).json()
            # A repeated click gets a job of its own at once, and joins the queued one.
            joined = (await http.post(f"/v1/virtual-machines/{vm_id}/stop")).json()
            assert joined["job_id"] != queued["job_id"]
            assert (await http.get(f"/v1/jobs/{joined['job_id']}")).json()["status"] == "queued"

            async def queue() -> list[dict[str, str]]:
                listing = (await http.get(f"/v1/virtual-machines/{vm_id}/jobs")).json()
                return listing["data"]

            jobs = await wait_until(
                queue,
                lambda jobs: [j["job_id"] for j in jobs] == [running["job_id"], queued["job_id"]],
                what="the reboot running and one stop queued",
            )
            assert jobs[1]["status"] == "queued"

            cancelled = await http.post(f"/v1/jobs/{queued['job_id']}/cancel")
            assert cancelled.status_code == 202 and cancelled.json()["was"] == "queued"
            job = await wait_for_job(http, queued["job_id"])
            assert job["status"] == "cancelled" and job["jobstatus"] == 3
            # The job that joined it ends as it did; in Temporal the job closed as Canceled.
            assert (await wait_for_job(http, joined["job_id"]))["status"] == "cancelled"
            closed = await wait_until(
                lambda: temporal_client.get_workflow_handle(queued["job_id"]).describe(),
                lambda described: described.status is not WorkflowExecutionStatus.RUNNING,
                what="the cancelled job's workflow to close",
            )
            assert closed.status is WorkflowExecutionStatus.CANCELED

            # Once the reboot has reached the hypervisor there is no return from there.
            await step_reached(temporal_client, running["job_id"], "rebooting")
            refused = await http.post(f"/v1/jobs/{running['job_id']}/cancel")
            assert refused.status_code == 409, refused.text
            assert "point of no return" in refused.json()["detail"][0]["msg"]
            assert (await wait_for_job(http, running["job_id"]))["status"] == "succeeded"
            ended = await http.post(f"/v1/jobs/{running['job_id']}/cancel")
            assert ended.status_code == 409 and "already ended" in ended.json()["detail"][0]["msg"]
        finally:
            await http.delete(f"/v1/simulator/faults/{fault['fault_id']}")
        assert (await vm_state(http, vm_id))["state"] == "Running"


async def test_migrate_over_http_within_its_cluster_or_with_its_disk_and_bad_requests_fail(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        accepted = (await http.post("/v1/virtual-machines", json=order(stack, name="mig"))).json()
        vm_id = accepted["virtual_machine_id"]
        assert (await wait_for_job(http, accepted["job_id"]))["status"] == "succeeded"
        source = (await vm_state(http, vm_id))["host_id"]

        moved = await http.post(f"/v1/virtual-machines/{vm_id}/migrate", json={})
        assert moved.status_code == 202, moved.text
        job = await wait_for_job(http, moved.json()["job_id"])
        assert job["status"] == "succeeded" and job["job_type"] == "MigrateVirtualMachine"
        now = await vm_state(http, vm_id)
        assert now["state"] == "Running" and now["host_id"] not in (None, source)
        on_hypervisor = {
            str(h): [v.vm_id for v in stack.driver.vms_on(str(h))] for h in stack.zone.host_ids
        }
        assert [h for h, vms in on_hypervisor.items() if vm_id in vms] == [now["host_id"]]

        # A host of another cluster: the VM moves there with its disk (migrate with storage),
        # the disk to that cluster's pool.
        index = [str(h) for h in stack.zone.host_ids].index(now["host_id"])
        elsewhere = str(stack.zone.host_ids[(index + 2) % len(stack.zone.host_ids)])
        across = await http.post(
            f"/v1/virtual-machines/{vm_id}/migrate", json={"host_id": elsewhere}
        )
        assert across.status_code == 202, across.text
        job = await wait_for_job(http, across.json()["job_id"])
        assert job["status"] == "succeeded", job
        moved_vm = await vm_state(http, vm_id)
        assert moved_vm["state"] == "Running" and moved_vm["host_id"] == elsewhere
        root = await http.get(
            f"/v1/volumes/{moved_vm['root_volume_id']}", params={"consistent": "true"}
        )
        target_cluster = stack.cloud.load(Host, uuid.UUID(elsewhere)).cluster_id
        pool = stack.cloud.load(PrimaryStorage, uuid.UUID(root.json()["pool_id"]))
        assert pool.cluster_id == target_cluster, root.text
        assert root.json()["state"] == "Ready"

        # The host it runs on: the job fails with 431 and the VM stays put.
        wrong = await http.post(
            f"/v1/virtual-machines/{vm_id}/migrate", json={"host_id": elsewhere}
        )
        assert wrong.status_code == 202, wrong.text
        job = await wait_for_job(http, wrong.json()["job_id"])
        assert job["status"] == "failed" and job["error_code"] == 431, job
        assert (await vm_state(http, vm_id))["host_id"] == elsewhere

        # A stopped VM cannot be live-migrated: refused at once.
        stop = await http.post(f"/v1/virtual-machines/{vm_id}/stop")
        assert (await wait_for_job(http, stop.json()["job_id"]))["status"] == "succeeded"
        assert (await vm_state(http, vm_id))["state"] == "Stopped"  # what the refusal reads
        refused = await http.post(f"/v1/virtual-machines/{vm_id}/migrate")
        assert refused.status_code == 409 and refused.json()["errorcode"] == 431
        assert "Running" in refused.json()["detail"][0]["msg"]


async def test_vm_snapshots_over_http_create_list_revert_delete_and_bad_states_4xx(
    stack: Stack,
) -> None:
    async with stack.http() as http:
        accepted = (await http.post("/v1/virtual-machines", json=order(stack, name="snap"))).json()
        vm_id = accepted["virtual_machine_id"]
        assert (await wait_for_job(http, accepted["job_id"]))["status"] == "succeeded"
        base = f"/v1/virtual-machines/{vm_id}/snapshots"

        made: dict[str, str] = {}
        for name, memory in (("with-memory", True), ("disks-only", False)):
            response = await http.post(base, json={"name": name, "memory": memory})
            assert response.status_code == 202, response.text
            job = await wait_for_job(http, response.json()["job_id"])
            assert job["status"] == "succeeded" and job["job_type"] == "CreateVmSnapshot", job
            made[name] = response.json()["vm_snapshot_id"]
        listing = (await http.get(base, params={"consistent": "true"})).json()
        assert listing["count"] == 2
        rows = {row["id"]: row for row in listing["data"]}
        assert rows[made["with-memory"]]["memory"] is True
        assert rows[made["disks-only"]]["memory"] is False
        assert {row["state"] for row in rows.values()} == {"Ready"}

        for name, state in (("with-memory", "Running"), ("disks-only", "Stopped")):
            response = await http.post(f"{base}/{made[name]}/revert")
            assert response.status_code == 202, response.text
            job = await wait_for_job(http, response.json()["job_id"])
            assert job["status"] == "succeeded" and job["job_type"] == "RevertToVmSnapshot"
            assert (await vm_state(http, vm_id))["state"] == state

        # The VM is Stopped now: no snapshot of it (431), but its snapshots can be deleted.
        refused = await http.post(base, json={"name": "too-late"})
        assert refused.status_code == 409 and refused.json()["errorcode"] == 431
        assert "must be Running" in refused.json()["detail"][0]["msg"]
        deleted = await http.delete(f"{base}/{made['with-memory']}")
        assert deleted.status_code == 202, deleted.text
        job = await wait_for_job(http, deleted.json()["job_id"])
        assert job["status"] == "succeeded" and job["job_type"] == "DeleteVmSnapshot"
        listing = (await http.get(base, params={"consistent": "true"})).json()
        assert [row["id"] for row in listing["data"]] == [made["disks-only"]]
        everything = (
            await http.get(base, params={"consistent": "true", "include_removed": "true"})
        ).json()
        assert {row["id"]: row["state"] for row in everything["data"]}[
            made["with-memory"]
        ] == "Removed"

        # A deleted snapshot, or one that does not exist, is not there to revert to or delete.
        gone = await http.post(f"{base}/{made['with-memory']}/revert")
        assert gone.status_code == 404, gone.text
        unknown = await http.delete(f"{base}/{uuid.uuid4()}")
        assert unknown.status_code == 404, unknown.text
        kept = [s.snapshot_id for s in stack.driver.snapshots_of(vm_id)]
        assert kept == [made["disks-only"]]
