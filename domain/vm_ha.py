"""VM HA on a healthy host: an HA-enabled VM that stops without anyone asking is restarted.

The power-state sync finds such a VM: its host answered the listing, without the VM running
there or anywhere else in the cluster, and no job was working on it. That is a crash (or a
shutdown from inside the guest), and CloudStack's HA restarts the VM, on the same host first:
its disks are reachable there and the host is evidently healthy. A start job does that, handed
to the VM's queue like any other, so it is visible, ordered after whatever the VM's owner asks
next, and planned as an HA restart (the VM's last host first, then any host that fits, `ha.tag`
hosts included). An alert records what happened.

A VM whose host stops answering is not this: its host is the host HA monitor's, which restarts
nothing before the host is fenced (domain/host_ha.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from domain.alert import AlertType, raise_alert
from domain.cloud import Decision
from domain.ids import derived_id
from domain.job_requests import JobQueue, VmJobSubmission, VmOperation, handed_over
from domain.virtual_machine import VirtualMachine
from domain.vm_requests import StartVmRequest


@dataclass(frozen=True)
class CrashedVm:
    """An HA-enabled VM the sync found stopped on a host that answered."""

    vm_id: UUID
    name: str
    account_id: UUID
    zone_id: UUID
    host_id: UUID
    host_name: str
    cluster_id: UUID


def crash_restart_job_id(sync_run_id: str, vm_id: UUID) -> UUID:
    """One restart per VM per sync pass: a retried pass hands the same job again."""
    return derived_id(sync_run_id, f"vm-ha/{vm_id}")


def record_crash(
    d: Decision,
    vm: VirtualMachine,
    host_name: str,
    cluster_id: UUID,
    at: datetime,
    sync_run_id: str,
) -> CrashedVm:
    """In the sync's decision that stopped the VM: the alert, and what the restart needs."""
    assert vm.last_host_id is not None
    crashed = CrashedVm(
        vm_id=vm.id,
        name=vm.name,
        account_id=vm.account_id,
        zone_id=vm.zone_id,
        host_id=vm.last_host_id,
        host_name=host_name,
        cluster_id=cluster_id,
    )
    raise_alert(
        d,
        AlertType.USERVM,
        f"HA: VM {vm.name} stopped on host {host_name} without a stop job",
        f"the power-state sync found it off on a host that answers; HA restarts it, on "
        f"{host_name} first (job {crash_restart_job_id(sync_run_id, vm.id)})",
        resource_type="VirtualMachine",
        resource_id=vm.id,
        zone_id=vm.zone_id,
        cluster_id=cluster_id,
        at=at,
        command_id=f"{sync_run_id}/{vm.id}/crashed",
    )
    return crashed


def ha_restart(
    job_id: UUID,
    vm_id: UUID,
    name: str,
    account_id: UUID,
    zone_id: UUID,
    *,
    why: str,
    asked_by: str,
    fingerprint: str,
) -> tuple[JobQueue, VmJobSubmission]:
    """An HA restart: a start job planned as one (the last host first, `ha` hosts too), for
    the VM's queue, saying why and who asked."""
    request = StartVmRequest(
        job_id=job_id,
        vm_id=vm_id,
        account_id=account_id,
        summary=f"Restart VM {name} (HA): {why}",
        ha_restart=True,
    )
    return handed_over(
        request,
        VmOperation.START.job_type,
        zone_id,
        [
            f"**VM:** {name} (`{vm_id}`) (HA)",
            f"**Operation:** restart: {why}",
            f"**Asked by:** {asked_by}",
        ],
        fingerprint,
    )


def crash_restart_of(sync_run_id: str, vm: CrashedVm) -> tuple[JobQueue, VmJobSubmission]:
    """The start job that brings the VM back, and the VM's queue."""
    return ha_restart(
        crash_restart_job_id(sync_run_id, vm.vm_id),
        vm.vm_id,
        vm.name,
        vm.account_id,
        vm.zone_id,
        why=f"it stopped on host {vm.host_name} without a stop job",
        asked_by=f"power-state sync `{sync_run_id}`",
        fingerprint=f"vm-ha/{sync_run_id}",
    )
