"""What a job on a data volume, or on one of its snapshots, is asked to do: one input model per
operation.

As for VMs (domain/vm_requests.py): each operation's model holds only the fields it uses, they
share the job's own fields (`VolumeRequest`), and `operation` tells them apart in the union a
queue carries (`VolumeOperationRequest`). JSON names and `operation` values are those of the one
model with optional fields that came before, so its recorded payloads still parse.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, Field, TypeAdapter

VOLUME_RESOURCE = "Volume"


class VolumeOperation(StrEnum):
    """What can be done to a data volume, each as a job: in the VM's queue while the volume is
    attached (it is serialized with its VM), in the volume's own queue otherwise."""

    CREATE = "create"
    ATTACH = "attach"
    DETACH = "detach"
    RESIZE = "resize"
    MIGRATE = "migrate"
    DELETE = "delete"
    SNAPSHOT = "snapshot"
    REVERT_TO_SNAPSHOT = "revert to a snapshot"
    DELETE_SNAPSHOT = "delete a snapshot"
    CREATE_FROM_SNAPSHOT = "create from a snapshot"
    CREATE_TEMPLATE_FROM_SNAPSHOT = "make a template from a snapshot"

    @property
    def job_type(self) -> str:
        """The job type (and Temporal workflow type): CreateVolume, AttachVolume, ...,
        CreateSnapshot, ..."""
        return _VOLUME_SNAPSHOT_JOB_TYPES.get(self.value) or f"{self.value.capitalize()}Volume"

    @property
    def is_snapshot_operation(self) -> bool:
        return self.value in _VOLUME_SNAPSHOT_JOB_TYPES


#: Volume snapshot jobs, named as CloudStack's commands are (createSnapshot, ...).
_VOLUME_SNAPSHOT_JOB_TYPES = {
    "snapshot": "CreateSnapshot",
    "revert to a snapshot": "RevertSnapshot",
    "delete a snapshot": "DeleteSnapshot",
    "create from a snapshot": "CreateVolumeFromSnapshot",
    "make a template from a snapshot": "CreateTemplateFromSnapshot",
}


class VolumeCreation(BaseModel):
    """createVolume: a data volume from a disk offering, allocated only (no disk yet)."""

    name: str
    zone_id: UUID
    disk_offering_id: UUID
    size_bytes: int


class VolumeRequest(BaseModel):
    """What every volume job's input holds: the job, its volume (for a volume made from a
    snapshot, the new one's), who asked, and the job in words."""

    job_id: UUID
    volume_id: UUID
    operation: VolumeOperation
    account_id: UUID
    summary: str

    #: The fields (besides the volume: a VM's queue holds the jobs of all its volumes) on which
    #: two submissions ask for the same thing, a repeated click that joins the queued job; None:
    #: each submission makes something of its own and is never the same as another.
    same_when: ClassVar[tuple[str, ...] | None] = ()

    def same_request_as(self, other: VolumeRequest) -> bool:
        if self.same_when is None or type(other) is not type(self):
            return False
        return all(
            getattr(self, name) == getattr(other, name) for name in ("volume_id", *self.same_when)
        )


class CreateVolumeRequest(VolumeRequest):
    operation: Literal[VolumeOperation.CREATE] = VolumeOperation.CREATE
    creation: VolumeCreation


class AttachVolumeRequest(VolumeRequest):
    operation: Literal[VolumeOperation.ATTACH] = VolumeOperation.ATTACH
    #: The VM to plug the volume into.
    vm_id: UUID

    same_when = ("vm_id",)


class DetachVolumeRequest(VolumeRequest):
    operation: Literal[VolumeOperation.DETACH] = VolumeOperation.DETACH


class ResizeVolumeRequest(VolumeRequest):
    operation: Literal[VolumeOperation.RESIZE] = VolumeOperation.RESIZE
    #: The new size; shrinking needs `shrink_ok`.
    size_bytes: int
    shrink_ok: bool = False

    same_when = ("size_bytes", "shrink_ok")


class MigrateVolumeRequest(VolumeRequest):
    operation: Literal[VolumeOperation.MIGRATE] = VolumeOperation.MIGRATE
    #: The primary storage pool to move the disk to.
    pool_id: UUID

    same_when = ("pool_id",)


class DeleteVolumeRequest(VolumeRequest):
    operation: Literal[VolumeOperation.DELETE] = VolumeOperation.DELETE


class SnapshotJobRequest(VolumeRequest):
    """A job on a volume snapshot: the one it takes (its id derived from the job's), reverts
    to, deletes, or makes into a volume or a template."""

    snapshot_id: UUID

    same_when: ClassVar[tuple[str, ...] | None] = ("snapshot_id",)


class SnapshotVolumeRequest(SnapshotJobRequest):
    operation: Literal[VolumeOperation.SNAPSHOT] = VolumeOperation.SNAPSHOT
    #: The snapshot's name (None: named after the volume).
    name: str | None = None
    #: Taken by a recurring policy: the job prunes the policy's oldest afterwards.
    policy_id: UUID | None = None

    same_when = None


class RevertSnapshotRequest(SnapshotJobRequest):
    operation: Literal[VolumeOperation.REVERT_TO_SNAPSHOT] = VolumeOperation.REVERT_TO_SNAPSHOT


class DeleteSnapshotRequest(SnapshotJobRequest):
    operation: Literal[VolumeOperation.DELETE_SNAPSHOT] = VolumeOperation.DELETE_SNAPSHOT


class VolumeFromSnapshotRequest(SnapshotJobRequest):
    """A new data volume (`volume_id` is the new one's) made from the snapshot."""

    operation: Literal[VolumeOperation.CREATE_FROM_SNAPSHOT] = VolumeOperation.CREATE_FROM_SNAPSHOT
    name: str | None = None

    same_when = None


class TemplateFromSnapshotRequest(SnapshotJobRequest):
    """A private template made from the snapshot: its id (derived from the job's) and OS."""

    operation: Literal[VolumeOperation.CREATE_TEMPLATE_FROM_SNAPSHOT] = (
        VolumeOperation.CREATE_TEMPLATE_FROM_SNAPSHOT
    )
    template_id: UUID
    name: str | None = None
    os_type: str | None = None

    same_when = None


VolumeOperationRequest = Annotated[
    CreateVolumeRequest
    | AttachVolumeRequest
    | DetachVolumeRequest
    | ResizeVolumeRequest
    | MigrateVolumeRequest
    | DeleteVolumeRequest
    | SnapshotVolumeRequest
    | RevertSnapshotRequest
    | DeleteSnapshotRequest
    | VolumeFromSnapshotRequest
    | TemplateFromSnapshotRequest,
    Field(discriminator="operation"),
]
_VOLUME_OPERATION_REQUEST: TypeAdapter[VolumeOperationRequest] = TypeAdapter(VolumeOperationRequest)


def volume_operation_request(operation: VolumeOperation, **fields: Any) -> VolumeOperationRequest:
    """The model of `operation`, from its fields (for callers that choose the operation at run
    time); a field the operation does not take is refused."""
    request = _VOLUME_OPERATION_REQUEST.validate_python({**fields, "operation": operation})
    unknown = set(fields) - set(type(request).model_fields)
    if unknown:
        raise ValueError(f"{operation.value} takes no {', '.join(sorted(unknown))}")
    return request
