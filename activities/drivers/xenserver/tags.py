"""The marks Stratus leaves in XAPI's records, by which every retry finds what it made.

The Stratus ids live in XAPI's `other_config` maps (a VM carries `stratus_vm_id`, a disk (VDI)
`stratus_volume_id`) and in names that XAPI itself gives at creation (a snapshot is named
`stratus-snapshot:<id>`), so whatever an attempt made before its answer was lost is found by
the next one, or by the delete that undoes the job.
"""

from __future__ import annotations

VM_ID_KEY = "stratus_vm_id"
VOLUME_ID_KEY = "stratus_volume_id"
PENDING_PREFIX = "stratus-pending:"
SNAPSHOT_PREFIX = "stratus-snapshot:"
#: Every Stratus tag in an `other_config` starts so.
TAG_PREFIX = "stratus_"
#: A volume snapshot on primary storage: its Stratus id and its volume's.
SNAPSHOT_ID_KEY = "stratus_snapshot_id"
SNAPSHOT_VOLUME_KEY = "stratus_snapshot_volume_id"
#: A backup on the secondary storage SR: the snapshot it keeps.
BACKUP_KEY = "stratus_backup_of"
#: A template image on the secondary storage SR: its Stratus template id.
TEMPLATE_KEY = "stratus_template_id"
#: On backups and templates: the uuid of the VDI the tags were given to (a copy inherits them).
OWNER_KEY = "stratus_tagged_vdi"
#: A VDI made to be copied into, not done yet: what it is for (`<kind>:<Stratus id>`, see
#: `copy_for`).
COPY_KEY = "stratus_copy_for"
#: On a volume while it is being snapshotted (and so on the snapshot XAPI takes of it): the
#: snapshot id it is taken for.
SNAPSHOT_PENDING_KEY = "stratus_snapshot_pending"
#: A revert in progress: the copy to swap in (volume, snapshot, plugs to move) and the disk
#: it replaces.
REVERT_KEY = "stratus_revert_of"
REVERT_SNAPSHOT_KEY = "stratus_revert_snapshot_id"
REVERT_PLUGS_KEY = "stratus_revert_plugs"
REPLACED_KEY = "stratus_replaced_volume_id"
VOLUME_SNAPSHOT_PREFIX = "stratus-volume-snapshot:"
BACKUP_PREFIX = "stratus-backup:"
TEMPLATE_PREFIX = "stratus-template:"
SECONDARY_PREFIX = "stratus-secondary:"


def copy_for(kind: str, stratus_id: str) -> str:
    """What a pending copy is for: `volume`, `revert` (of a volume), `backup` (of a snapshot)
    or `template`, and the Stratus id."""
    return f"{kind}:{stratus_id}"
