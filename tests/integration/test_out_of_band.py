"""Out-of-band management as jobs, over the real IPMI protocol: a host's BMC is a pyghmi `Bmc` on
loopback (in a process of its own, `drivers/bmc_server.py`, which reports what the machine
really did), spoken to by pyghmi's client with the worker's login. Each power action is a job
and an audited event on the host; a wrong login or an unreachable BMC fails the job with the
reason and records no power state."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from temporalio.client import Client

from activities.drivers.ipmi import BmcLogin, IpmiClient
from activities.drivers.out_of_band import BmcLogins, IpmiPowerControl
from domain.cloud import Cloud
from domain.host import Host
from domain.job import Job, JobStatus
from domain.out_of_band import (
    CONFIGURE_JOB,
    POWER_ACTION_JOB,
    OutOfBandConfiguration,
    PowerActionRequest,
)
from tests.integration.drivers.test_baremetal_contract import (
    PASSWORD,
    USER,
    BmcProcess,
    closed_udp_port,
)
from tests.support import Harness, outcome, running_worker, seed_zone


@pytest.fixture(scope="module")
def bmc() -> Iterator[BmcProcess]:
    process = BmcProcess(1)
    yield process
    process.stop()


def control(password: str = PASSWORD) -> IpmiPowerControl:
    return IpmiPowerControl(
        BmcLogins(default=BmcLogin(USER, password)),
        IpmiClient(cipher_suite=3),
        settle_timeout=10,
        poll_interval=0.1,
    )


async def configure(harness: Harness, host_id: UUID, **fields: Any) -> tuple[str, Any]:
    job_id = uuid.uuid4()
    await harness.client.start_workflow(
        CONFIGURE_JOB,
        OutOfBandConfiguration(
            job_id=job_id, account_id=uuid.uuid4(), host_id=host_id, summary="oobm", **fields
        ),
        id=str(job_id),
        task_queue=harness.task_queue,
    )
    return await outcome(harness.client, job_id)


async def power(harness: Harness, host_id: UUID, action: str) -> tuple[UUID, str, Any]:
    job_id = uuid.uuid4()
    await harness.client.start_workflow(
        POWER_ACTION_JOB,
        PowerActionRequest(
            job_id=job_id,
            account_id=uuid.uuid4(),
            host_id=host_id,
            action=action,
            summary=f"power {action}",
        ),
        id=str(job_id),
        task_queue=harness.task_queue,
    )
    status, value = await outcome(harness.client, job_id)
    return job_id, status, value


def recorded_powers(cloud: Cloud, host_id: UUID) -> list[tuple[str, str]]:
    return [
        (getattr(e, "action", ""), getattr(e, "power_state", ""))
        for e in cloud.events.get(host_id)
        if type(e).__qualname__ == "Host.PowerActionRecorded"
    ]


async def test_power_actions_go_through_the_bmc_and_each_is_recorded_on_the_host(
    temporal_client: Client, cloud: Cloud, bmc: BmcProcess
) -> None:
    zone = seed_zone(cloud)
    host_id, port = zone.host_ids[0], bmc.ports[0]
    bmc.command("power", port, "off")
    power_control = control()
    try:
        async with running_worker(temporal_client, cloud, power_control=power_control) as harness:
            status, value = await configure(
                harness, host_id, driver="ipmitool", address=f"127.0.0.1:{port}", enabled=True
            )
            assert status == "succeeded", value
            assert value["enabled"] and value["address"] == f"127.0.0.1:{port}"
            mark = bmc.mark(port)
            seen: list[str] = []
            for action, expected in (
                ("STATUS", "Off"),
                ("ON", "On"),
                ("CYCLE", "On"),
                ("SOFT", "Off"),
                ("OFF", "Off"),
            ):
                job_id, status, value = await power(harness, host_id, action)
                assert status == "succeeded", (action, value)
                assert value["power_state"] == expected, (action, value)
                assert cloud.load(Job, job_id).job_type == POWER_ACTION_JOB
                seen.append(action)
            # What the machine did, as its BMC saw it: on, cycled, shut down by ACPI.
            events = [e[0] for e in bmc.since(port, mark)]
            assert events == ["power_on", "cycle", "soft_off"], events
    finally:
        power_control.close()
    assert recorded_powers(cloud, host_id) == [
        ("STATUS", "Off"),
        ("ON", "On"),
        ("CYCLE", "On"),
        ("SOFT", "Off"),
        ("OFF", "Off"),
    ]
    assert cloud.load(Host, host_id).power_state == "Off"
    assert cloud.load(Host, host_id).power_state_at is not None


async def test_a_wrong_login_or_an_unreachable_bmc_fails_the_job_and_records_no_power(
    temporal_client: Client, cloud: Cloud, bmc: BmcProcess
) -> None:
    zone = seed_zone(cloud)
    host_id = zone.host_ids[0]
    wrong = control("not-the-password")
    try:
        async with running_worker(temporal_client, cloud, power_control=wrong) as harness:
            status, _ = await configure(
                harness,
                host_id,
                driver="ipmitool",
                address=f"127.0.0.1:{bmc.ports[0]}",
                enabled=True,
            )
            assert status == "succeeded"
            job_id, status, _ = await power(harness, host_id, "OFF")
            assert status == "ended"
            job = cloud.load(Job, job_id)
            assert job.status is JobStatus.FAILED and "BMC" in (job.error_text or "")
            assert PASSWORD not in (job.error_text or "")

            nobody = closed_udp_port()  # no BMC answers there
            status, _ = await configure(harness, host_id, address=f"127.0.0.1:{nobody}")
            assert status == "succeeded"
            job_id, status, _ = await power(harness, host_id, "STATUS")
            assert status == "ended"
            job = cloud.load(Job, job_id)
            assert job.status is JobStatus.FAILED and job.error_code == 534, job.error_text
    finally:
        wrong.close()
    assert recorded_powers(cloud, host_id) == []


async def test_a_host_without_enabled_out_of_band_management_refuses_power_actions(
    temporal_client: Client, cloud: Cloud
) -> None:
    zone = seed_zone(cloud)
    host_id = zone.host_ids[1]
    async with running_worker(temporal_client, cloud) as harness:
        job_id, status, _ = await power(harness, host_id, "ON")
        assert status == "ended"
        job = cloud.load(Job, job_id)
        assert job.error_code == 431 and "no out-of-band management" in (job.error_text or "")

        status, _ = await configure(harness, host_id, enabled=True)
        assert status == "ended"  # nothing to enable yet
        status, _ = await configure(harness, host_id, driver="ipmitool", address="192.0.2.7")
        assert status == "succeeded"
        job_id, status, _ = await power(harness, host_id, "ON")
        job = cloud.load(Job, job_id)
        assert job.error_code == 431 and "is disabled" in (job.error_text or "")
        for bad in ({"driver": "redfish"}, {"address": "root:pw@192.0.2.7"}):
            status, _ = await configure(harness, host_id, **bad)
            assert status == "ended", bad
        assert cloud.load(Host, host_id).oobm_address == "192.0.2.7"
    assert recorded_powers(cloud, host_id) == []


async def test_power_actions_asked_at_once_reach_the_bmc_one_at_a_time(
    temporal_client: Client, cloud: Cloud, bmc: BmcProcess
) -> None:
    zone = seed_zone(cloud)
    host_id, port = zone.host_ids[1], bmc.ports[0]
    bmc.command("power", port, "on")
    power_control = control()
    try:
        async with running_worker(temporal_client, cloud, power_control=power_control) as harness:
            status, value = await configure(
                harness, host_id, driver="ipmitool", address=f"127.0.0.1:{port}", enabled=True
            )
            assert status == "succeeded", value
            asked = ["CYCLE", "ON", "STATUS", "CYCLE"]
            ended = await asyncio.gather(*(power(harness, host_id, a) for a in asked))
            assert [status for _, status, _ in ended] == ["succeeded"] * len(asked), ended
    finally:
        power_control.close()
    # Each claim of the BMC is given back before the next is taken, whatever the order.
    holds = [
        (type(e).__name__, e.job_id)  # type: ignore[attr-defined]
        for e in cloud.events.get(host_id)
        if type(e).__name__ in ("PowerActionsClaimed", "PowerActionsReleased")
    ]
    assert len(holds) == 2 * len(asked), holds
    for claim, release in zip(holds[::2], holds[1::2], strict=True):
        assert (claim[0], release[0]) == ("PowerActionsClaimed", "PowerActionsReleased")
        assert claim[1] == release[1]
    assert {job for _, job in holds} == {job_id for job_id, _, _ in ended}
    assert cloud.load(Host, host_id).power_action_job_id is None
