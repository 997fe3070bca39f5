"""The zone's secondary storage on vSphere: an NFS export the host mounts as a datastore.

CloudStack's VMware resource mounts secondary storage on the host it works through; so does
this driver, under a name fixed by the store id so every host and every retry finds the same
datastore. Backups are `snapshots/snapshot-<id>.vmdk` on it and templates made from them
`templates/template-<id>.vmdk`, the layout the KVM driver keeps there too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from pyVmomi import vim, vmodl

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    ResourceUnavailableError,
    SecondaryStorageRef,
    TemplateRef,
)
from activities.drivers.vsphere.disks import VSphereDiskFiles, scratch_path


def secondary_datastore_name(secondary: SecondaryStorageRef) -> str:
    """The datastore name a host mounts the zone's secondary storage under, the same on every
    host and every retry (CloudStack names it by a UUID of the export; the store id is as
    stable)."""
    return f"stratus-secondary-{secondary.store_id}"


def _is_nfs(secondary: SecondaryStorageRef) -> bool:
    """Whether the store is an NFS export (nfs://host/path), the only kind ESXi mounts here."""
    url = urlparse(secondary.url)
    return url.scheme == "nfs" and bool(url.hostname) and bool(url.path)


class VSphereSecondaryStorage(VSphereDiskFiles):
    """Mounting the secondary store, and the backups and templates kept on it."""

    @staticmethod
    def _backup_path(datastore: str, snapshot_id: str) -> str:
        return f"[{datastore}] snapshots/snapshot-{snapshot_id}.vmdk"

    @staticmethod
    def _template_image_path(datastore: str, template_id: str) -> str:
        return f"[{datastore}] templates/template-{template_id}.vmdk"

    def _mounted_secondary(
        self, content: Any, host: HostRef, secondary: SecondaryStorageRef
    ) -> str | None:
        """The name of the datastore the host sees the zone's secondary storage as, when it is
        mounted; None when it is not. A mounted datastore the host cannot reach (its NFS server
        is down) is retryable (534): its files are there, out of reach for now."""
        name = secondary_datastore_name(secondary)
        system = self._host_system(content, host)
        for datastore in system.datastore:
            if datastore.name == name:
                if not datastore.summary.accessible:
                    raise ResourceUnavailableError(
                        f"secondary storage {secondary.name} (datastore {name}) is not "
                        f"accessible from host {host.name}"
                    )
                return name
        return None

    def _secondary_datastore(
        self, content: Any, host: HostRef, secondary: SecondaryStorageRef
    ) -> str:
        """The name of the datastore the host sees the zone's secondary storage as: found by
        name, or mounted from its NFS export (HostDatastoreSystem.CreateNasDatastore), as
        CloudStack's VMware resource mounts secondary storage on the host it works through.

        A store that is not an NFS export is refused for good; a mount that fails is retryable
        (534): ESXi says no more than that it could not mount, and an NFS server that is down
        or unreachable is the usual reason.
        """
        name = self._mounted_secondary(content, host, secondary)
        if name is not None:
            return name
        name = secondary_datastore_name(secondary)
        system = self._host_system(content, host)
        url = urlparse(secondary.url)
        if not _is_nfs(secondary):
            raise DriverError(
                f"secondary storage {secondary.name} ({secondary.url}) is not an NFS export "
                "(nfs://host/path): ESXi hosts reach secondary storage as an NFS datastore",
                retryable=False,
            )
        spec = vim.host.NasVolume.Specification(
            remoteHost=url.hostname,
            remotePath=url.path,
            localPath=name,
            accessMode="readWrite",
            type="NFS",
        )
        try:
            system.configManager.datastoreSystem.CreateNasDatastore(spec=spec)
        except (vim.fault.DuplicateName, vim.fault.AlreadyExists):
            pass  # a concurrent call mounted it meanwhile: the name is there then
        except vmodl.MethodFault as error:
            message = getattr(error, "msg", None) or type(error).__name__
            raise ResourceUnavailableError(
                f"cannot mount secondary storage {secondary.name} ({secondary.url}) on host "
                f"{host.name}: {message}"
            ) from error
        return name

    def _secondary_to_delete_from(
        self, content: Any, host: HostRef, secondary: SecondaryStorageRef
    ) -> str | None:
        """The secondary datastore a delete works on; None when nothing can be on it.

        Found by name first, so a delete mounts nothing it need not: a store that is not an NFS
        export was never mounted, nothing was ever made on it, and its delete (a saga's undo of
        a step refused for that very reason) succeeds. An NFS store not mounted here may hold
        what another host made: it is mounted, and a failure to is retryable (534).
        """
        name = self._mounted_secondary(content, host, secondary)
        if name is not None:
            return name
        if not _is_nfs(secondary):
            return None
        return self._secondary_datastore(content, host, secondary)

    def _backup_or_fail(
        self,
        content: Any,
        datacenter: Any,
        datastore: str,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
    ) -> str:
        path = self._backup_path(datastore, snapshot_id)
        if not self._disk_exists(content, datacenter, path):
            raise DriverError(
                f"snapshot {snapshot_id} has no backup on secondary storage {secondary.name}",
                retryable=False,
            )
        return path

    def delete_snapshot_backup(
        self, host: HostRef, secondary: SecondaryStorageRef, snapshot_id: str
    ) -> None:
        self._delete_from_secondary(
            host,
            secondary,
            lambda datastore: self._backup_path(datastore, snapshot_id),
            f"delete backup of snapshot {snapshot_id} on {secondary.name}",
        )

    def create_template_from_snapshot(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        snapshot_id: str,
        template_id: str,
    ) -> TemplateRef:
        """Copy the backup to `templates/` on the secondary datastore. The template's url is that
        disk's datastore path, which `create_volume` copies volumes from."""
        action = f"create template {template_id} from snapshot {snapshot_id}"

        def call() -> TemplateRef:
            content = self._content(host)
            datacenter = self._datacenter(content, host)
            datastore = self._secondary_datastore(content, host, secondary)
            path = self._template_image_path(datastore, template_id)
            if not self._disk_exists(content, datacenter, path):
                backup = self._backup_or_fail(
                    content, datacenter, datastore, secondary, snapshot_id
                )
                self._copy_disk(host, content, datacenter, backup, path, action)
            return TemplateRef(
                template_id=template_id,
                name=f"from-snapshot-{snapshot_id}",
                url=path,
                format="VMDK",
                size_bytes=self._disk_size(host, datacenter, path),
            )

        return self._call(action, call)  # type: ignore[no-any-return]

    def delete_template(
        self, host: HostRef, secondary: SecondaryStorageRef, template_id: str
    ) -> None:
        self._delete_from_secondary(
            host,
            secondary,
            lambda datastore: self._template_image_path(datastore, template_id),
            f"delete template {template_id} on {secondary.name}",
        )

    def _delete_from_secondary(
        self,
        host: HostRef,
        secondary: SecondaryStorageRef,
        path_on: Callable[[str], str],
        action: str,
    ) -> None:
        """Delete a disk on the secondary store, and any scratch copy an interrupted copy left
        next to it; a store never mounted here holds nothing to delete."""

        def call() -> None:
            content = self._content(host)
            datastore = self._secondary_to_delete_from(content, host, secondary)
            if datastore is None:
                return
            datacenter = self._datacenter(content, host)
            path = path_on(datastore)
            self._delete_disk(content, datacenter, path, action)
            self._delete_disk(content, datacenter, scratch_path(path), action)

        self._call(action, call)
