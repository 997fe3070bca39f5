"""`stratus`: run the stack or its parts, and talk to the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import typer

from api.cli import inventory_app, job_app, vm_app
from api.projections_cli import projections_app
from api.tenancy_cli import account_app, domain_app, user_app
from api.usage_cli import usage_app
from domain.cloud import Cloud, postgres_env
from projections.runner import Projector
from workers.settings import Settings

app = typer.Typer(
    help="Stratus, an IaaS control plane on Temporal and event sourcing.", no_args_is_help=True
)
app.add_typer(vm_app, name="vm")
app.add_typer(job_app, name="job")
app.add_typer(inventory_app, name="inventory")
app.add_typer(usage_app, name="usage")
app.add_typer(projections_app, name="projections")
app.add_typer(domain_app, name="domain")
app.add_typer(account_app, name="account")
app.add_typer(user_app, name="user")


def _log_warnings() -> None:
    """Warnings and errors to stderr with time and source: a projection that cannot write an
    event says so at every attempt (`projections.runner`)."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def _sigterm_stops_like_ctrl_c() -> None:
    """systemd, `docker stop` and `kill` send SIGTERM: stop as Ctrl-C does, through the
    shutdown (worker drained, embedded Temporal and PostgreSQL stopped), not dead on the spot
    with the embedded servers left running. uvicorn hands the signal it caught back to this
    handler once it has stopped serving."""

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


@app.command()
def up() -> None:
    """Run the whole stack on embedded defaults (or the STRATUS_* settings). Ctrl-C or SIGTERM
    stops it."""
    from workers.stack import up as run_up

    _log_warnings()
    _sigterm_stops_like_ctrl_c()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_up(Settings()))


def _external(settings: Settings) -> tuple[str, str]:
    if not settings.database_url or not settings.temporal_address:
        raise typer.BadParameter(
            "set STRATUS_DATABASE_URL and STRATUS_TEMPORAL_ADDRESS (or use `stratus up`)"
        )
    return settings.database_url, settings.temporal_address


@app.command()
def worker() -> None:
    """Run a Temporal worker against an external PostgreSQL and Temporal."""
    from workers.stack import run_worker_until_cancelled
    from workers.temporal_connection import connect

    settings = Settings()
    database_url, address = _external(settings)

    async def main() -> None:
        cloud = Cloud(env=postgres_env(database_url))
        client = await connect(address, settings.temporal_namespace)
        await run_worker_until_cancelled(settings, cloud, client)

    _sigterm_stops_like_ctrl_c()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@app.command()
def agent(
    config: str = typer.Option(
        None, "--config", "-c", help="agent TOML file (default: $STRATUS_AGENT_CONFIG)"
    ),
) -> None:
    """Serve the hypervisor task queues of the clusters in the agent configuration (no database).

    Temporal comes from the file's [temporal] section, or STRATUS_TEMPORAL_ADDRESS.
    """
    import logging

    from workers.agent import run_agent
    from workers.agent_config import AgentConfigError, load_agent_config
    from workers.temporal_connection import connect

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = load_agent_config(config)
    except AgentConfigError as error:
        raise typer.BadParameter(str(error), param_hint="--config") from None
    address = settings.temporal.address or Settings().temporal_address
    if not address:
        raise typer.BadParameter("set [temporal] address in the file or STRATUS_TEMPORAL_ADDRESS")

    async def main() -> None:
        client = await connect(address, settings.temporal.namespace)
        await run_agent(client, settings)

    _sigterm_stops_like_ctrl_c()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@app.command()
def projector() -> None:
    """Run the read-model projections against an external PostgreSQL. A projection blocked on
    an event is retried with backoff and logged; `stratus projections status` shows it."""
    settings = Settings()
    database_url, _ = _external(settings)

    _log_warnings()
    _sigterm_stops_like_ctrl_c()
    with Projector(postgres_env(database_url)) as running, contextlib.suppress(KeyboardInterrupt):
        while True:
            running.check()
            time.sleep(1)


@app.command()
def api() -> None:
    """Run the API against an external PostgreSQL and Temporal."""
    from workers.stack import serve_api
    from workers.temporal_connection import connect

    settings = Settings()
    database_url, address = _external(settings)

    async def main() -> None:
        cloud = Cloud(env=postgres_env(database_url))
        client = await connect(address, settings.temporal_namespace)
        await serve_api(settings, cloud, client, database_url)

    _sigterm_stops_like_ctrl_c()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@app.command("seed-demo")
def seed_demo() -> None:
    """Seed the demo cloud into an external PostgreSQL (idempotent)."""
    from workers.demo_cloud import seed_demo_cloud
    from workers.stack import admin_api_key

    settings = Settings()
    database_url, _ = _external(settings)
    cloud = Cloud(env=postgres_env(database_url))
    demo = seed_demo_cloud(cloud, admin_api_key(settings))
    typer.echo(f"demo zone {demo.zone_id}")


def main() -> None:
    app()
