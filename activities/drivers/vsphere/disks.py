"""VMDK files on datastores, worked on through vCenter's disk and file managers.

A volume is `[<pool>] <volume folder>/<volume id>.vmdk`. A disk's size is read from its
descriptor through vCenter's datastore file access, as CloudStack reads it. A copy onto a path
is made beside it as `<name>-copying.vmdk` and renamed into place once whole, so a disk found at
a path is always a finished one and a retry after an interrupted copy starts afresh.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import ssl
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode

from pyVmomi import vim, vmodl

from activities.drivers.hypervisor import (
    HostRef,
    ResourceUnavailableError,
    StoragePoolRef,
    UnsupportedOperationError,
)
from activities.drivers.vsphere.connection import (
    UNSUPPORTED_FAULTS,
    VSphereConnection,
    unverified_context,
)

#: A disk copy is made under this name next to its destination, then renamed into place.
COPYING_SUFFIX = "-copying.vmdk"
#: An extent line of a VMDK descriptor: access, size in 512-byte sectors, type, file.
_EXTENT = re.compile(r"^\s*(?:RW|RDONLY|NOACCESS)\s+(\d+)\s", re.MULTILINE)


def scratch_path(path: str) -> str:
    """Where a copy onto the disk `path` is made before it is renamed into place."""
    return path.removesuffix(".vmdk") + COPYING_SUFFIX


def _split_path(path: str) -> tuple[str, str]:
    """`[datastore] folder/file.vmdk` → (`datastore`, `folder/file.vmdk`)."""
    datastore, _, relative = path.partition("] ")
    return datastore.lstrip("["), relative


def _backing_chain(backing: Any) -> list[str]:
    """A disk backing's file and its parents' (a delta disk's chain down to its base)."""
    files: list[str] = []
    while backing is not None:
        files.append(str(backing.fileName))
        backing = getattr(backing, "parent", None)
    return files


class VSphereDiskFiles(VSphereConnection):
    """Finding, sizing, copying and deleting disk files, and telling which VMs use one."""

    def _volume_path(self, pool: StoragePoolRef, volume_id: str) -> str:
        return f"[{pool.name}] {self._volume_folder}/{volume_id}.vmdk"

    def _disk_exists(self, content: Any, datacenter: Any, path: str) -> bool:
        try:
            content.virtualDiskManager.QueryVirtualDiskUuid(name=path, datacenter=datacenter)
        except vim.fault.FileNotFound:
            return False
        return True

    @staticmethod
    def _disks(vm: Any) -> list[Any]:
        return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]

    @staticmethod
    def _volume_id(disk: Any) -> str:
        """The volume a disk is: its base file's name. Under VM snapshots the disk writes to a
        delta (`<volume>-000001.vmdk`) whose parent chain ends at the volume's own file."""
        backing = disk.backing
        while getattr(backing, "parent", None) is not None:
            backing = backing.parent
        return PurePosixPath(str(backing.fileName).split("] ", 1)[-1]).stem

    def _read_datastore_file(self, host: HostRef, datacenter: Any, path: str) -> str | None:
        """A small datastore file's text through vCenter's datastore file access (`/folder`),
        with this session's cookie; None when the file does not exist."""
        endpoint = self._endpoint(host)
        with self._lock:
            si = self._sessions.get(endpoint)
        if si is None:
            # close() ran since this call's `_content`: the session (and its cookie) is gone;
            # a retry logs in again.
            raise ResourceUnavailableError(
                f"reading {path}: the session with vCenter {endpoint.host} was closed"
            )
        cookie = str(si._stub.cookie)
        datastore, relative = _split_path(path)
        query = urlencode({"dcPath": datacenter.name, "dsName": datastore})
        connection: http.client.HTTPConnection
        if endpoint.protocol == "https":
            context = ssl.create_default_context() if endpoint.verify_ssl else unverified_context()
            connection = http.client.HTTPSConnection(
                endpoint.host, endpoint.port, timeout=60, context=context
            )
        else:
            connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=60)
        try:
            connection.request(
                "GET", f"/folder/{quote(relative)}?{query}", headers={"Cookie": cookie}
            )
            response = connection.getresponse()
            body = response.read(1024 * 1024)
        finally:
            connection.close()
        if response.status == http.client.NOT_FOUND:
            return None
        if response.status != http.client.OK:
            raise ResourceUnavailableError(
                f"reading {path} through vCenter's datastore access: HTTP {response.status}"
            )
        return body.decode("utf-8", errors="replace")

    def _disk_size(self, host: HostRef, datacenter: Any, path: str) -> int:
        """A disk's capacity from its descriptor's extents (how CloudStack's VMware resource
        sizes a VMDK).

        A descriptor that cannot be read or names no extent raises a retryable error rather
        than answering a size: the disk was found just before, so this is a datastore (or its
        file access) that did not answer, and a size made up here would be recorded for good
        (a 0-byte snapshot, a volume of the asked size whatever the disk's).
        """
        text = self._read_datastore_file(host, datacenter, path)
        sectors = [int(match.group(1)) for match in _EXTENT.finditer(text or "")]
        if not sectors:
            state = "is missing" if text is None else "names no extent"
            raise ResourceUnavailableError(
                f"cannot read the size of disk {path}: its descriptor {state}"
            )
        return sum(sectors) * 512

    def _make_folder(self, content: Any, datacenter: Any, path: str) -> None:
        """The folder a disk file goes in (vSphere creates no folder on a copy or a create)."""
        folder, _, _ = path.rpartition("/")
        if folder:
            with contextlib.suppress(vim.fault.FileAlreadyExists):
                content.fileManager.MakeDirectory(
                    name=folder, datacenter=datacenter, createParentDirectories=True
                )

    def _delete_disk(self, content: Any, datacenter: Any, path: str, action: str) -> None:
        """Delete a disk (descriptor and extent); one already gone is not an error."""
        if self._disk_exists(content, datacenter, path):
            with contextlib.suppress(vim.fault.FileNotFound):
                task = content.virtualDiskManager.DeleteVirtualDisk_Task(
                    name=path, datacenter=datacenter
                )
                self._wait_raw(task, action)

    def _copy_disk(
        self,
        host: HostRef,
        content: Any,
        datacenter: Any,
        source: str,
        dest: str,
        action: str,
        *,
        size_bytes: int | None = None,
        replace: bool = False,
    ) -> None:
        """Copy the disk `source` to `dest` (CopyVirtualDisk_Task), so that a disk at `dest` is
        always a finished copy: the copy is made as `<dest>-copying.vmdk` and renamed into place
        (MoveVirtualDisk_Task) once whole. A retry finds either the finished disk or, after an
        interrupted attempt, a scratch copy it deletes and makes again.

        `size_bytes` grows the copy to that size first (ExtendVirtualDisk_Task); `replace` renames
        over a disk already at `dest` (a revert: the disk keeps its path) in one forced
        MoveVirtualDisk_Task, so there is never a moment with neither the old disk nor the new.

        A failed rename is retryable: the copy was whole, a retry makes it again. The scratch copy
        is kept when the rename failed and `dest` is gone (a rename that died half way): it may be
        the only copy of the disk left, and the retry's own copy replaces it.
        """
        scratch = scratch_path(dest)
        manager = content.virtualDiskManager
        self._delete_disk(content, datacenter, scratch, action)
        self._make_folder(content, datacenter, dest)
        renaming = False
        try:
            task = manager.CopyVirtualDisk_Task(
                sourceName=source,
                sourceDatacenter=datacenter,
                destName=scratch,
                destDatacenter=datacenter,
            )
            self._wait(task, action)
            if size_bytes is not None and self._disk_size(host, datacenter, scratch) < size_bytes:
                self._extend_disk(content, datacenter, scratch, size_bytes, action)
            renaming = True
            try:
                task = manager.MoveVirtualDisk_Task(
                    sourceName=scratch,
                    sourceDatacenter=datacenter,
                    destName=dest,
                    destDatacenter=datacenter,
                    force=replace,
                )
                self._wait_raw(task, action)
            except vmodl.MethodFault as error:
                message = getattr(error, "msg", None) or type(error).__name__
                raise ResourceUnavailableError(
                    f"{action}: renaming the finished copy {scratch} to {dest} failed "
                    f"({message}); a retry copies again"
                ) from error
        except BaseException:
            # Leave no scratch copy behind a failure (best effort: a copy vCenter is still
            # making is locked; the retry deletes it), unless it may be all that is left.
            with contextlib.suppress(Exception):
                if not renaming or self._disk_exists(content, datacenter, dest):
                    self._delete_disk(content, datacenter, scratch, action)
            raise

    def _extend_disk(
        self, content: Any, datacenter: Any, path: str, size_bytes: int, action: str
    ) -> None:
        try:
            task = content.virtualDiskManager.ExtendVirtualDisk_Task(
                name=path, datacenter=datacenter, newCapacityKb=size_bytes // 1024, eagerZero=False
            )
            self._wait_raw(task, action)
        except UNSUPPORTED_FAULTS as error:
            raise UnsupportedOperationError(
                f"{action}: growing the disk to {size_bytes} bytes needs "
                "VirtualDiskManager.ExtendVirtualDisk_Task, which this vCenter does not "
                "implement (govmomi's simulator does not)"
            ) from error

    def _users_of(self, content: Any, path: str) -> list[tuple[Any, Any]]:
        """The (VM, disk) pairs whose disk is the file `path`, or a delta disk of it (the VM has
        VM snapshots); template VMs are not users."""
        found: list[tuple[Any, Any]] = []
        for vm in self._objects(content, vim.VirtualMachine):
            try:
                config = vm.config
                if config is None or config.template:
                    continue
                found += [(vm, d) for d in self._disks(vm) if path in _backing_chain(d.backing)]
            except vmodl.fault.ManagedObjectNotFound:
                continue  # destroyed since the listing
        return found
