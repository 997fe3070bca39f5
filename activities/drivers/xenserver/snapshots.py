"""VM snapshots in a XenServer pool: snapshot VMs named `stratus-snapshot:<id>` by XAPI itself.

XAPI names the snapshot as it makes it, so a retried snapshot finds it without a second step.
A checkpoint (memory included) is a snapshot VM in the Suspended state; reverting one leaves the
VM suspended, and it is resumed where it belongs. A snapshot's disks go with it.
"""

from __future__ import annotations

from activities.drivers.hypervisor import DriverError, HostRef, SnapshotInfo, VirtualMachineInfo
from activities.drivers.xenserver.connection import (
    NULL_REF,
    Record,
    XenServerConnection,
    _PoolSession,
)
from activities.drivers.xenserver.tags import SNAPSHOT_PREFIX


class XenServerSnapshots(XenServerConnection):
    """Taking, listing, reverting and deleting a VM's snapshots."""

    @staticmethod
    def _snapshots(xapi: _PoolSession, record: Record) -> dict[str, tuple[str, Record]]:
        found = {}
        for ref in record["snapshots"]:
            snapshot = xapi.call("VM.get_record", ref)
            if snapshot["name_label"].startswith(SNAPSHOT_PREFIX):
                found[snapshot["name_label"].removeprefix(SNAPSHOT_PREFIX)] = (ref, snapshot)
        return found

    @staticmethod
    def _snapshot_info(snapshot_id: str, vm_id: str, record: Record) -> SnapshotInfo:
        # A checkpoint (memory included) is a snapshot VM in the Suspended state.
        return SnapshotInfo(snapshot_id, vm_id, record["power_state"] == "Suspended")

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        action = f"snapshot VM {vm_id} as {snapshot_id}"

        def work(xapi: _PoolSession) -> SnapshotInfo:
            vm, record = self._vm(xapi, host, vm_id)
            existing = self._snapshots(xapi, record).get(snapshot_id)
            if existing is None:
                call = (
                    "VM.checkpoint"
                    if memory and record["power_state"] == "Running"
                    else ("VM.snapshot")
                )
                ref = self._task(xapi, action, call, vm, SNAPSHOT_PREFIX + snapshot_id)
                existing = (str(ref), xapi.call("VM.get_record", ref))
            return self._snapshot_info(snapshot_id, vm_id, existing[1])

        return self._call(host, action, work)

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        def work(xapi: _PoolSession) -> list[SnapshotInfo]:
            _, record = self._vm(xapi, host, vm_id)
            return [
                self._snapshot_info(snapshot_id, vm_id, snapshot)
                for snapshot_id, (_, snapshot) in self._snapshots(xapi, record).items()
            ]

        return self._call(host, f"list snapshots of VM {vm_id}", work)

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        action = f"revert VM {vm_id} to snapshot {snapshot_id}"

        def work(xapi: _PoolSession) -> VirtualMachineInfo:
            vm, record = self._vm(xapi, host, vm_id)
            found = self._snapshots(xapi, record).get(snapshot_id)
            if found is None:
                raise DriverError(f"VM {vm_id} has no snapshot {snapshot_id}")
            self._task(xapi, action, "VM.revert", found[0])
            # XAPI leaves a reverted checkpoint suspended: resume it here, where it belongs.
            if xapi.call("VM.get_power_state", vm) == "Suspended":
                self._task(xapi, action, "VM.resume_on", vm, self._host(xapi, host), False, False)
            return self._refresh(xapi, vm, host)

        return self._call(host, action, work)

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        action = f"delete snapshot {snapshot_id} of VM {vm_id}"

        def work(xapi: _PoolSession) -> None:
            found = self._vm_on(xapi, host, vm_id)
            snapshot = None if found is None else self._snapshots(xapi, found[1]).get(snapshot_id)
            if snapshot is not None:
                self._destroy_snapshot(xapi, action, snapshot[0])

        self._call(host, action, work)

    def _destroy_snapshot(self, xapi: _PoolSession, action: str, snapshot: str) -> None:
        """A snapshot is a VM record plus its disks: XAPI's VM.destroy would orphan the disks."""
        record = xapi.call("VM.get_record", snapshot)
        vdis = [xapi.call("VBD.get_VDI", vbd) for vbd in record["VBDs"]]
        if record["suspend_VDI"] != NULL_REF:
            vdis.append(record["suspend_VDI"])
        self._task(xapi, action, "VM.destroy", snapshot)
        for vdi in vdis:
            if vdi != NULL_REF:
                self._task(xapi, action, "VDI.destroy", vdi)
