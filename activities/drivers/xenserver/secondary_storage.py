"""The zone's secondary storage in a XenServer pool: an SR standing for the store.

As CloudStack does on XenServer, the store is attached to the pool as an SR of its own
(`SR.create`, named `stratus-secondary:<store id>` and found again by that name), over NFS for an
nfs:// export or as a file SR on the hosts' path for a local folder, and plugged (a PBD) on each
host that works with it. Making the SR or a PBD is check-then-create, so this worker's jobs on
one store take turns.
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import XenAPI

from activities.drivers.hypervisor import (
    DriverError,
    HostRef,
    SecondaryStorageRef,
    UnsupportedOperationError,
)
from activities.drivers.xenserver.connection import Record, _PoolSession
from activities.drivers.xenserver.disks import XenServerDisks
from activities.drivers.xenserver.tags import SECONDARY_PREFIX


def _store_label(secondary: SecondaryStorageRef) -> str:
    """The name of the SR standing for a secondary store, given at SR.create."""
    return SECONDARY_PREFIX + secondary.store_id


def _store_device_config(secondary: SecondaryStorageRef) -> tuple[str, dict[str, str]]:
    """The SR type and device_config reaching the store: NFS for an nfs:// export (as
    CloudStack mounts secondary storage), a file SR on the hosts' path for a local folder."""
    parsed = urlparse(secondary.url)
    if parsed.scheme == "nfs":
        if not parsed.hostname:
            raise DriverError(
                f"secondary storage {secondary.name}: {secondary.url} names no server"
            )
        return "nfs", {"server": parsed.hostname, "serverpath": parsed.path or "/"}
    if parsed.scheme in ("", "file"):
        return "file", {"location": secondary.path}
    raise UnsupportedOperationError(
        f"secondary storage {secondary.name} ({parsed.scheme}://) cannot be attached to a "
        "XenServer pool as an SR: NFS or a folder the hosts reach is needed"
    )


class XenServerSecondaryStorage(XenServerDisks):
    """Finding, making and plugging the SR of a secondary store."""

    @staticmethod
    def _store_srs(xapi: _PoolSession, secondary: SecondaryStorageRef) -> list[str]:
        """The SRs standing for the secondary store (normally one), without making any."""
        return [str(sr) for sr in xapi.call("SR.get_by_name_label", _store_label(secondary))]

    def _store_lock(self, label: str) -> threading.Lock:
        """The lock of one secondary storage SR (by its name): making the SR or a PBD of it is
        check-then-create, so this worker's jobs on one store take turns; other stores wait for
        nothing (an SR.create may take up to `task_timeout`)."""
        with self._stores_lock:
            return self._store_locks.setdefault(label, threading.Lock())

    def _secondary_sr(
        self, xapi: _PoolSession, action: str, host: HostRef, secondary: SecondaryStorageRef
    ) -> str:
        """The SR of the secondary store, plugged on `host`: found by its name, or created.

        The name is given by SR.create itself, so an SR made by an attempt whose answer was
        lost is found by the retry; the store's lock keeps two jobs of this worker from making
        two.
        """
        host_ref = self._host(xapi, host, live=True)
        with self._store_lock(_store_label(secondary)):
            srs = self._store_srs(xapi, secondary)
            if srs:
                sr = srs[0]
            else:
                kind, device_config = _store_device_config(secondary)
                sr = str(
                    self._task(
                        xapi,
                        action,
                        "SR.create",
                        host_ref,
                        device_config,
                        "0",
                        _store_label(secondary),
                        f"Stratus secondary storage {secondary.name} ({secondary.url})",
                        kind,
                        "user",
                        True,
                        {},
                    )
                )
            self._plug(xapi, action, sr, host_ref, secondary)
        return sr

    def _plug_store_sr(
        self,
        xapi: _PoolSession,
        action: str,
        host: HostRef,
        sr: str,
        secondary: SecondaryStorageRef | None = None,
    ) -> None:
        """Plug an existing secondary storage SR on `host` before a copy out of it or a destroy
        in it: XAPI needs the SR plugged somewhere for both (SR_NO_PBDS), and nothing else plugs
        it again after a host reboot without auto-plug."""
        host_ref = self._host(xapi, host, live=True)
        with self._store_lock(str(xapi.call("SR.get_name_label", sr))):
            self._plug(xapi, action, sr, host_ref, secondary)

    def _plugged_store_srs(
        self, xapi: _PoolSession, action: str, host: HostRef, secondary: SecondaryStorageRef
    ) -> list[str]:
        """The SRs of the secondary store, plugged on `host`; none made (a store never used has
        no SR, so nothing on it)."""
        srs = self._store_srs(xapi, secondary)
        for sr in srs:
            self._plug_store_sr(xapi, action, host, sr, secondary)
        return srs

    def _plug(
        self,
        xapi: _PoolSession,
        action: str,
        sr: str,
        host_ref: str,
        secondary: SecondaryStorageRef | None,
    ) -> None:
        """Make the SR visible on the host (a PBD, plugged), as CloudStack checks before use.

        A PBD is made like the SR's others (or from the store's URL when it has none). Another
        worker may make the host's PBD between the look and the create: XAPI then answers
        PBD_EXISTS, and that PBD is the one to plug.
        """
        pbds = self._pbds(xapi, sr)
        pbd = pbds.get(host_ref)
        if pbd is None:
            if pbds:
                device_config = xapi.call("PBD.get_device_config", next(iter(pbds.values())))
            elif secondary is not None:
                device_config = _store_device_config(secondary)[1]
            else:
                raise DriverError(f"SR {sr} has no PBD to learn its device configuration from")
            try:
                pbd = str(
                    xapi.call(
                        "PBD.create",
                        {
                            "host": host_ref,
                            "SR": sr,
                            "device_config": device_config,
                            "other_config": {},
                        },
                    )
                )
            except XenAPI.Failure as failure:
                pbd = self._pbds(xapi, sr).get(host_ref)
                if str(failure.details[0]) != "PBD_EXISTS" or pbd is None:
                    raise
        if not xapi.call("PBD.get_currently_attached", pbd):
            self._task(xapi, action, "PBD.plug", pbd)

    @staticmethod
    def _pbds(xapi: _PoolSession, sr: str) -> dict[str, str]:
        """The SR's PBDs by host ref."""
        return {
            str(xapi.call("PBD.get_host", pbd)): str(pbd) for pbd in xapi.call("SR.get_PBDs", sr)
        }

    @staticmethod
    def _image_location(xapi: _PoolSession, sr: str, record: Record) -> str:
        """Where the image file lies under the store: an NFS SR keeps its VDIs in a folder named
        after the SR, a file SR right in its location."""
        name = f"{record['uuid']}.vhd"
        if xapi.call("SR.get_type", sr) == "nfs":
            return f"{xapi.call('SR.get_uuid', sr)}/{name}"
        return name
