"""VM snapshots on vSphere, named by their Stratus id.

The description says whether memory was captured, so a revert gives a running VM or a stopped
one as CloudStack's VM snapshots do. Stratus also takes short-lived disk-only VM snapshots of its
own, to copy a running VM's disk for a volume snapshot: they are marked so and never listed.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from activities.drivers.conventions import SNAPSHOT_DISK_MARK, SNAPSHOT_MEMORY_MARK
from activities.drivers.hypervisor import DriverError, HostRef, SnapshotInfo, VirtualMachineInfo
from activities.drivers.vsphere.connection import VSphereConnection, properties

#: The description of the VM snapshot that freezes a running VM's disk while it is copied.
VOLUME_SNAPSHOT_MARK = "stratus volume snapshot"
#: That VM snapshot is named this prefix and the volume snapshot's id.
VOLUME_SNAPSHOT_PREFIX = "stratus-volume-snapshot-"


def volume_snapshot_vm_snapshot_name(snapshot_id: str) -> str:
    """The name of the VM snapshot a live copy for the volume snapshot `snapshot_id` is made
    under: one per volume snapshot, so every attempt (and its clean-up) finds the same one."""
    return f"{VOLUME_SNAPSHOT_PREFIX}{snapshot_id}"


class VSphereSnapshots(VSphereConnection):
    """Taking, listing, reverting and deleting a VM's snapshots."""

    @staticmethod
    def _snapshots(vm: Any) -> list[Any]:
        found: list[Any] = []
        snapshot = properties(vm, vim.VirtualMachine, ["snapshot"]).get("snapshot")
        pending = list(snapshot.rootSnapshotList) if snapshot else []
        while pending:
            tree = pending.pop(0)
            found.append(tree)
            pending.extend(tree.childSnapshotList)
        return found

    def _snapshot_tree(self, vm: Any, snapshot_id: str) -> Any | None:
        return next((t for t in self._snapshots(vm) if t.name == snapshot_id), None)

    @staticmethod
    def _snapshot_info(tree: Any, vm_id: str) -> SnapshotInfo:
        return SnapshotInfo(tree.name, vm_id, tree.description == SNAPSHOT_MEMORY_MARK)

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        action = f"snapshot VM {vm_id} as {snapshot_id}"

        def call() -> SnapshotInfo:
            vm = self._vm(self._content(host), host, vm_id)
            tree = self._snapshot_tree(vm, snapshot_id)
            if tree is None:
                captured = memory and vm.runtime.powerState == "poweredOn"
                mark = SNAPSHOT_MEMORY_MARK if captured else SNAPSHOT_DISK_MARK
                task = vm.CreateSnapshot_Task(
                    name=snapshot_id, description=mark, memory=captured, quiesce=False
                )
                self._wait(task, action)
                tree = self._snapshot_tree(vm, snapshot_id)
            return self._snapshot_info(tree, vm_id)

        return self._call(action, call)  # type: ignore[no-any-return]

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        def call() -> list[SnapshotInfo]:
            vm = self._vm(self._content(host), host, vm_id)
            return [
                self._snapshot_info(tree, vm_id)
                for tree in self._snapshots(vm)
                if tree.description != VOLUME_SNAPSHOT_MARK  # a volume snapshot's, transient
            ]

        return self._call(f"list snapshots of VM {vm_id}", call)  # type: ignore[no-any-return]

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        action = f"revert VM {vm_id} to snapshot {snapshot_id}"

        def call() -> VirtualMachineInfo:
            vm = self._vm(self._content(host), host, vm_id)
            tree = self._snapshot_tree(vm, snapshot_id)
            if tree is None:
                raise DriverError(f"VM {vm_id} has no snapshot {snapshot_id}")
            self._wait(tree.snapshot.RevertToSnapshot_Task(), action)
            # vSphere restores the power state with the memory; make it explicit either way.
            memory = tree.description == SNAPSHOT_MEMORY_MARK
            state = vm.runtime.powerState
            if memory and state != "poweredOn":
                self._wait(vm.PowerOnVM_Task(), action)
            elif not memory and state != "poweredOff":
                self._wait(vm.PowerOffVM_Task(), action)
            return self._info(vm, host)

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        action = f"delete snapshot {snapshot_id} of VM {vm_id}"

        def call() -> None:
            vm = self._vm_on(self._content(host), host, vm_id)
            tree = None if vm is None else self._snapshot_tree(vm, snapshot_id)
            if tree is not None:
                self._wait(tree.snapshot.RemoveSnapshot_Task(removeChildren=False), action)

        self._call(action, call)
