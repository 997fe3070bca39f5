"""VM snapshots on KVM: internal qcow2 snapshots of a domain, named by their Stratus id.

An internal snapshot of a running domain always holds its memory; a disk-only one is marked so
in its description and reverted to a stopped VM, as CloudStack's VM snapshots behave.
"""

from __future__ import annotations

from xml.etree import ElementTree

import libvirt

from activities.drivers.conventions import SNAPSHOT_DISK_MARK, SNAPSHOT_MEMORY_MARK
from activities.drivers.hypervisor import HostRef, SnapshotInfo, VirtualMachineInfo
from activities.drivers.libvirt_kvm.connection import NOT_FOUND, LibvirtConnection
from activities.drivers.libvirt_kvm.domain_xml import escape


class LibvirtSnapshots(LibvirtConnection):
    """Taking, listing, reverting and deleting a domain's snapshots."""

    @staticmethod
    def _snapshot_info(snapshot: libvirt.virDomainSnapshot, vm_id: str) -> SnapshotInfo:
        root = ElementTree.fromstring(snapshot.getXMLDesc(0))
        return SnapshotInfo(
            snapshot_id=snapshot.getName(),
            vm_id=vm_id,
            memory=(root.findtext("description") or "") == SNAPSHOT_MEMORY_MARK,
        )

    def create_snapshot(
        self, host: HostRef, vm_id: str, snapshot_id: str, *, memory: bool
    ) -> SnapshotInfo:
        def call() -> SnapshotInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            try:
                return self._snapshot_info(domain.snapshotLookupByName(snapshot_id), vm_id)
            except libvirt.libvirtError as error:
                if error.get_error_code() not in NOT_FOUND:
                    raise
            # An internal snapshot of a running domain always holds its memory; a disk-only
            # one is marked so and reverted to a stopped VM.
            captured = memory and domain.isActive()
            mark = SNAPSHOT_MEMORY_MARK if captured else SNAPSHOT_DISK_MARK
            xml = (
                f"<domainsnapshot><name>{escape(snapshot_id)}</name>"
                f"<description>{mark}</description></domainsnapshot>"
            )
            snapshot = domain.snapshotCreateXML(xml, 0)
            return self._snapshot_info(snapshot, vm_id)

        return self._run(f"snapshot VM {vm_id} as {snapshot_id}", call)

    def list_snapshots(self, host: HostRef, vm_id: str) -> list[SnapshotInfo]:
        def call() -> list[SnapshotInfo]:
            domain = self._domain(self._connection(host), host, vm_id)
            return [self._snapshot_info(s, vm_id) for s in domain.listAllSnapshots(0)]

        return self._run(f"list snapshots of VM {vm_id}", call)

    def revert_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> VirtualMachineInfo:
        def call() -> VirtualMachineInfo:
            domain = self._domain(self._connection(host), host, vm_id)
            snapshot = domain.snapshotLookupByName(snapshot_id)
            info = self._snapshot_info(snapshot, vm_id)
            domain.revertToSnapshot(snapshot, 0)
            if not info.memory and domain.isActive():
                domain.destroy()
            return self._info(domain, host)

        return self._run(f"revert VM {vm_id} to snapshot {snapshot_id}", call)

    def delete_snapshot(self, host: HostRef, vm_id: str, snapshot_id: str) -> None:
        def call() -> None:
            domain = self._lookup_domain(self._connection(host), vm_id)
            if domain is None:
                return
            try:
                snapshot = domain.snapshotLookupByName(snapshot_id)
            except libvirt.libvirtError as error:
                if error.get_error_code() in NOT_FOUND:
                    return
                raise
            snapshot.delete(0)

        self._run(f"delete snapshot {snapshot_id} of VM {vm_id}", call)
