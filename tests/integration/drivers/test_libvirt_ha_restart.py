"""Host HA on KVM against real libvirt daemons (issue 12): a VM of a failed host is restarted
on another libvirtd.

The KVM cluster has two hosts: A is `qemu:///system`, B the second, independent daemon the
driver contract tests migrate to (tests/integration/drivers/libvirt_daemons.py); the pool is a
directory both see at the same path. The cluster is added by its jobs and served by an agent
worker on its own task queue whose driver is the real `LibvirtKvmDriver`. Host A "loses power":
its QEMU guests are killed with libvirt and its daemon stops answering the driver. The
administrator declares it fenced as the API does, and the HA job must bring the HA VM up on
B's daemon, leave the plain VM Stopped and host A holding nothing, with the guest running in
one place only.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import libvirt
import pytest
from temporalio.client import Client

from activities.drivers.libvirt_kvm import LibvirtKvmDriver
from domain import host_ha_operations, inventory
from domain.catalog import GIB
from domain.cloud import Cloud
from domain.host import Host
from domain.host_ha import HaState
from domain.infrastructure import (
    AddClusterRequest,
    AddHostRequest,
    AddStoragePoolRequest,
    cluster_id_for,
    host_id_for,
    pool_id_for,
    power_state_sync_id,
)
from domain.job import Job, JobStatus
from domain.virtual_machine import VmState
from tests.integration.drivers.libvirt_daemons import SecondDaemon, kvm_usable
from tests.integration.host_jobs import ha_offering, running
from tests.integration.test_host_ha import declare
from tests.integration.vm_jobs import vm
from tests.support import Harness, running_worker, seed_zone
from workers.agent import build_agent_workers
from workers.agent_config import parse_agent_config
from workers.demo_cloud import DemoCloud

MIB = 1024 * 1024
#: What a host without power answers on: nothing (nobody listens on port 1).
POWERED_OFF = "qemu+tcp://127.0.0.1:1/system"


class HostUris(Mapping[str, str]):
    """The driver's host id → libvirt URI; once a host's power is cut, its daemon is gone."""

    def __init__(self) -> None:
        self._uris: dict[str, str] = {}
        self._cut: set[str] = set()

    def add(self, host_id: UUID, uri: str) -> None:
        self._uris[str(host_id)] = uri

    def cut_power(self, host_id: UUID) -> None:
        self._cut.add(str(host_id))

    def __getitem__(self, host_id: str) -> str:
        uri = self._uris[host_id]
        return POWERED_OFF if host_id in self._cut else uri

    def __iter__(self) -> Iterator[str]:
        return iter(self._uris)

    def __len__(self) -> int:
        return len(self._uris)


@dataclass
class LibvirtCluster:
    """A KVM cluster over real daemons, and everything the test made in them."""

    zone: DemoCloud  # its template and guest network are the KVM ones
    cluster_id: UUID
    uris: HostUris
    vm_names: list[str] = field(default_factory=list)


def view(uri: str, vm_id: UUID) -> str:
    """What the daemon itself says of the VM's domain (its UUID is the Stratus id)."""
    conn = libvirt.open(uri)
    try:
        try:
            domain = conn.lookupByUUIDString(str(vm_id))
        except libvirt.libvirtError:
            return "absent"
        return "running" if domain.isActive() else "defined, not running"
    finally:
        conn.close()


def cut_power(uri: str, vm_ids: list[UUID]) -> None:
    """The host lost power: its guests die at once (virsh destroy). Only this test's: the
    system daemon may run other tests' guests."""
    conn = libvirt.open(uri)
    try:
        for vm_id in vm_ids:
            conn.lookupByUUIDString(str(vm_id)).destroy()
    finally:
        conn.close()


def flat_network(uri: str, name: str, bridge: str) -> None:
    """A libvirt network named as the Stratus guest network (the driver's default NIC source):
    an isolated bridge of the daemon's own, no DHCP. Transient: destroyed, it is gone."""
    conn = libvirt.open(uri)
    try:
        conn.networkCreateXML(
            f"<network><name>{name}</name><bridge name='{bridge}' stp='off' delay='0'/></network>"
        )
    finally:
        conn.close()


def remove_everything(uri: str, vm_names: list[str], network: str, pool: str) -> None:
    """Whatever the test made in one daemon, gone whatever state it was left in."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return
    try:
        for name in vm_names:
            with contextlib.suppress(libvirt.libvirtError):
                domain = conn.lookupByName(name)
                if domain.isActive():
                    domain.destroy()
                domain.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                )
        with contextlib.suppress(libvirt.libvirtError):
            conn.networkLookupByName(network).destroy()
        with contextlib.suppress(libvirt.libvirtError):
            storage = conn.storagePoolLookupByName(pool)
            if storage.isActive():
                storage.destroy()
            storage.undefine()
    finally:
        conn.close()


async def add_host(
    harness: Harness, kvm: LibvirtCluster, job_id: UUID, name: str, address: str
) -> UUID:
    """AddHost, as the API submits it: the agent asks the host's daemon for its capacity."""
    await harness.client.execute_workflow(
        "AddHost",
        AddHostRequest(
            job_id=job_id,
            host_id=host_id_for(job_id),
            cluster_id=kvm.cluster_id,
            account_id=kvm.zone.admin_account_id,
            name=name,
            address=address,
            summary=f"add {name}",
        ),
        id=str(job_id),
        task_queue=harness.task_queue,
    )
    return host_id_for(job_id)


@asynccontextmanager
async def libvirt_cluster(
    harness: Harness, storage_dir: Path, template: Path, daemons: list[str]
) -> AsyncIterator[LibvirtCluster]:
    """A zone with a KVM cluster (AddCluster, AddStoragePool on the shared folder) served by an
    agent worker whose driver is a real `LibvirtKvmDriver`, a KVM template (the tiny qcow2) and
    a guest network without VLAN (libvirt tags VLANs only on Open vSwitch networks). Hosts are
    added by the test; every domain, network and pool it made is removed from `daemons` at the
    end."""
    client, cloud = harness.client, harness.cloud
    suffix = uuid.uuid4().hex[:8]
    zone = seed_zone(cloud)
    network = inventory.add_guest_network(
        cloud,
        uuid.uuid4(),
        zone.zone_id,
        f"flat-{suffix}",
        network_type="Shared",
        cidr="10.2.0.0/24",
        gateway="10.2.0.1",
        start_ip="10.2.0.10",
        end_ip="10.2.0.250",
        dns1="10.0.0.53",
    )
    template_id = inventory.register_template(
        cloud,
        uuid.uuid4(),
        f"tiny-qcow2-{suffix}",
        display_text="An empty 24 MiB qcow2: the guest finds nothing to boot and idles",
        hypervisor="KVM",
        format="QCOW2",
        os_type="Other Linux (64-bit)",
        url=template.as_uri(),
        size_bytes=24 * MIB,
        zone_id=zone.zone_id,
    ).id
    cluster_job = uuid.uuid4()
    cluster_id = cluster_id_for(cluster_job)
    queue = f"hypervisor-ha-{suffix}"
    config = parse_agent_config(
        {
            "agent": {"activity_threads": 8},
            "clusters": [
                {
                    "id": str(cluster_id),
                    "hypervisor": "KVM",
                    "task_queue": queue,
                    "libvirt": {"uri": daemons[0]},
                }
            ],
        }
    )
    uris = HostUris()
    driver = LibvirtKvmDriver(
        uris,
        domain_type="kvm" if kvm_usable() else "qemu",
        shutdown_timeout=0.5,
        call_timeout=60.0,
    )
    pool_name = f"stratus-ha-{suffix}"
    kvm = LibvirtCluster(
        replace(zone, template_id=template_id, network_id=network.id), cluster_id, uris
    )
    try:
        for index, uri in enumerate(daemons):
            flat_network(uri, str(network.id), f"sha{suffix}{index}")
        (worker,) = build_agent_workers(client, config, {str(cluster_id): driver})
        async with worker:
            await client.execute_workflow(
                "AddCluster",
                AddClusterRequest(
                    job_id=cluster_job,
                    cluster_id=cluster_id,
                    pod_id=zone.pod_id,
                    name=f"kvm-ha-{suffix}",
                    hypervisor="KVM",
                    cpu_overprovisioning=4.0,
                    agent_task_queue=queue,
                    power_sync_interval_seconds=3600,  # only the HA job acts in this test
                ),
                id=str(cluster_job),
                task_queue=harness.task_queue,
            )
            pool_job = uuid.uuid4()
            await client.execute_workflow(
                "AddStoragePool",
                AddStoragePoolRequest(
                    job_id=pool_job,
                    pool_id=pool_id_for(pool_job),
                    name=pool_name,
                    scope="CLUSTER",
                    cluster_id=cluster_id,
                    path=str(storage_dir / pool_name),
                    capacity_bytes=100 * GIB,
                ),
                id=str(pool_job),
                task_queue=harness.task_queue,
            )
            yield kvm
    finally:
        with contextlib.suppress(Exception):  # it may never have started
            await client.get_workflow_handle(power_state_sync_id(cluster_id)).terminate("over")
        driver.close()
        for uri in daemons:
            remove_everything(uri, kvm.vm_names, str(network.id), pool_name)
        shutil.rmtree(storage_dir / pool_name, ignore_errors=True)


async def test_an_ha_vm_of_a_fenced_kvm_host_restarts_on_another_libvirtd(
    temporal_client: Client,
    cloud: Cloud,
    libvirt_system_daemon: str,
    libvirt_second_daemon: SecondDaemon | str,
    shared_storage_dir: Path,
    qcow2_template: Path,
) -> None:
    if isinstance(libvirt_second_daemon, str):
        pytest.skip(f"no second libvirtd to restart the HA VM on: {libvirt_second_daemon}")
    uri_a, uri_b = libvirt_system_daemon, libvirt_second_daemon.uri
    async with (
        running_worker(temporal_client, cloud) as harness,
        libvirt_cluster(harness, shared_storage_dir, qcow2_template, [uri_a, uri_b]) as kvm,
    ):
        job_a, job_b = uuid.uuid4(), uuid.uuid4()
        kvm.uris.add(host_id_for(job_a), uri_a)
        kvm.uris.add(host_id_for(job_b), uri_b)
        host_a = await add_host(harness, kvm, job_a, "kvm-a", "127.0.0.1")
        # Both VMs on host A: it is the cluster's only host while they deploy.
        names = [f"ha-{uuid.uuid4().hex[:8]}", f"plain-{uuid.uuid4().hex[:8]}"]
        kvm.vm_names.extend(names)
        ha_vm = await running(harness, kvm.zone, names[0], offering_id=ha_offering(cloud))
        plain = await running(harness, kvm.zone, names[1])
        host_b = await add_host(harness, kvm, job_b, "kvm-b", "127.0.0.2")
        for vm_id in (ha_vm, plain):
            assert vm(cloud, vm_id).host_id == host_a
            assert (view(uri_a, vm_id), view(uri_b, vm_id)) == ("running", "absent")

        # Host A loses power: its guests die, its daemon no longer answers the driver.
        cut_power(uri_a, [ha_vm, plain])
        kvm.uris.cut_power(host_a)
        # The administrator, sure it is off, declares it fenced (HA on for it first).
        host_ha_operations.set_host_ha(cloud, host_a, True, datetime.now(UTC), "test/ha-on")
        job_id = uuid.uuid4()
        status, value = await declare(harness, kvm.zone, host_a, job_id)

        assert status == "succeeded", value
        assert value["restarted"] == [str(ha_vm)] and value["stopped"] == [str(plain)]
        assert cloud.load(Job, job_id).status is JobStatus.SUCCEEDED
        # The HA VM runs on B, by the books and by B's daemon, and nowhere else.
        restarted = vm(cloud, ha_vm)
        assert restarted.state is VmState.RUNNING and restarted.host_id == host_b
        assert view(uri_b, ha_vm) == "running"
        assert view(uri_a, ha_vm) != "running"
        # The plain VM stays Stopped, running nowhere; host A holds no room.
        assert vm(cloud, plain).state is VmState.STOPPED
        assert view(uri_a, plain) != "running" and view(uri_b, plain) == "absent"
        fenced = cloud.load(Host, host_a)
        assert fenced.ha_state is HaState.FENCED and fenced.reservations == {}
        assert list(cloud.load(Host, host_b).reservations) == [str(ha_vm)]
