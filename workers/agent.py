"""`stratus agent`: the worker next to the hypervisors (CloudStack's agent model).

For each cluster in its configuration it polls that cluster's task queue with the hypervisor
activities only, served by a driver built from the configuration, credentials included. It has
no database and no workflows: the control plane decides, the agent only touches hypervisors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.drivers.hypervisor import HypervisorDriver
from activities.hypervisor import DriverRegistry, HypervisorActivities
from activities.out_of_band import bmc_activities
from workers.agent_config import AgentConfig, ClusterSettings, build_driver

log = logging.getLogger("stratus.agent")


def hypervisor_activities(drivers: DriverRegistry) -> list[Any]:
    """Every activity `HypervisorActivities` defines (driver-only by construction)."""
    activities = HypervisorActivities(drivers)
    found = []
    for name in sorted(dir(HypervisorActivities)):
        method = getattr(HypervisorActivities, name)
        if callable(method) and hasattr(method, "__temporal_activity_definition"):
            found.append(getattr(activities, name))
    return found


def build_agent_worker(
    client: Client,
    cluster: ClusterSettings,
    driver: HypervisorDriver,
    *,
    threads: int = 16,
) -> Worker:
    """One worker on one cluster's task queue, with that cluster's driver only."""
    registry = DriverRegistry({driver.hypervisor: driver})
    activities = hypervisor_activities(registry)
    if cluster.oobm is not None:
        activities += bmc_activities(cluster.oobm.power_control())
    return Worker(
        client,
        task_queue=cluster.queue,
        activities=activities,
        activity_executor=ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"agent-{cluster.id.hex[:8]}"
        ),
        max_concurrent_activities=threads,
    )


def build_agent_workers(
    client: Client,
    config: AgentConfig,
    drivers: Mapping[str, HypervisorDriver] | None = None,
) -> list[Worker]:
    """A worker per configured cluster; `drivers` (by cluster id) replaces built ones (tests)."""
    workers = []
    for cluster in config.clusters:
        driver = (drivers or {}).get(str(cluster.id)) or build_driver(cluster)
        log.info("serving %s", cluster.describe())
        workers.append(
            build_agent_worker(client, cluster, driver, threads=config.agent.activity_threads)
        )
    return workers


async def run_agent(client: Client, config: AgentConfig) -> None:
    """Run until cancelled; every worker stops with the others."""
    workers: Sequence[Worker] = build_agent_workers(client, config)
    try:
        await asyncio.gather(*(worker.run() for worker in workers))
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.shutdown()
