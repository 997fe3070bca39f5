"""Record DeployVirtualMachine histories for the replay test.

Run when the workflow changes on purpose (behind `workflow.patched()`), keeping the old files:
    .venv/bin/python -m tests.integration.record_histories
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from domain.cloud import Cloud, postgres_env
from domain.job_requests import JobAttribute
from tests.support import fail_before, running_worker, seed_zone

HISTORIES = Path(__file__).parent / "histories"


async def record(database_url: str, temporal_binary: str) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary,
        search_attributes=[SearchAttributeKey.for_keyword(a.value) for a in JobAttribute],
        data_converter=pydantic_data_converter,
        ui=False,
    )
    cloud = Cloud(env=postgres_env(database_url))
    try:
        zone = seed_zone(cloud)
        async with running_worker(env.client, cloud) as harness:
            await save(await harness.deploy(zone, "recorded-ok"), "deploy_succeeds")
            harness.faults.append({"operation": "start_vm", "action": "fail",
                                   "host_id": str(zone.host_ids[0]), "error_code": 534,
                                   "message": "recorded host failure", "delay_seconds": 0})
            await save(await harness.deploy(zone, "recorded-retry"), "deploy_retries_next_host")
        async with running_worker(env.client, cloud,
                                  around=fail_before("hypervisor.launch_vm")) as harness:
            await save(await harness.deploy(zone, "recorded-unwind"), "deploy_fails_and_unwinds")
    finally:
        cloud.close()
        await env.shutdown()


async def save(handle, name: str) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(Exception):
        await handle.result()
    history = await handle.fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())
    print("recorded", name)


if __name__ == "__main__":
    import sys

    from tests.conftest import temporal_binary

    url = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/stratus_smoke"
    asyncio.run(record(url, temporal_binary()))
