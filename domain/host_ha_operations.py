"""Host HA over the event store: the settings of a cluster, HA switched on and off per host,
each observation of the cluster's monitor recorded on the host (domain/host_ha.py decides the
state), and what a fenced host's VMs become.

Every write carries a command id from the monitor's pass (`ha/<cluster>/<pass>/<host>/<what>`),
so a retried step records nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid5

from pydantic import BaseModel, ValidationError

from domain import host_ha, job_records
from domain.alert import AlertType, raise_alert
from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.errors import IllegalStateTransition, InvalidParameter, NotFound
from domain.host import Host, ResourceState
from domain.host_ha import HaAction, HaSettings, HaState, HaStatus
from domain.job_requests import JobQueue, VmJobSubmission
from domain.virtual_machine import VirtualMachine, VmEvent, VmState
from domain.vm_ha import ha_restart


def _host(d: Decision, host_id: UUID) -> Host:
    host = d.find(Host, host_id)
    if host is None:
        raise NotFound(f"no host with id {host_id}", field="host_id")
    return host


def can_fence(host: Host) -> bool:
    """Fencing needs a BMC Stratus may power off."""
    return host.oobm_enabled and host.oobm_address is not None


def configure_cluster(
    cloud: Cloud, cluster_id: UUID, settings: HaSettings, command_id: str
) -> Cluster:
    def decide(d: Decision) -> Cluster:
        cluster = d.find(Cluster, cluster_id)
        if cluster is None:
            raise NotFound(f"no cluster with id {cluster_id}", field="cluster_id")
        cluster.configure_ha(settings, command_id)
        return cluster

    return cloud.decide(decide)


def set_host_ha(cloud: Cloud, host_id: UUID, enabled: bool, now: datetime, command_id: str) -> Host:
    """HA on: the host is Available (Ineligible without a BMC to fence it). Off: Disabled,
    wherever it was (a fence under way is the monitor's to finish; it asks the host first),
    except a host already Fenced either way: it is off, and its HA VMs still to restart stay
    named on it until they are."""

    def decide(d: Decision) -> Host:
        host = _host(d, host_id)
        if enabled == host.ha_enabled:
            return host
        if host.ha_state is HaState.FENCED:
            status = host.ha  # off whatever HA says; a healthy check brings it back
        elif not enabled:
            status = host.ha.to(HaState.DISABLED, now, "HA disabled by an administrator")
        elif can_fence(host):
            status = host.ha.to(HaState.AVAILABLE, now, "HA enabled")
        else:
            status = host.ha.to(
                HaState.INELIGIBLE, now, "HA enabled, but no out-of-band management to fence with"
            )
        host.change_ha(enabled, status, command_id)
        return host

    return cloud.decide(decide)


@dataclass(frozen=True)
class WatchedHost:
    host_id: UUID
    name: str
    status: HaStatus


def watched_hosts(cloud: Cloud, cluster_id: UUID) -> tuple[HaSettings, list[WatchedHost]]:
    """The cluster's settings and its HA-enabled hosts that are in service (a host in
    maintenance is not watched: its absence is intended)."""
    cluster = cloud.load(Cluster, cluster_id)
    watched = []
    for host_id in cluster.host_ids:
        host = cloud.load(Host, host_id)
        if host.ha_enabled and host.resource_state in (
            ResourceState.ENABLED,
            ResourceState.DISABLED,
        ):
            watched.append(WatchedHost(host.id, host.name, host.ha))
    return cluster.ha, watched


def _observe(
    cloud: Cloud,
    host_id: UUID,
    now: datetime,
    command_id: str,
    change: Callable[[Host, HaSettings, bool], HaStatus],
    alert: Callable[[Decision, Host, HaStatus], None] | None = None,
) -> HaAction:
    """Record an observation; `alert` sees the host after it, and its status before."""

    def decide(d: Decision) -> HaAction:
        host = _host(d, host_id)
        settings = d.get(Cluster, host.cluster_id).ha
        if not host.ha_enabled:
            return HaAction.NONE
        before = host.ha
        status = change(host, settings, can_fence(host))
        if host.change_ha(True, status, command_id) and alert is not None:
            alert(d, host, before)
        return host_ha.next_action(host.ha, now, settings)

    return cloud.decide(decide)


def observe_health(
    cloud: Cloud, host_id: UUID, healthy: bool, now: datetime, command_id: str
) -> HaAction:
    return _observe(
        cloud,
        host_id,
        now,
        command_id,
        lambda host, settings, fence: host_ha.after_health(
            host.ha, healthy, now, settings, fence, holds_vms=bool(host.reservations)
        ),
    )


def observe_activity(
    cloud: Cloud, host_id: UUID, active: bool, now: datetime, command_id: str
) -> HaAction:
    return _observe(
        cloud,
        host_id,
        now,
        command_id,
        lambda host, settings, fence: host_ha.after_activity(host.ha, active, now, settings, fence),
    )


def record_recovery_sent(cloud: Cloud, host_id: UUID, now: datetime, command_id: str) -> None:
    _observe(
        cloud, host_id, now, command_id, lambda host, _s, _f: host_ha.recovery_sent(host.ha, now)
    )


def record_fence(
    cloud: Cloud, host_id: UUID, confirmed: bool, why: str, now: datetime, command_id: str
) -> HaAction:
    """A fence attempt's outcome; RESTART_VMS once the host is Fenced. Either way an alert
    says so: a fence not confirmed needs an operator (the host may still run its VMs)."""

    def alert(d: Decision, host: Host, before: HaStatus) -> None:
        if host.ha_state is HaState.FENCED and before.state is not HaState.FENCED:
            subject = f"HA: host {host.name} fenced"
            text = f"{why}; its HA-enabled VMs are restarted on other hosts"
        elif not confirmed and host.ha_state is HaState.FENCING:
            retry = host.ha.next_fence_at
            subject = f"HA: fencing host {host.name} was not confirmed"
            text = (
                f"attempt {host.ha.fence_attempts}: {why or 'no answer from the BMC'}; no VM is "
                "restarted until the host is fenced"
                + (f"; next attempt at {retry.isoformat()}" if retry else "")
                + "; an administrator who has made sure it is off may declare it fenced"
            )
        else:
            return
        _raise_host_alert(d, host, subject, text, now, command_id)

    action = _observe(
        cloud,
        host_id,
        now,
        command_id,
        lambda host, settings, _f: host_ha.after_fence(
            host.ha, confirmed, now, why, settings.fence_timeout
        ),
        alert,
    )
    fenced = cloud.load(Host, host_id).ha_state is HaState.FENCED
    return HaAction.RESTART_VMS if fenced and confirmed else action


def declare_fenced(cloud: Cloud, host_id: UUID, by: str, now: datetime, command_id: str) -> Host:
    """An administrator's word that the host is off (the BMC could not confirm it): Fenced,
    and its VMs may be restarted elsewhere. A host fenced already stays as it is (declaring it
    again re-runs the restart of whatever it still holds, after an HA job that failed)."""

    def decide(d: Decision) -> Host:
        host = _host(d, host_id)
        if host.has_applied(command_id):
            return host
        if not host.ha_enabled:
            raise IllegalStateTransition(
                f"host {host.name} does not have HA enabled", field="host_id"
            )
        if host.ha_state is HaState.FENCED:
            return host
        host.change_ha(True, host_ha.declared_fenced(host.ha, now, by), command_id)
        _raise_host_alert(
            d,
            host,
            f"HA: host {host.name} declared fenced by {by}",
            "an administrator declared the host off; its HA-enabled VMs are restarted on other "
            "hosts",
            now,
            command_id,
        )
        return host

    return cloud.decide(decide)


def _raise_host_alert(
    d: Decision, host: Host, subject: str, text: str, now: datetime, command_id: str
) -> None:
    raise_alert(
        d,
        AlertType.HA_ACTION,
        subject,
        text,
        resource_type="Host",
        resource_id=host.id,
        zone_id=host.zone_id,
        cluster_id=host.cluster_id,
        at=now,
        command_id=command_id,
    )


# -- the VMs of a fenced host ------------------------------------------------------------------
@dataclass(frozen=True)
class VmToRestart:
    vm_id: UUID
    name: str
    account_id: UUID
    zone_id: UUID
    ha_enabled: bool


def restart_job_id(ha_job_id: UUID, vm_id: UUID) -> UUID:
    return uuid5(ha_job_id, f"ha-restart/{vm_id}")


def _check_fenced(host: Host) -> None:
    if host.ha_state is not HaState.FENCED:
        raise IllegalStateTransition(
            f"host {host.name} is {host.ha_state}, not Fenced: its VMs may still run",
            field="host_id",
        )


def vms_of_fenced_host(cloud: Cloud, host_id: UUID) -> list[VmToRestart]:
    """The VMs that held room on the fenced host (HA-enabled first), read before any of them
    is stopped, so a retried step answers the same. A VM some job is moving (Starting,
    Stopping, Migrating) is left to that job, which fails on the dead host and unwinds."""
    host = cloud.load(Host, host_id)
    _check_fenced(host)
    found = []
    for vm_id in host.reservations:
        vm = cloud.find(VirtualMachine, UUID(vm_id))
        if vm is not None and vm.state in (VmState.RUNNING, VmState.STOPPED):
            found.append(VmToRestart(vm.id, vm.name, vm.account_id, vm.zone_id, vm.ha_enabled))
    for vm_id in host.ha.pending_restarts:
        vm = cloud.find(VirtualMachine, UUID(vm_id))
        if vm is None or vm_id in host.reservations:
            continue
        if vm.state is VmState.STOPPED and vm.last_host_id == host.id:
            found.append(VmToRestart(vm.id, vm.name, vm.account_id, vm.zone_id, True))
    return sorted(found, key=lambda v: (not v.ha_enabled, v.name, str(v.vm_id)))


def stop_vms_of_fenced_host(cloud: Cloud, job_id: UUID, host_id: UUID, vm_ids: list[UUID]) -> None:
    """The host is off: each of these VMs that ran there is Stopped and its room released, in
    one decision (each change once, by its command id)."""

    def decide(d: Decision) -> None:
        host = _host(d, host_id)  # found Fenced by begin_restart: these VMs died with it
        pending = set(host.ha.pending_restarts)
        for vm_id in vm_ids:
            vm = d.get(VirtualMachine, vm_id)
            if vm.state is VmState.RUNNING and vm.host_id == host.id:
                vm.transition(
                    VmEvent.AGENT_REPORT_STOPPED,
                    f"{job_id}/stopped/{vm.id}",
                    reason=f"its host {host.name} was fenced",
                )
            if vm.ha_enabled and vm.state is VmState.STOPPED:
                pending.add(str(vm.id))
            host.release_capacity(vm.id, f"{job_id}/release/{vm.id}")
        status = replace(host.ha, pending_restarts=tuple(sorted(pending)))
        host.change_ha(host.ha_enabled, status, f"{job_id}/pending-restarts")

    cloud.decide(decide)


def restart_of(
    ha_job_id: UUID, host_name: str, vm: VmToRestart
) -> tuple[JobQueue, VmJobSubmission]:
    """The start job (elsewhere: the fenced host takes no VM) for one VM, and its queue."""
    return ha_restart(
        restart_job_id(ha_job_id, vm.vm_id),
        vm.vm_id,
        vm.name,
        vm.account_id,
        vm.zone_id,
        why=f"its host {host_name} was fenced",
        asked_by=f"HA job `{ha_job_id}`",
        fingerprint=f"ha/{ha_job_id}",
    )


def check_settings(values: dict[str, object]) -> HaSettings:
    """The API's settings, or InvalidParameter naming the first that is wrong."""
    try:
        return HaSettings.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise InvalidParameter(first["msg"], field=where) from None


# -- the HA job's record -----------------------------------------------------------------------
#: The job type of one fenced host's HA job (its VMs' restarts are child jobs of their own).
RESTART_JOB = "RestartVmsOfFencedHost"


def _restart_ticket(
    job_id: UUID, account_id: UUID, host: Host | None, host_id: UUID, summary: str, at: datetime
) -> job_records.JobTicket:
    return job_records.JobTicket(
        job_id=job_id,
        job_type=RESTART_JOB,
        account_id=account_id,
        resource_type="Host",
        resource_id=host_id,
        zone_id=host.zone_id if host is not None else None,
        summary=summary,
        submitted_at=at,
    )


def begin_restart(
    cloud: Cloud, job_id: UUID, account_id: UUID, host_id: UUID, summary: str, at: datetime
) -> tuple[str, list[VmToRestart]]:
    """Record the HA job; answers the host's name and the VMs that ran on it."""

    def decide(d: Decision) -> str:
        host = _host(d, host_id)
        _check_fenced(host)
        job = job_records.open_job(
            d, _restart_ticket(job_id, account_id, host, host_id, summary, at)
        )
        job.enter_step("stopping the fenced host's VMs", f"{job_id}/began")
        return host.name

    name = cloud.decide(decide)
    return name, vms_of_fenced_host(cloud, host_id)


def complete_restart(
    cloud: Cloud,
    job_id: UUID,
    host_id: UUID,
    not_restarted: list[UUID],
    result: dict[str, object],
    now: datetime,
) -> dict[str, object]:
    """The HA job's outcome, with an alert for each HA VM its restart did not bring back (it
    stays Stopped, its restart job says why)."""

    def decide(d: Decision) -> dict[str, object]:
        host = _host(d, host_id)
        for vm_id in not_restarted:
            vm = d.find(VirtualMachine, vm_id)
            if vm is None:
                continue
            raise_alert(
                d,
                AlertType.USERVM,
                f"HA: VM {vm.name} was not restarted after host {host.name} was fenced",
                f"its restart job {restart_job_id(job_id, vm_id)} did not succeed; the VM is "
                f"{vm.state}: start it by hand once a host can take it",
                resource_type="VirtualMachine",
                resource_id=vm.id,
                zone_id=vm.zone_id,
                cluster_id=host.cluster_id,
                at=now,
                command_id=f"{job_id}/not-restarted/{vm_id}",
            )
        return job_records.succeed(d, job_id, dict(result))

    return cloud.decide(decide)


def fail_restart(
    cloud: Cloud,
    job_id: UUID,
    account_id: UUID,
    host_id: UUID,
    summary: str,
    at: datetime,
    code: int,
    text: str,
    cancelled: bool,
) -> None:
    ticket = _restart_ticket(job_id, account_id, cloud.find(Host, host_id), host_id, summary, at)
    cloud.decide(
        lambda d: job_records.end_unsuccessfully(d, ticket, code, text, cancelled=cancelled)
    )


# -- the monitor and the HA job, as the API starts them ----------------------------------------
MONITOR_WORKFLOW = "HostHaMonitor"
#: Signal that asks a cluster's monitor for a pass now (and keeps it from ending meanwhile).
CHECK_NOW_SIGNAL = "check_now"


def monitor_id(cluster_id: UUID | str) -> str:
    return f"host-ha/{cluster_id}"


class HostHaMonitorInput(BaseModel):
    """A cluster's host-HA monitor; `account_id` owns the jobs it starts (the administrator
    who turned HA on), `passes` carries over continue-as-new."""

    cluster_id: UUID
    account_id: UUID
    passes: int = 0
    passes_per_run: int = 200


class RestartVmsRequest(BaseModel):
    """The HA job of a fenced host: its VMs stopped in the books, the HA ones restarted."""

    job_id: UUID
    account_id: UUID
    host_id: UUID
    summary: str
    #: `declare-fenced`: the administrator who declared the host off (recorded first).
    declared_by: str | None = None


# -- configuration, as a short admin job -------------------------------------------------------
CONFIGURE_HA_JOB = "ConfigureHostHa"


class HaConfiguration(BaseModel):
    """HA switched on or off for a host, or a cluster's kvm.ha settings."""

    job_id: UUID
    account_id: UUID
    resource_type: Literal["Host", "Cluster"]
    resource_id: UUID
    enabled: bool | None = None
    settings: HaSettings | None = None
    summary: str


def host_ha_facts(host: Host) -> dict[str, Any]:
    status = host.ha
    return {
        "host_id": str(host.id),
        "name": host.name,
        "cluster_id": str(host.cluster_id),
        "ha_enabled": host.ha_enabled,
        "ha_state": status.state.value,
        "ha_reason": status.reason,
    }


def configure(cloud: Cloud, request: HaConfiguration, now: datetime) -> dict[str, Any]:
    command = f"{request.job_id}/ha"
    if request.resource_type == "Cluster":
        if request.settings is None:
            raise InvalidParameter("the cluster's HA settings are missing", field="settings")
        cluster = configure_cluster(cloud, request.resource_id, request.settings, command)
        return {
            "cluster_id": str(cluster.id),
            "name": cluster.name,
            "settings": cluster.ha.model_dump(),
        }
    if request.enabled is None:
        raise InvalidParameter("say whether HA is enabled", field="enabled")
    return host_ha_facts(set_host_ha(cloud, request.resource_id, request.enabled, now, command))
