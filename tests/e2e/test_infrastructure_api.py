"""Building a KVM cluster through the API: the cluster (credentials refused), its host as a job
served by the cluster's agent, and its primary storage."""

from __future__ import annotations

import contextlib
import tomllib
import uuid
from typing import Any

import pytest
from temporalio.client import Client

from tests.e2e.conftest import Stack, wait_for_job
from tests.integration.agent_support import (
    NODE_CPUS,
    NODE_MEMORY_MIB,
    NODE_MHZ,
    agent_config_toml,
    libvirt_test_node,
)
from workers.agent import build_agent_workers
from workers.agent_config import parse_agent_config


def loc(response_json: dict[str, Any]) -> list[str]:
    return [str(part) for part in response_json["detail"][0]["loc"]]


def cluster_body(stack: Stack, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "pod_id": str(stack.zone.pod_id),
        "name": f"kvm-{uuid.uuid4().hex[:6]}",
        "hypervisor": "KVM",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"connection": {"libvirt_uri": "qemu:///system", "password": "x"}}, "connection.password"),
        ({"vcenter_user": "administrator"}, "vcenter_user"),
        ({"connection": {"api_key": "x"}}, "connection.api_key"),
        (
            {"hypervisor": "VMware", "connection": {"vcenter_address": "vc"}},
            "connection.datacenter",
        ),
        ({"connection": {"vcenter_address": "vc"}}, "connection.vcenter_address"),
        ({"connection": {"libvirt_uri": "qemu+tcp://root:pw@h/system"}}, "connection.libvirt_uri"),
        ({"hypervisor": "Hyper-V"}, "hypervisor"),
        ({"pod_id": str(uuid.uuid4())}, "pod_id"),
        ({"disable_threshold": 1.5}, "disable_threshold"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_bad_cluster_is_refused_naming_the_field(
    stack: Stack, overrides: dict[str, object], field: str
) -> None:
    async with stack.http() as http:
        response = await http.post("/v1/clusters", json=cluster_body(stack, **overrides))
    assert response.status_code == 422, response.text
    assert ".".join(loc(response.json())[1:]) == field, response.json()
    assert "pw@" not in response.text


async def test_a_kvm_host_is_added_with_the_capacity_its_hypervisor_reports(
    stack: Stack, temporal_client: Client
) -> None:
    queue = f"hypervisor-e2e-{uuid.uuid4().hex[:8]}"
    uri = libvirt_test_node()
    async with stack.http() as http:
        created = await http.post(
            "/v1/clusters",
            json=cluster_body(
                stack,
                agent_task_queue=queue,
                cpu_overprovisioning=2.0,
                connection={"libvirt_uri": uri},
            ),
        )
        assert created.status_code == 201, created.text
        cluster = created.json()
        assert cluster["agent_task_queue"] == queue
        assert cluster["connection"] == {"libvirt_uri": uri}
        cluster_id = uuid.UUID(cluster["id"])
        config = parse_agent_config(tomllib.loads(agent_config_toml(cluster_id, queue, uri)))
        try:
            workers = build_agent_workers(temporal_client, config)
            async with workers[0]:
                accepted = await http.post(
                    "/v1/hosts",
                    json={"cluster_id": str(cluster_id), "name": "kvm-1", "address": "127.0.0.1"},
                )
                assert accepted.status_code == 202, accepted.text
                job = await wait_for_job(http, accepted.json()["job_id"])
            assert job["status"] == "succeeded", job
            assert job["job_type"] == "AddHost"
            host_id = accepted.json()["host_id"]
            listed = await http.get(
                "/v1/hosts", params={"cluster_id": str(cluster_id), "consistent": "true"}
            )
            assert listed.status_code == 200
            (host,) = listed.json()["data"]
            assert host["id"] == host_id and host["hypervisor"] == "KVM"
            assert (host["cpu_count"], host["cpu_speed_mhz"], host["memory_total_mib"]) == (
                NODE_CPUS,
                NODE_MHZ,
                NODE_MEMORY_MIB,
            )

            again = await http.post(
                "/v1/hosts",
                json={"cluster_id": str(cluster_id), "name": "kvm-1", "address": "10.9.9.9"},
            )
            assert again.status_code == 422 and loc(again.json()) == ["body", "name"]
            unknown = await http.post(
                "/v1/hosts",
                json={"cluster_id": str(uuid.uuid4()), "name": "kvm-2", "address": "10.9.9.9"},
            )
            assert unknown.status_code == 422 and loc(unknown.json()) == ["body", "cluster_id"]
            secret = await http.post(
                "/v1/hosts",
                json={
                    "cluster_id": str(cluster_id),
                    "name": "kvm-2",
                    "address": "10.9.9.9",
                    "ipmi_password": "x",
                },
            )
            assert secret.status_code == 422 and loc(secret.json()) == ["body", "ipmi_password"]

            pool = await http.post(
                "/v1/storage-pools",
                json={
                    "name": "kvm-primary",
                    "scope": "CLUSTER",
                    "cluster_id": str(cluster_id),
                    "path": "/var/lib/stratus/primary",
                    "capacity_bytes": 10 * 1024**4,
                },
            )
            assert pool.status_code == 201, pool.text
            assert pool.json()["cluster_id"] == str(cluster_id)
            no_zone = await http.post(
                "/v1/storage-pools",
                json={"name": "z", "scope": "ZONE", "path": "/z", "capacity_bytes": 1},
            )
            assert no_zone.status_code == 422 and loc(no_zone.json()) == ["body", "zone_id"]
        finally:
            with contextlib.suppress(Exception):
                await temporal_client.get_workflow_handle(
                    cluster["power_state_sync_workflow_id"]
                ).terminate("test over")
