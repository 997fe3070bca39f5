"""XenServer / XCP-ng pools through XAPI, with the `XenAPI` client.

Every call goes to the pool master; hosts are pool members found by name or address. The
Stratus ids live in XAPI's `other_config` maps: a VM carries `stratus_vm_id`, a disk (VDI)
`stratus_volume_id`, so define and create are idempotent by Stratus id. A snapshot is named
`stratus-snapshot:<id>` when XAPI makes it, so a retried snapshot finds it without a second step.

Defining a VM follows CloudStack's XenServer resource: clone the base template of the OS
(`VM.clone`), drop its `disks` provisioning spec (the disks are Stratus volumes, plugged as VBDs),
`VM.provision` as `xe vm-install` does, then set memory, vCPUs, affinity, VBDs and VIFs and turn
the clone into a VM. The clone is named `stratus-pending:<vm id>` until the last step, so a define
interrupted at any point is found and finished by the retry (or removed by the saga's undo).

Volume snapshots go as CloudStack's XenServer resource takes them: `VDI.snapshot` on the primary
SR, backed up by `VDI.copy` into an SR standing for the zone's secondary storage (created once
with `SR.create`, named `stratus-secondary:<store id>`, plugged where needed); reverts, volumes
and templates from a snapshot are `VDI.copy` of that backup. Snapshots carry
`stratus_snapshot_id`, backups `stratus_backup_of` and templates `stratus_template_id`. Every
copy goes into a VDI the driver made first, tagged as pending for its Stratus id, and every
snapshot is taken of a disk marked with the snapshot id it is for, so a copy or a snapshot whose
answer was lost is found by the retry (or by the delete that undoes it), never left behind.

A halted VM has no `resident_on` in XAPI: it belongs to its `affinity` host, which the driver
sets at define and after a migration, and starts it there (`VM.start_on`).

Long operations run as XAPI tasks (`Async.*`) polled up to `task_timeout`; past it the outcome is
unknown and `DriverTimeoutError` says so. Failures keep XAPI's error code and parameters in the
message, and whether a retry may help is decided per code (`translate_failure`).

The pool master URL and credentials come from the worker's configuration (`XenServerPool`, one
per cluster id); refs carry only names and addresses, and no URL with credentials is accepted.

One module per concern: `connection` (pools, sessions, tasks, VM lookup) with `errors` and
`tags`, `vms`, `disks` (VDIs and copies), `volumes`, `snapshots` (VM snapshots),
`secondary_storage`, `volume_snapshots` (with backups), `restores` (reverts, volumes and
templates from a backup), `migration`; `driver` composes them into `XenServerDriver`.
"""

from activities.drivers.xenserver.connection import NULL_REF, XenServerPool, _PoolSession
from activities.drivers.xenserver.driver import XenServerDriver
from activities.drivers.xenserver.errors import translate_failure
from activities.drivers.xenserver.tags import (
    BACKUP_KEY,
    BACKUP_PREFIX,
    COPY_KEY,
    OWNER_KEY,
    PENDING_PREFIX,
    REPLACED_KEY,
    REVERT_KEY,
    REVERT_PLUGS_KEY,
    REVERT_SNAPSHOT_KEY,
    SECONDARY_PREFIX,
    SNAPSHOT_ID_KEY,
    SNAPSHOT_PENDING_KEY,
    SNAPSHOT_PREFIX,
    SNAPSHOT_VOLUME_KEY,
    TAG_PREFIX,
    TEMPLATE_KEY,
    TEMPLATE_PREFIX,
    VM_ID_KEY,
    VOLUME_ID_KEY,
    VOLUME_SNAPSHOT_PREFIX,
)

__all__ = [
    "BACKUP_KEY",
    "BACKUP_PREFIX",
    "COPY_KEY",
    "NULL_REF",
    "OWNER_KEY",
    "PENDING_PREFIX",
    "REPLACED_KEY",
    "REVERT_KEY",
    "REVERT_PLUGS_KEY",
    "REVERT_SNAPSHOT_KEY",
    "SECONDARY_PREFIX",
    "SNAPSHOT_ID_KEY",
    "SNAPSHOT_PENDING_KEY",
    "SNAPSHOT_PREFIX",
    "SNAPSHOT_VOLUME_KEY",
    "TAG_PREFIX",
    "TEMPLATE_KEY",
    "TEMPLATE_PREFIX",
    "VM_ID_KEY",
    "VOLUME_ID_KEY",
    "VOLUME_SNAPSHOT_PREFIX",
    "XenServerDriver",
    "XenServerPool",
    "_PoolSession",
    "translate_failure",
]
