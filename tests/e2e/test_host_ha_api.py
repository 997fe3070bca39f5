"""Host HA through the API, as an operator uses it: a cluster's kvm.ha settings (out of range:
422 naming the setting), HA switched on for a host (Ineligible without a BMC to fence it), and a
host its BMC cannot fence declared fenced by hand, as a job whose HA VM restarts elsewhere, and
the alert that says so, archived. Each test seeds a zone of its own, so the shared zone's hosts
are never watched."""

from __future__ import annotations

from domain.host import Host
from tests.e2e.conftest import Stack, wait_for_job
from tests.e2e.test_host_maintenance_api import deploy, host_row, refused_naming_the_host
from tests.integration.host_jobs import ha_offering
from tests.support import seed_zone


async def test_settings_switches_and_a_declared_fence_restart_the_ha_vm_elsewhere(
    stack: Stack,
) -> None:
    zone = seed_zone(stack.cloud)
    cluster_id = str(zone.cluster_ids[0])
    async with stack.http() as http:
        # Settings out of range, or unknown, name the setting.
        for body, field in (
            ({"activity_check_failure_ratio": 1.5}, "activity_check_failure_ratio"),
            ({"fence_timeout": 0}, "fence_timeout"),
            ({"kvm.ha.fence.timeout": 5}, "kvm.ha.fence.timeout"),
        ):
            refused = await http.put(f"/v1/clusters/{cluster_id}/ha", json=body)
            assert refused.status_code == 422, refused.text
            assert refused.json()["detail"][0]["loc"] == ["body", field], refused.text
        settings = await http.put(
            f"/v1/clusters/{cluster_id}/ha", json={"monitor_interval": 30, "fence_timeout": 5}
        )
        assert settings.status_code == 200, settings.text
        assert settings.json()["settings"]["fence_timeout"] == 5
        assert settings.json()["settings"]["activity_check_max_attempts"] == 10  # default

        # A plain VM and an HA one on a host whose HA is off: declaring it fenced is refused.
        plain = await deploy(http, zone, "plain-api")
        ha = str(ha_offering(stack.cloud))
        ha_vm = await deploy(http, zone, "ha-api", service_offering_id=ha)
        host_id = plain["host_id"]
        assert ha_vm["host_id"] == host_id  # first fit
        refused_naming_the_host(
            await http.post(f"/v1/hosts/{host_id}/declare-fenced"), "does not have HA enabled"
        )
        enabled = await http.post(f"/v1/hosts/{host_id}/ha/enable")
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["ha_enabled"] and enabled.json()["ha_state"] == "Ineligible"
        assert "no out-of-band management" in enabled.json()["ha_reason"]
        row = await host_row(http, zone, host_id)
        assert (row["ha_enabled"], row["ha_state"]) == (True, "Ineligible")

        # The operator has made sure the host is off (its VMs with it): declared fenced, a job.
        stack.driver.power_off_host(host_id)
        unplugged = await http.post(
            "/v1/simulator/faults",
            json={"operation": "*", "action": "fail", "host_id": host_id, "message": "off"},
        )
        assert unplugged.status_code == 201, unplugged.text
        declared = await http.post(f"/v1/hosts/{host_id}/declare-fenced")
        assert declared.status_code == 202, declared.text
        job = await wait_for_job(http, declared.json()["job_id"])
        assert job["status"] == "succeeded", job.get("error_text")
        assert job["job_type"] == "RestartVmsOfFencedHost"
        assert job["result"]["stopped"] == [plain["id"]]  # not HA: it stays Stopped
        assert job["result"]["restarted"] == [ha_vm["id"]]
        row = await host_row(http, zone, host_id)
        assert row["ha_state"] == "Fenced" and "declared fenced by" in row["ha_reason"]
        assert [m["state"] for m in row["ha_history"]] == ["Ineligible", "Fenced"]
        for vm_id, state in ((plain["id"], "Stopped"), (ha_vm["id"], "Running")):
            now = await http.get(f"/v1/virtual-machines/{vm_id}", params={"consistent": "true"})
            assert now.json()["state"] == state, now.text
            assert now.json()["host_id"] != host_id

        # The declaration is an alert; archived, it leaves the default listing.
        alerts = await http.get("/v1/alerts", params={"resource_id": host_id, "consistent": "true"})
        assert alerts.status_code == 200, alerts.text
        [alert] = alerts.json()["data"]
        assert (alert["type"], alert["name"]) == (30, "ALERT.HA.ACTION")
        assert "declared fenced by" in alert["subject"] and alert["resource_type"] == "Host"
        archived = await http.post(f"/v1/alerts/{alert['id']}/archive")
        assert archived.status_code == 200 and archived.json()["archived"], archived.text
        for include, count in ((False, 0), (True, 1)):
            listed = await http.get(
                "/v1/alerts",
                params={"resource_id": host_id, "include_archived": include, "consistent": "1"},
            )
            assert listed.json()["count"] == count, listed.text
        refused = await http.get("/v1/alerts", params={"type": 10**30})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
            "query",
            "type",
        ], refused.text
        missing = await http.post(f"/v1/alerts/{host_id}/archive")
        assert missing.status_code == 404, missing.text

        # Declared again: a job that finds nothing left to restart.
        again = await http.post(f"/v1/hosts/{host_id}/declare-fenced")
        assert again.status_code == 202, again.text
        job = await wait_for_job(http, again.json()["job_id"])
        assert job["status"] == "succeeded" and job["result"]["restarted"] == [], job
        assert stack.cloud.load(Host, host_id).reservations == {}

        await http.delete(f"/v1/simulator/faults/{unplugged.json()['fault_id']}")
        # HA switched off: the host is still Fenced (it is off) until it answers again.
        disabled = await http.post(f"/v1/hosts/{host_id}/ha/disable")
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["ha_state"] == "Fenced" and not disabled.json()["ha_enabled"]
