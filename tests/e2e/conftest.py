"""The stack for end-to-end tests: API (uvicorn on a loopback port), worker and projector,
against the session's PostgreSQL and Temporal dev server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from activities.drivers.ipmi import BmcLogin
from activities.drivers.out_of_band import BmcLogins, IpmiPowerControl
from activities.drivers.simulator import SimulatorDriver
from activities.simulator_configuration import faults_from
from api.app import create_app
from api.credentials import CredentialStore, KeyPair, new_encryption_key
from api.reads import CONSISTENCY_HEADER
from api.services import CloudServices
from api.settings import ApiSettings
from domain.cloud import Cloud
from domain.tenancy import first_user_id
from projections.runner import Projector
from projections.store import ReadStore
from tests.integration.drivers.test_baremetal_contract import PASSWORD as BMC_PASSWORD
from tests.integration.drivers.test_baremetal_contract import USER as BMC_USER
from tests.support import ADMIN_KEY, ADMIN_SECRET, seed_zone, started, wait_until, wrap_activity
from workers.demo_cloud import DemoCloud
from workers.stack import supervise
from workers.worker import build_worker, control_plane_activities

#: The key the test stacks' credential stores encrypt secrets under.
CREDENTIALS_KEY = new_encryption_key()


@dataclass
class Stack:
    url: str
    zone: DemoCloud
    driver: SimulatorDriver
    task_queue: str
    cloud: Cloud
    credentials: CredentialStore | None = None

    def http(self, key: str | None = ADMIN_KEY) -> httpx.AsyncClient:
        headers = {"X-API-Key": key} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


def deploy_order(stack: Stack, **overrides: Any) -> dict[str, Any]:
    """A deployment body on the stack's zone, offering and template."""
    body: dict[str, Any] = {
        "zone_id": str(stack.zone.zone_id),
        "service_offering_id": str(stack.zone.small_offering_id),
        "template_id": str(stack.zone.template_id),
    }
    body.update(overrides)
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="package")
async def projector(cloud_env: dict[str, str]) -> AsyncIterator[Projector]:
    """The package's one projector, which every stack's API reads through: a projector holds
    four PostgreSQL connections per projection, so a second one would cost forty for nothing.
    As `stratus up` does, a projection that lost a race to another projector (a test's own
    elsewhere on the database) restarts; one that failed fails the package at teardown."""
    running = Projector(cloud_env)
    supervisor = asyncio.create_task(supervise(running, every=0.2))
    try:
        yield running
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        running.check()
        assert not running.failures, f"a projection failed: {list(running.failures)}"
    finally:
        running.stop()


@pytest.fixture(scope="package")
async def stack(
    temporal_client: Client, cloud: Cloud, projector: Projector, database_url: str
) -> AsyncIterator[Stack]:
    async with serving_stack(temporal_client, cloud, database_url) as served:
        yield served


@asynccontextmanager
async def serving_stack(
    temporal_client: Client,
    cloud: Cloud,
    database_url: str,
    *,
    around: Callable[[str, Callable[[], Any]], Any] | None = None,
    settings: ApiSettings | None = None,
) -> AsyncIterator[Stack]:
    """API and worker on a zone and task queue of their own, read models kept by the package's
    `projector` (request it too); `around` controls the worker's activities as in the
    integration tests."""
    zone = seed_zone(cloud)
    task_queue = f"e2e-{uuid.uuid4().hex[:8]}"
    driver = SimulatorDriver(lambda: faults_from(cloud))
    # BMCs the tests start (tests/integration/drivers/bmc_server.py) take this login.
    power_control = IpmiPowerControl(
        BmcLogins(default=BmcLogin(BMC_USER, BMC_PASSWORD)), settle_timeout=10, poll_interval=0.1
    )
    activities: Sequence[Any] = control_plane_activities(
        cloud, {driver.hypervisor: driver}, power_control=power_control
    )
    if around is not None:
        activities = [wrap_activity(a, around) for a in activities]
    worker = build_worker(temporal_client, task_queue, activities)
    reads = ReadStore(database_url)
    reads.index_event_topics()
    credentials = CredentialStore(reads.pool, CREDENTIALS_KEY)
    credentials.create_table()
    credentials.keep(first_user_id(zone.admin_account_id), KeyPair(ADMIN_KEY, ADMIN_SECRET))
    services = CloudServices(
        cloud=cloud,
        reads=reads,
        temporal=temporal_client,
        task_queue=task_queue,
        credentials=credentials,
    )
    port = free_port()
    # Rate limiting has tests of its own; here it would only slow the conformance run down.
    app = create_app(services, settings or ApiSettings(api_rate_limit_enabled=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    await wait_until(
        lambda: server.started or serving.done(), what=f"the API to start on port {port}"
    )
    if serving.done():
        raise AssertionError(f"the API did not start on port {port}: {serving}")
    try:
        async with worker:
            yield Stack(f"http://127.0.0.1:{port}", zone, driver, task_queue, cloud, credentials)
    finally:
        server.should_exit = True
        await serving
        reads.close()
        power_control.close()


async def wait_for_job(http: httpx.AsyncClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the job as a client would, until it ends."""

    async def read() -> httpx.Response:
        response = await http.get(f"/v1/jobs/{job_id}", params={"consistent": "true"})
        assert response.status_code == 200, response.text
        return response

    def ended(response: httpx.Response) -> bool:
        # Only a read that saw every write so far counts: one that gave up waiting for the
        # projection (a busy machine) may show a stale row, or Temporal's view without one.
        return bool(
            response.json()["jobstatus"] != 0 and response.headers[CONSISTENCY_HEADER] == "true"
        )

    response = await wait_until(
        read, ended, timeout=timeout, interval=0.2, what=f"job {job_id} to end"
    )
    return response.json()


async def step_reached(client: Client, job_id: str, step: str, timeout: float = 30) -> None:
    """Wait until the job's workflow shows `step` in its current details (the Temporal UI's
    "Current details"): the workflow itself has got there, not only its last activity."""
    handle = await started(client, uuid.UUID(job_id), timeout)

    async def current_details() -> str:
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        return metadata.current_details

    await wait_until(
        current_details,
        lambda details: step in details,
        timeout=timeout,
        what=f"job {job_id} to reach {step!r}",
    )
