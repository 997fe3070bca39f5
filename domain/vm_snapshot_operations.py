"""VM snapshots as the domain sees them: create, revert to, delete. Each a job in the VM's queue
(so a snapshot never races a stop or a migration of its VM), each step a decision over the event
store, idempotent by a command id built from the job id.

CloudStack's rules: a snapshot is taken of a Running VM (a disk-only snapshot of a Stopped VM
needs a host to take it, which a stopped VM does not hold here, so it is refused with 431);
reverting to a snapshot with memory leaves the VM Running, to a disk-only one leaves it Stopped
(through Stopping, as a stop does: the host's capacity is given back).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from domain.cloud import Cloud, Decision
from domain.errors import IllegalStateTransition, NotFound
from domain.job import Job
from domain.job_results import VmSnapshotJobResult, VmSnapshotTaken, succeed_with
from domain.virtual_machine import VirtualMachine, VmEvent, VmState
from domain.vm_lifecycle import record_stopped, vm_facts
from domain.vm_requests import SnapshotVmRequest, VmSnapshotJobRequest
from domain.vm_snapshot import (
    IN_PROGRESS,
    VM_SNAPSHOT_STATE_MACHINE,
    VmSnapshot,
    VmSnapshotEvent,
    VmSnapshotIndex,
    VmSnapshotState,
    vm_snapshot_index_id_for,
)

_E = VmSnapshotEvent
_S = VmSnapshotState


@dataclass(frozen=True)
class SnapshotPlace:
    """Where the hypervisor holds the snapshot, and whether it captured memory."""

    host_id: UUID
    memory: bool


def _snapshot_of(d: Decision, vm_id: UUID, snapshot_id: UUID) -> VmSnapshot:
    snapshot = d.find(VmSnapshot, snapshot_id)
    if snapshot is None or snapshot.vm_id != vm_id:
        raise NotFound(
            f"virtual machine {vm_id} has no snapshot {snapshot_id}", field="snapshot_id"
        )
    return snapshot


def _running_host(vm: VirtualMachine) -> UUID:
    if vm.state is not VmState.RUNNING or vm.host_id is None:
        raise IllegalStateTransition(
            f"virtual machine {vm.name} must be Running for this (it is {vm.state})"
        )
    return vm.host_id


def begin_create(cloud: Cloud, request: SnapshotVmRequest) -> SnapshotPlace:
    """The snapshot allocated under its derived id and Creating, on the VM's host."""
    job_id, snapshot_id = request.job_id, request.snapshot_id

    def decide(d: Decision) -> SnapshotPlace:
        vm = d.get(VirtualMachine, request.vm_id)
        host_id = _running_host(vm)
        snapshot = d.find(VmSnapshot, snapshot_id)
        if snapshot is None:
            snapshot = d.add(
                VmSnapshot.create_with_id(
                    snapshot_id,
                    vm_id=vm.id,
                    name=request.snapshot_name or f"{vm.name}-snapshot",
                    account_id=vm.account_id,
                    zone_id=vm.zone_id,
                    memory_requested=request.memory,
                    job_id=job_id,
                )
            )
        index_id = vm_snapshot_index_id_for(vm.id)
        index = d.find(VmSnapshotIndex, index_id) or d.add(
            VmSnapshotIndex.create_with_id(index_id, vm_id=vm.id)
        )
        index.add(snapshot_id, f"{job_id}/snapshot-indexed")
        snapshot.transition(_E.CREATE_REQUESTED, f"{job_id}/snapshot-create-requested")
        d.get(Job, job_id).enter_step(
            f"creating snapshot {snapshot.name}", f"{job_id}/snapshot-creating-step"
        )
        return SnapshotPlace(host_id=host_id, memory=request.memory)

    return cloud.decide(decide)


def complete_create(
    cloud: Cloud, job_id: UUID, vm_id: UUID, snapshot_id: UUID, memory: bool
) -> VmSnapshotTaken:
    def decide(d: Decision) -> VmSnapshotTaken:
        snapshot = _snapshot_of(d, vm_id, snapshot_id)
        snapshot.record_created(memory, f"{job_id}/snapshot-created")
        vm = d.get(VirtualMachine, vm_id)
        taken = VmSnapshotTaken(**vm_facts(vm), vm_snapshot_id=snapshot_id, memory=snapshot.memory)
        return succeed_with(d, job_id, taken)

    return cloud.decide(decide)


def begin_revert(cloud: Cloud, job_id: UUID, vm_id: UUID, snapshot_id: UUID) -> SnapshotPlace:
    """Ready -> Reverting; for a disk-only snapshot the VM also goes Running -> Stopping, since
    the revert leaves it powered off."""

    def decide(d: Decision) -> SnapshotPlace:
        vm = d.get(VirtualMachine, vm_id)
        snapshot = _snapshot_of(d, vm_id, snapshot_id)
        if not snapshot.has_applied(f"{job_id}/revert-requested"):
            host_id = _running_host(vm)
        elif vm.host_id is not None:
            host_id = vm.host_id
        else:  # a repeat after the revert was recorded: nothing left to do on a host
            raise IllegalStateTransition(f"virtual machine {vm.name} is on no host")
        snapshot.transition(_E.REVERT_REQUESTED, f"{job_id}/revert-requested")
        if not snapshot.memory:
            vm.transition(VmEvent.STOP_REQUESTED, f"{job_id}/stop-requested")
        d.get(Job, job_id).enter_step(
            f"reverting to snapshot {snapshot.name}", f"{job_id}/reverting-step"
        )
        return SnapshotPlace(host_id=host_id, memory=snapshot.memory)

    return cloud.decide(decide)


def complete_revert(
    cloud: Cloud, job_id: UUID, vm_id: UUID, snapshot_id: UUID
) -> VmSnapshotJobResult:
    def decide(d: Decision) -> VmSnapshotJobResult:
        snapshot = _snapshot_of(d, vm_id, snapshot_id)
        snapshot.transition(_E.OPERATION_SUCCEEDED, f"{job_id}/reverted")
        vm = d.get(VirtualMachine, vm_id)
        if vm.state is VmState.STOPPING:
            record_stopped(d, job_id, vm)
        return succeed_with(
            d, job_id, VmSnapshotJobResult(**vm_facts(vm), vm_snapshot_id=snapshot_id)
        )

    return cloud.decide(decide)


def begin_delete(cloud: Cloud, job_id: UUID, vm_id: UUID, snapshot_id: UUID) -> SnapshotPlace:
    """Ready or Error -> Expunging, on the host the VM runs on (or last ran on, if stopped)."""

    def decide(d: Decision) -> SnapshotPlace:
        vm = d.get(VirtualMachine, vm_id)
        snapshot = _snapshot_of(d, vm_id, snapshot_id)
        host_id = vm.host_id or vm.last_host_id
        if host_id is None:
            raise IllegalStateTransition(f"virtual machine {vm.name} has never run on a host")
        snapshot.transition(_E.EXPUNGE_REQUESTED, f"{job_id}/expunge-requested")
        d.get(Job, job_id).enter_step(
            f"deleting snapshot {snapshot.name}", f"{job_id}/deleting-step"
        )
        return SnapshotPlace(host_id=host_id, memory=snapshot.memory)

    return cloud.decide(decide)


def complete_delete(
    cloud: Cloud, job_id: UUID, vm_id: UUID, snapshot_id: UUID
) -> VmSnapshotJobResult:
    def decide(d: Decision) -> VmSnapshotJobResult:
        snapshot = _snapshot_of(d, vm_id, snapshot_id)
        snapshot.transition(_E.OPERATION_SUCCEEDED, f"{job_id}/removed")
        vm = d.get(VirtualMachine, vm_id)
        return succeed_with(
            d, job_id, VmSnapshotJobResult(**vm_facts(vm), vm_snapshot_id=snapshot_id)
        )

    return cloud.decide(decide)


def record_failed(d: Decision, request: VmSnapshotJobRequest, reason: str) -> None:
    """Part of a snapshot job's failure record: the snapshot its job left in progress moves on
    as CloudStack's machine says (Creating/Expunging -> Error, Reverting -> Ready)."""
    snapshot = d.find(VmSnapshot, request.snapshot_id)
    if snapshot is not None and snapshot.state in IN_PROGRESS:
        snapshot.transition(_E.OPERATION_FAILED, f"{request.job_id}/snapshot-failed", reason=reason)


def remove_snapshots_of(d: Decision, vm_id: UUID, job_id: UUID) -> list[UUID]:
    """Part of an expunge's last write: every snapshot of the VM ends Removed (VM_SNAPSHOT
    usage closes), as CloudStack deletes a VM's snapshots when it expunges the VM. One left in
    progress by a job that never recorded its failure fails first. Idempotent by command id."""
    index = d.find(VmSnapshotIndex, vm_snapshot_index_id_for(vm_id))
    if index is None:
        return []
    removed: list[UUID] = []
    for snapshot_id in index.snapshot_ids:
        snapshot = d.find(VmSnapshot, snapshot_id)
        if snapshot is None:
            continue
        prefix = f"{job_id}/vm-snapshot/{snapshot_id}"
        for snapshot_event, step in (
            (_E.OPERATION_FAILED, "failed"),
            (_E.EXPUNGE_REQUESTED, "expunging"),
            (_E.OPERATION_SUCCEEDED, "removed"),
        ):
            if snapshot.state is VmSnapshotState.REMOVED:
                break
            if snapshot_event is _E.OPERATION_FAILED and snapshot.state not in IN_PROGRESS:
                continue
            if snapshot_event is _E.OPERATION_FAILED and snapshot.state is _S.EXPUNGING:
                continue
            if snapshot_event is _E.EXPUNGE_REQUESTED and snapshot.state is _S.EXPUNGING:
                continue
            if VM_SNAPSHOT_STATE_MACHINE.allows(snapshot.state, snapshot_event):
                snapshot.transition(
                    snapshot_event, f"{prefix}/{step}", reason="its virtual machine was expunged"
                )
        if snapshot.state is VmSnapshotState.REMOVED:
            removed.append(snapshot_id)
    return removed
