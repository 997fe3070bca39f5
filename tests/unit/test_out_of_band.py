"""Out-of-band management rules on the in-memory event store: what may be configured, when power
actions are allowed, and that each power action is recorded with what the BMC reported."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from domain.cloud import Cloud
from domain.errors import IllegalStateTransition, InvalidParameter
from domain.host import Host
from domain.job import Job, JobStatus
from domain.out_of_band import (
    CLAIM_EXPIRES,
    OutOfBandConfiguration,
    PowerActionRequest,
    PowerActionsBusy,
    begin_power_action,
    check_action,
    configure,
    fail_power_action,
    record_power,
)
from tests.unit.builders import new_host

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def configured(cloud: Cloud, host: Host, **fields: object) -> dict[str, object]:
    return configure(
        cloud,
        OutOfBandConfiguration(
            job_id=uuid.uuid4(),
            account_id=uuid.uuid4(),
            host_id=host.id,
            summary="oobm",
            **fields,  # type: ignore[arg-type]
        ),
    )


def test_a_bmc_is_recorded_by_driver_and_address_and_only_then_enabled(
    memory_cloud: Cloud,
) -> None:
    host = new_host()
    memory_cloud.save(host)
    with pytest.raises(InvalidParameter, match="configure its driver and address first"):
        configured(memory_cloud, host, enabled=True)
    answer = configured(memory_cloud, host, driver="ipmitool", address="10.0.0.9:6230")
    assert answer["enabled"] is False and answer["address"] == "10.0.0.9:6230"
    assert configured(memory_cloud, host, enabled=True)["enabled"] is True
    version = memory_cloud.load(Host, host.id).version
    configured(memory_cloud, host, enabled=True)  # the same again records nothing
    assert memory_cloud.load(Host, host.id).version == version


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"driver": "redfish"}, "driver"),
        ({"address": "admin:secret@10.0.0.9"}, "address"),
        ({"address": "10.0.0.9:99999"}, "address"),
        ({"address": "not an address"}, "address"),
        ({"address": "bmc\x00.example"}, "address"),
    ],
)
def test_a_bmc_that_is_not_one_is_refused_naming_the_field(
    memory_cloud: Cloud, fields: dict[str, object], field: str
) -> None:
    host = new_host()
    memory_cloud.save(host)
    with pytest.raises(InvalidParameter) as refused:
        configured(memory_cloud, host, **fields)
    assert refused.value.field == field
    assert "secret" not in refused.value.message
    assert memory_cloud.load(Host, host.id).oobm_address is None


def test_power_actions_need_enabled_management_and_each_is_recorded(memory_cloud: Cloud) -> None:
    host = new_host()
    memory_cloud.save(host)

    def request(action: str = "OFF") -> PowerActionRequest:
        return PowerActionRequest(
            job_id=uuid.uuid4(),
            account_id=uuid.uuid4(),
            host_id=host.id,
            action=action,
            summary="power",
        )

    with pytest.raises(IllegalStateTransition, match="no out-of-band management"):
        begin_power_action(memory_cloud, request(), NOW)
    configured(memory_cloud, host, driver="ipmitool", address="10.0.0.9")
    with pytest.raises(IllegalStateTransition, match="is disabled"):
        begin_power_action(memory_cloud, request(), NOW)
    configured(memory_cloud, host, enabled=True)
    asked = request("off")
    _, action = begin_power_action(memory_cloud, asked, NOW)
    assert action.value == "OFF"  # CloudStack's actions, in any case
    result = record_power(memory_cloud, asked.job_id, host.id, "OFF", "Off")
    record_power(memory_cloud, asked.job_id, host.id, "OFF", "Off")  # the step again
    assert result["power_state"] == "Off"
    recorded = [
        e for e in memory_cloud.events.get(host.id) if type(e).__name__ == "PowerActionRecorded"
    ]
    assert len(recorded) == 1
    loaded = memory_cloud.load(Host, host.id)
    assert loaded.power_state == "Off" and loaded.power_state_at == recorded[0].reported_at  # type: ignore[attr-defined]
    assert memory_cloud.load(Job, asked.job_id).status is JobStatus.SUCCEEDED
    with pytest.raises(InvalidParameter) as unknown:
        check_action("EXPLODE")
    assert unknown.value.field == "action"


def test_one_power_action_at_a_time_per_host_until_it_ends_or_its_claim_is_stale(
    memory_cloud: Cloud,
) -> None:
    host = new_host()
    memory_cloud.save(host)
    configured(memory_cloud, host, driver="ipmitool", address="10.0.0.9", enabled=True)

    def request(action: str) -> PowerActionRequest:
        return PowerActionRequest(
            job_id=uuid.uuid4(), account_id=uuid.uuid4(), host_id=host.id, action=action, summary=""
        )

    cycle, fence, status = request("CYCLE"), request("OFF"), request("STATUS")
    begin_power_action(memory_cloud, cycle, NOW)
    begin_power_action(memory_cloud, cycle, NOW)  # its own step again: still its
    with pytest.raises(PowerActionsBusy, match=f"under way \\(job {cycle.job_id}\\)") as busy:
        begin_power_action(memory_cloud, fence, NOW)
    assert busy.value.retryable and busy.value.code == 536
    assert memory_cloud.find(Job, fence.job_id) is None  # refused whole: nothing recorded
    # A cycle that did not settle fails, and gives the BMC back as it does.
    record_power(memory_cloud, cycle.job_id, host.id, "CYCLE", "Off", settled=False)
    with pytest.raises(PowerActionsBusy):
        begin_power_action(memory_cloud, fence, NOW)
    fail_power_action(memory_cloud, cycle, NOW, 534, "not settled", cancelled=False)
    begin_power_action(memory_cloud, fence, NOW)
    record_power(memory_cloud, fence.job_id, host.id, "OFF", "Off")
    assert memory_cloud.load(Host, host.id).power_action_job_id is None
    # A claim whose job never gave it back (terminated from outside: its record stays open)
    # stops holding the host once it is stale.
    begin_power_action(memory_cloud, status, NOW)
    power_on = request("ON")
    with pytest.raises(PowerActionsBusy):
        begin_power_action(memory_cloud, power_on, NOW)
    stuck = memory_cloud.load(Host, host.id)
    stuck.release_power_actions(status.job_id, "age/release")
    stuck.claim_power_actions(status.job_id, datetime.now(UTC) - CLAIM_EXPIRES * 2, "age/claim")
    memory_cloud.save(stuck)
    assert not memory_cloud.load(Job, status.job_id).status.is_final
    begin_power_action(memory_cloud, power_on, NOW)
    assert memory_cloud.load(Host, host.id).power_action_job_id == power_on.job_id
