"""Decisions shared by the VM's jobs (operations and VM snapshots): a VM's stop recorded, and a
VM job's success with what the VM now is."""

from __future__ import annotations

from typing import TypedDict
from uuid import UUID

from domain.cloud import Decision
from domain.host import Host
from domain.job_results import VmJobResult, succeed_with
from domain.virtual_machine import VirtualMachine, VmEvent


def record_stopped(d: Decision, job_id: UUID, vm: VirtualMachine) -> None:
    """Stopping -> Stopped, and the host's capacity given back (a stopped VM holds none)."""
    host_id = vm.host_id
    vm.transition(VmEvent.OPERATION_SUCCEEDED, f"{job_id}/stopped")
    if host_id is not None:
        d.get(Host, host_id).release_capacity(vm.id, f"{job_id}/release-stopped")


class VmFacts(TypedDict):
    """What every VM job's result says of the VM (`VmJobResult`'s fields)."""

    virtual_machine_id: UUID
    state: str
    host_id: UUID | None
    ip_address: str | None


def vm_facts(vm: VirtualMachine) -> VmFacts:
    """The VM's state, host and IP, for a VM job's result (and what the operation adds)."""
    return VmFacts(
        virtual_machine_id=vm.id,
        state=vm.state.value,
        host_id=vm.host_id,
        ip_address=vm.ip_address,
    )


def succeed_with_vm(d: Decision, job_id: UUID, vm: VirtualMachine) -> VmJobResult:
    """The job succeeds with the VM's state, host and IP."""
    return succeed_with(d, job_id, VmJobResult(**vm_facts(vm)))
