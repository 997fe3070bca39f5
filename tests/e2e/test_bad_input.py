"""Bad input gets a clear 4xx naming the field and the reason, never a 500."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import Stack


def order(stack: Stack, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "zone_id": str(stack.zone.zone_id),
        "service_offering_id": str(stack.zone.small_offering_id),
        "template_id": str(stack.zone.template_id),
    }
    body.update(overrides)
    return body


def field_of(response_json: dict) -> list[str]:  # type: ignore[type-arg]
    return [str(part) for part in response_json["detail"][0]["loc"]]


@pytest.mark.parametrize(
    ("overrides", "field", "status"),
    [
        ({"zone_id": "not-a-uuid"}, "zone_id", 422),
        ({"service_offering_id": None}, "service_offering_id", 422),
        ({"name": "9starts-with-digit"}, "name", 422),
        ({"name": "x" * 64}, "name", 422),
        ({"root_disk_size_gib": 0}, "root_disk_size_gib", 422),
        ({"root_disk_size_gib": 1}, "root_disk_size_gib", 422),  # smaller than the template
        ({"unexpected": "field"}, "unexpected", 422),
        ({"service_offering_id": str(uuid.uuid4())}, "service_offering_id", 422),
        ({"template_id": str(uuid.uuid4())}, "template_id", 422),
        ({"zone_id": str(uuid.uuid4())}, "zone_id", 422),
        ({"network_id": str(uuid.uuid4())}, "network_id", 422),
    ],
)
async def test_a_bad_deploy_request_is_refused_naming_the_field(
    stack: Stack, overrides: dict[str, object], field: str, status: int
) -> None:
    async with stack.http() as http:
        response = await http.post("/v1/virtual-machines", json=order(stack, **overrides))
    assert response.status_code == status, response.text
    assert field_of(response.json())[-1] == field
    assert response.json()["detail"][0]["msg"]
    assert response.json()["errorcode"] in (430, 431)


async def test_a_body_that_is_not_json_is_a_422(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.post(
            "/v1/virtual-machines", content=b"{nope", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422


async def test_unknown_ids_are_404(stack: Stack) -> None:
    async with stack.http() as http:
        for path in ("virtual-machines", "jobs", "volumes", "zones", "hosts", "templates"):
            response = await http.get(f"/v1/{path}/{uuid.uuid4()}")
            assert response.status_code == 404, (path, response.text)
            assert "not found" in response.json()["detail"][0]["msg"]


async def test_a_malformed_id_in_the_path_is_a_422(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/virtual-machines/123")
    assert response.status_code == 422 and field_of(response.json()) == ["path", "vm_id"]


async def test_a_missing_or_unknown_api_key_is_401(stack: Stack) -> None:
    async with stack.http(key=None) as anonymous, stack.http(key="wrong") as stranger:
        assert (await anonymous.get("/v1/virtual-machines")).status_code == 401
        assert (await stranger.get("/v1/virtual-machines")).status_code == 401


async def test_a_cursor_this_api_did_not_hand_out_is_a_422(stack: Stack) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/virtual-machines", params={"cursor": "garbage!"})
    assert response.status_code == 422 and field_of(response.json()) == ["query", "cursor"]


@pytest.mark.parametrize("limit", [0, 501, -1])
async def test_a_limit_out_of_range_is_a_422(stack: Stack, limit: int) -> None:
    async with stack.http() as http:
        response = await http.get("/v1/virtual-machines", params={"limit": limit})
    assert response.status_code == 422 and field_of(response.json()) == ["query", "limit"]


async def test_a_bad_simulator_fault_names_the_field(stack: Stack) -> None:
    async with stack.http() as http:
        unknown_op = await http.post(
            "/v1/simulator/faults", json={"operation": "explode", "action": "fail"}
        )
        unknown_host = await http.post(
            "/v1/simulator/faults",
            json={"operation": "start_vm", "action": "fail", "host_id": str(uuid.uuid4())},
        )
        bad_action = await http.post(
            "/v1/simulator/faults", json={"operation": "start_vm", "action": "maybe"}
        )
    assert unknown_op.status_code == 422 and field_of(unknown_op.json())[-1] == "operation"
    assert unknown_host.status_code == 422 and field_of(unknown_host.json())[-1] == "host_id"
    assert bad_action.status_code == 422 and field_of(bad_action.json())[-1] == "action"
