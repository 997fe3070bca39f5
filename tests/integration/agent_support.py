"""An agent on a per-cluster task queue, serving a KVM cluster backed by libvirt's test driver.

Each test gets its own libvirt test node (`test:///<file>.xml` keeps private state per
connection, and the driver keeps one connection), so tests never see each other's VMs.
"""

from __future__ import annotations

import contextlib
import tempfile
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from temporalio.client import Client

from activities.drivers.hypervisor import DriverTimeoutError, HypervisorDriver
from activities.drivers.libvirt_kvm import LibvirtKvmDriver
from domain import inventory
from domain.catalog import GIB
from domain.cloud import Cloud
from domain.cluster_connection import ConnectionSettings
from domain.infrastructure import (
    AddClusterRequest,
    AddHostRequest,
    AddStoragePoolRequest,
    cluster_id_for,
    host_id_for,
    pool_id_for,
)
from tests.support import Harness, seed_zone
from workers.agent import build_agent_workers
from workers.agent_config import AgentConfig, parse_agent_config
from workers.demo_cloud import DemoCloud

MIB = 1024 * 1024
#: The size of the libvirt test node every KVM host reports.
NODE_CPUS, NODE_MHZ, NODE_MEMORY_MIB = 8, 2400, 8192
#: A credential the agent holds for another cluster: it must never leave the agent.
VCENTER_PASSWORD = "vc-pa55-" + uuid.uuid4().hex


def libvirt_test_node() -> str:
    """A fresh libvirt test node (8 cpus at 2400 MHz, 8 GiB, a `default` network); its URI."""
    folder = Path(tempfile.mkdtemp(prefix="stratus-libvirt-test-"))
    node = folder / "node.xml"
    node.write_text(
        f"""<node>
  <cpu><mhz>{NODE_MHZ}</mhz><model>i686</model><active>{NODE_CPUS}</active>
    <total>{NODE_CPUS}</total><nodes>1</nodes><sockets>1</sockets><cores>{NODE_CPUS}</cores>
    <threads>1</threads></cpu>
  <memory>{NODE_MEMORY_MIB * 1024}</memory>
  <network><name>default</name><bridge name='virbr9'/><forward/>
    <ip address='192.168.199.1' netmask='255.255.255.0'/></network>
</node>"""
    )
    return f"test://{node}"


def agent_config_toml(cluster_id: uuid.UUID, queue: str, uri: str) -> str:
    """The agent's file: the KVM cluster under test, and a vCenter cluster with a password."""
    return f"""
[agent]
activity_threads = 8

[[clusters]]
id = "{cluster_id}"
hypervisor = "KVM"
task_queue = "{queue}"

  [clusters.libvirt]
  uri = "{uri}"
  domain_type = "test"
  network = "default"
  shutdown_timeout_seconds = 1
  call_timeout_seconds = 60

[[clusters]]
id = "{uuid.uuid4()}"
hypervisor = "VMware"

  [clusters.vcenter]
  address = "vcenter.invalid"
  user = "administrator@vsphere.local"
  password = "{VCENTER_PASSWORD}"
  datacenter = "DC1"
  cluster = "Cluster-1"
"""


def kvm_driver(config: AgentConfig, cluster_id: uuid.UUID) -> LibvirtKvmDriver:
    from workers.agent_config import build_driver

    (cluster,) = [c for c in config.clusters if c.id == cluster_id]
    driver = build_driver(cluster)
    assert isinstance(driver, LibvirtKvmDriver)
    return driver


class TimesOutAfterDoing:
    """A driver whose named calls, the first time, do their work and then time out: the
    outcome is unknown to the caller although the hypervisor did it."""

    def __init__(self, driver: HypervisorDriver, operations: set[str]) -> None:
        self._driver = driver
        self._pending = set(operations)
        self.hypervisor = driver.hypervisor
        self.timed_out: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._driver, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if name in self._pending:
                self._pending.discard(name)
                self.timed_out.append(name)
                raise DriverTimeoutError(f"{name}: no answer within the deadline (injected)")
            return result

        return call


@dataclass
class KvmCluster:
    zone: DemoCloud
    cluster_id: uuid.UUID
    host_id: uuid.UUID
    pool_id: uuid.UUID
    template_id: uuid.UUID
    queue: str
    driver: LibvirtKvmDriver
    config: AgentConfig
    workflow_ids: list[str]


@asynccontextmanager
async def kvm_cluster_with_agent(
    client: Client,
    cloud: Cloud,
    harness: Harness,
    *,
    wrap: Callable[[HypervisorDriver], HypervisorDriver] | None = None,
) -> AsyncIterator[KvmCluster]:
    """A zone with a KVM cluster (added by AddCluster, its host by AddHost, its pool by
    AddStoragePool) and an agent serving the cluster's queue from a TOML configuration."""
    zone = seed_zone(cloud)
    queue = f"hypervisor-test-{uuid.uuid4().hex[:8]}"
    cluster_job = uuid.uuid4()
    cluster_id = cluster_id_for(cluster_job)
    uri = libvirt_test_node()
    config = parse_agent_config(tomllib.loads(agent_config_toml(cluster_id, queue, uri)))
    driver = kvm_driver(config, cluster_id)
    served: HypervisorDriver = wrap(cast(HypervisorDriver, driver)) if wrap else driver
    workers = build_agent_workers(client, config, {str(cluster_id): served})
    workflow_ids: list[str] = []
    try:
        async with workers[0], workers[1]:
            await client.execute_workflow(
                "AddCluster",
                AddClusterRequest(
                    job_id=cluster_job,
                    cluster_id=cluster_id,
                    pod_id=zone.pod_id,
                    name=f"kvm-{cluster_job.hex[:6]}",
                    hypervisor="KVM",
                    cpu_overprovisioning=2.0,
                    agent_task_queue=queue,
                    connection=ConnectionSettings(libvirt_uri=uri),
                    power_sync_interval_seconds=3600,
                ),
                id=str(cluster_job),
                task_queue=harness.task_queue,
            )
            workflow_ids.append(str(cluster_job))
            host_job = uuid.uuid4()
            await client.execute_workflow(
                "AddHost",
                AddHostRequest(
                    job_id=host_job,
                    host_id=host_id_for(host_job),
                    cluster_id=cluster_id,
                    account_id=zone.admin_account_id,
                    name="kvm-host-1",
                    address="127.0.0.1",
                    summary="add kvm-host-1",
                ),
                id=str(host_job),
                task_queue=harness.task_queue,
            )
            workflow_ids.append(str(host_job))
            pool_job = uuid.uuid4()
            await client.execute_workflow(
                "AddStoragePool",
                AddStoragePoolRequest(
                    job_id=pool_job,
                    pool_id=pool_id_for(pool_job),
                    name=f"pool-{pool_job.hex[:6]}",
                    scope="CLUSTER",
                    cluster_id=cluster_id,
                    path=f"/stratus-pool-{pool_job.hex[:6]}",
                    capacity_bytes=100 * GIB,
                ),
                id=str(pool_job),
                task_queue=harness.task_queue,
            )
            workflow_ids.append(str(pool_job))
            template = inventory.register_template(
                cloud,
                uuid.uuid4(),
                f"tiny-kvm-{uuid.uuid4().hex[:6]}",
                display_text="A tiny image for libvirt's test driver",
                hypervisor="KVM",
                format="QCOW2",
                os_type="Other Linux (64-bit)",
                url="file:///var/tmp/stratus-tiny.qcow2",
                size_bytes=32 * MIB,
                zone_id=zone.zone_id,
            )
            yield KvmCluster(
                zone=zone,
                cluster_id=cluster_id,
                host_id=host_id_for(host_job),
                pool_id=pool_id_for(pool_job),
                template_id=template.id,
                queue=queue,
                driver=driver,
                config=config,
                workflow_ids=workflow_ids,
            )
    finally:
        from domain.infrastructure import power_state_sync_id

        with contextlib.suppress(Exception):  # it may never have started
            await client.get_workflow_handle(power_state_sync_id(cluster_id)).terminate("test over")
        driver.close()


async def deploy(harness: Harness, kvm: KvmCluster, name: str) -> Any:
    """Start the normal DeployVirtualMachine job for a VM of the KVM template."""
    from datetime import timedelta

    from domain.job_requests import DeploymentOrder, DeployVirtualMachineRequest

    job_id = uuid.uuid4()
    order = DeploymentOrder(
        account_id=kvm.zone.admin_account_id,
        zone_id=kvm.zone.zone_id,
        service_offering_id=kvm.zone.small_offering_id,
        template_id=kvm.template_id,
        network_id=kvm.zone.network_id,
        name=name,
        display_name=name,
    )
    return await harness.client.start_workflow(
        "DeployVirtualMachine",
        DeployVirtualMachineRequest(job_id=job_id, order=order, summary=f"deploy {name}"),
        id=str(job_id),
        task_queue=harness.task_queue,
        execution_timeout=timedelta(seconds=120),
    )
