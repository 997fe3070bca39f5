"""Power-state reconciliation: what the hypervisors report against what the domain believes.

Each pass of a cluster's sync hands over, per reachable host, the VMs the hypervisor has there
and their power state. The domain then follows the hypervisor, as CloudStack's power-state
sync does:

- a Running VM found powered off, or found nowhere in the cluster: `FollowAgentPowerOffReport`
  → Stopped, and its host capacity released;
- a Stopped VM found running: `FollowAgentPowerOnReport` → Running on that host, its capacity
  reserved there even when that overcommits the host (reality wins; the reason says so);
- a VM in a transitional state (Starting, Stopping, Migrating) longer than the grace period
  with no job working on it follows the report the same way, so nothing stays transitional
  for ever (Stopping/Migrating found running use `AgentReportRunning`).

What the pass must not do is act on a report older than the VM's last change: the listing is
taken first and compared afterwards, and a job may have moved the VM in between. A VM whose
last change is not older than the listing (minus a clock-skew margin) is left for the next
pass. Hosts that could not be listed are skipped entirely: a VM is never taken for gone
because its host did not answer.

Every change carries a command id built from the sync run and the VM
(`<run id>/<vm id>/<what>`), so a pass that is retried records nothing twice; a later pass
finds the domain already agreeing and records nothing at all.

Whether a job is working on a VM is a pluggable question (`JobInProgress`). The default,
`JobRecords`, reads only domain data: the job whose command last changed the VM (command ids
start with the job id) and the job that created it, and says "busy" while such a job's record
is not final. Per-VM operation queues (an entity workflow `vm/<vm id>` per VM) can supply a
sharper answer by implementing the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from domain.cloud import Cloud, Decision
from domain.cluster import Cluster
from domain.host import Host
from domain.job import Job
from domain.virtual_machine import VirtualMachine, VmEvent, VmState
from domain.vm_ha import CrashedVm, record_crash

POWERED_ON = "PowerOn"
POWERED_OFF = "PowerOff"


class Observation(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class HostReport:
    """One host's listing: vm id → power state ("PowerOn", "PowerOff", "PowerUnknown")."""

    host_id: UUID
    vms: Mapping[str, str]


@dataclass(frozen=True)
class PowerChange:
    vm_id: UUID
    vm_name: str
    vm_event: str
    old_state: str
    new_state: str
    host_id: UUID | None
    reason: str


@dataclass
class SyncOutcome:
    changes: list[PowerChange] = field(default_factory=list)
    #: VMs left alone this pass, with why (a job works on them, the report is stale, ...).
    skipped: dict[str, str] = field(default_factory=dict)
    unmanaged: list[str] = field(default_factory=list)
    #: HA-enabled VMs found stopped that were Running: VM HA restarts them (domain/vm_ha.py).
    crashed: list[CrashedVm] = field(default_factory=list)

    def summary(self) -> str:
        if not self.changes:
            return "the domain agrees with the hypervisors"
        return "; ".join(
            f"{c.vm_name}: {c.old_state} → {c.new_state} ({c.vm_event})" for c in self.changes
        )


class JobInProgress(Protocol):
    """Answers whether a job is still working on a VM (so the sync must leave it alone)."""

    def job_working_on(self, vm: VirtualMachine) -> UUID | None: ...


class JobRecords:
    """From domain data only: the job that last changed the VM, or created it, is not final."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    def job_working_on(self, vm: VirtualMachine) -> UUID | None:
        candidates: list[UUID] = []
        last = last_job_of(vm)
        if last is not None:
            candidates.append(last)
        candidates.append(vm.created_by_job)
        for job_id in candidates:
            job = self.cloud.find(Job, job_id)
            if job is not None and not job.status.is_final:
                return job_id
        return None


def last_job_of(vm: VirtualMachine) -> UUID | None:
    """The job whose command last changed the VM: command ids are `<job id>/<step>`."""
    for command_id in reversed(vm.__dict__.get("applied_commands", [])):
        head = str(command_id).split("/", 1)[0]
        try:
            return UUID(head)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class SyncPolicy:
    grace: timedelta = timedelta(minutes=10)
    clock_skew: timedelta = timedelta(seconds=2)


def reconcile_cluster(
    cloud: Cloud,
    cluster_id: UUID,
    run_id: str,
    reports: Iterable[HostReport],
    listed_at: datetime,
    now: datetime,
    *,
    policy: SyncPolicy = SyncPolicy(),
    jobs: JobInProgress | None = None,
) -> SyncOutcome:
    """Compare a pass's reports with the domain and record what the hypervisors say."""
    jobs = jobs or JobRecords(cloud)
    cluster = cloud.load(Cluster, cluster_id)
    cluster_hosts = set(cluster.host_ids)
    reachable = {r.host_id: r for r in reports if r.host_id in cluster_hosts}
    outcome = SyncOutcome()

    # Where each VM is seen running, and which VMs are reported at all.
    seen_on: dict[str, UUID] = {}
    reported: set[str] = set()
    for host_id, report in reachable.items():
        for vm_key, power in report.vms.items():
            reported.add(vm_key)
            if power == POWERED_ON:
                seen_on.setdefault(vm_key, host_id)

    # The VMs the domain places on the reachable hosts (they hold capacity there) ...
    candidates: dict[UUID, UUID | None] = {}
    for host_id in reachable:
        for vm_key in cloud.load(Host, host_id).reservations:
            candidates[UUID(vm_key)] = host_id
    # ... and those the hypervisors report.
    for vm_key in sorted(reported):
        vm_id = _uuid(vm_key)
        if vm_id is None or cloud.find(VirtualMachine, vm_id) is None:
            if vm_key in seen_on:
                outcome.unmanaged.append(vm_key)
            continue
        candidates.setdefault(vm_id, None)

    for vm_id, held_on in candidates.items():
        vm = cloud.load(VirtualMachine, vm_id)
        on_host = seen_on.get(str(vm_id))
        if on_host is not None:
            observation = Observation.ON
        elif held_on is not None or str(vm_id) in reported:
            # Its host answered without it running there, and no other host runs it.
            observation = Observation.OFF
        else:
            observation = Observation.UNKNOWN
        _reconcile_vm(
            cloud, cluster, vm, observation, on_host, run_id, listed_at, now, policy, jobs, outcome
        )
    return outcome


def _reconcile_vm(
    cloud: Cloud,
    cluster: Cluster,
    vm: VirtualMachine,
    observation: Observation,
    on_host: UUID | None,
    run_id: str,
    listed_at: datetime,
    now: datetime,
    policy: SyncPolicy,
    jobs: JobInProgress,
    outcome: SyncOutcome,
) -> None:
    key = str(vm.id)
    if observation is Observation.UNKNOWN or vm.is_removed:
        return
    if _crash_recorded_by(run_id, vm):
        # This pass stopped it already (a retried reconcile): its restart is still owed.
        outcome.crashed.append(_record_crash_again(cloud, cluster, vm, now, run_id))
        return
    if vm.modified_on > listed_at - policy.clock_skew:
        outcome.skipped[key] = "changed after the hypervisors were listed; next pass"
        return
    state = vm.state
    vm_event: VmEvent | None = None
    if state is VmState.RUNNING and observation is Observation.OFF:
        vm_event = VmEvent.FOLLOW_AGENT_POWER_OFF_REPORT
    elif state is VmState.STOPPED and observation is Observation.ON:
        vm_event = VmEvent.FOLLOW_AGENT_POWER_ON_REPORT
    elif state in (VmState.STARTING, VmState.STOPPING, VmState.MIGRATING):
        stuck_for = now - vm.modified_on
        if stuck_for < policy.grace:
            outcome.skipped[key] = f"{state} for {stuck_for.total_seconds():.0f} s, within grace"
            return
        working = jobs.job_working_on(vm)
        if working is not None:
            outcome.skipped[key] = f"{state}: job {working} is working on it"
            return
        if observation is Observation.OFF:
            vm_event = VmEvent.FOLLOW_AGENT_POWER_OFF_REPORT
        elif state is VmState.STARTING:
            vm_event = VmEvent.FOLLOW_AGENT_POWER_ON_REPORT
        else:
            vm_event = VmEvent.AGENT_REPORT_RUNNING
    if vm_event is None:
        return
    _record(cloud, cluster, vm.id, state, vm_event, on_host, run_id, now, outcome)


def _record(
    cloud: Cloud,
    cluster: Cluster,
    vm_id: UUID,
    expected: VmState,
    vm_event: VmEvent,
    on_host: UUID | None,
    run_id: str,
    now: datetime,
    outcome: SyncOutcome,
) -> None:
    command = f"{run_id}/{vm_id}"
    powered_on = vm_event is not VmEvent.FOLLOW_AGENT_POWER_OFF_REPORT

    def decide(d: Decision) -> tuple[PowerChange, CrashedVm | None] | None:
        vm = d.get(VirtualMachine, vm_id)
        if vm.state is not expected:
            return None  # a job moved it since the comparison: the next pass looks again
        old_state = vm.state.value
        ran_on = vm.host_id
        host_name = d.get(Host, on_host).name if on_host is not None else None
        if powered_on:
            assert on_host is not None
            overcommits = _hold_capacity(d, cluster, vm, on_host, f"{command}/reserve")
            reason = f"found running on host {host_name} outside Stratus (power-state sync)"
            if overcommits:
                reason += (
                    "; its capacity is reserved there although that overcommits the host: "
                    "reality wins"
                )
        else:
            reason = "found powered off or gone on its hypervisor (power-state sync)"
        for host_id in cluster.host_ids:
            if host_id != (on_host if powered_on else None):
                d.get(Host, host_id).release_capacity(vm.id, f"{command}/release/{host_id}")
        applied = vm.transition(
            vm_event, f"{command}/{vm_event.value}", host_id=on_host, reason=reason
        )
        if not applied:
            return None
        crashed = None
        if (
            vm.ha_enabled
            and expected is VmState.RUNNING
            and vm.state is VmState.STOPPED
            and ran_on is not None
        ):
            crashed = record_crash(d, vm, d.get(Host, ran_on).name, cluster.id, now, run_id)
        change = PowerChange(
            vm_id=vm.id,
            vm_name=vm.name,
            vm_event=vm_event.value,
            old_state=old_state,
            new_state=vm.state.value,
            host_id=on_host,
            reason=reason,
        )
        return change, crashed

    decided = cloud.decide(decide)
    if decided is not None:
        change, crashed = decided
        outcome.changes.append(change)
        if crashed is not None:
            outcome.crashed.append(crashed)


def _power_off_command(run_id: str, vm_id: UUID) -> str:
    return f"{run_id}/{vm_id}/{VmEvent.FOLLOW_AGENT_POWER_OFF_REPORT.value}"


def _crash_recorded_by(run_id: str, vm: VirtualMachine) -> bool:
    return (
        vm.ha_enabled
        and vm.state is VmState.STOPPED
        and vm.last_host_id is not None
        and vm.has_applied(_power_off_command(run_id, vm.id))
    )


def _record_crash_again(
    cloud: Cloud, cluster: Cluster, vm: VirtualMachine, now: datetime, run_id: str
) -> CrashedVm:
    """The crash as the first attempt recorded it (its alert is found, not raised again)."""
    assert vm.last_host_id is not None
    host_name = cloud.load(Host, vm.last_host_id).name
    return cloud.decide(lambda d: record_crash(d, vm, host_name, cluster.id, now, run_id))


def _hold_capacity(
    d: Decision, cluster: Cluster, vm: VirtualMachine, host_id: UUID, command_id: str
) -> bool:
    """Reserve the VM's room on the host it runs on, whatever the overprovisioning factors say.

    Returns whether the host is now committed beyond what the planner would allow.
    """
    host = d.get(Host, host_id)
    if host.reservation_for(vm.id) is not None:
        return False
    overcommits = not host.fits(
        vm.cpu_mhz, vm.memory_mib, cluster.cpu_overprovisioning, cluster.memory_overprovisioning
    )
    if not host.can_take_deployments():
        overcommits = True  # maintenance, down or an occupied machine, yet the VM runs there
    host.record_reported_usage(vm.id, vm.cpu_mhz, vm.memory_mib, command_id)
    return overcommits


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None
