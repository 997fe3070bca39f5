"""What a job on an existing VM is asked to do: one input model per operation.

Each operation has its own model with only the fields it uses, so a workflow's `run` says what
it takes and the domain reads a field only where the operation has it. They share the job's own
fields (`VmRequest`) and are told apart by `operation`, the discriminator of `VmOperationRequest`,
the union a VM's queue carries. The JSON names and the `operation` values are those of the one
model with nine optional fields that came before, so a payload recorded then (every field
present, most of them null) still parses into the right model: unknown fields are ignored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, Field, TypeAdapter


class VmOperation(StrEnum):
    """What can be done to an existing VM, each as a job on the VM's queue."""

    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    DESTROY = "destroy"
    RECOVER = "recover"
    EXPUNGE = "expunge"
    MIGRATE = "migrate"
    SNAPSHOT = "snapshot"
    REVERT_TO_SNAPSHOT = "revert to a snapshot of"
    DELETE_SNAPSHOT = "delete a snapshot of"
    CHANGE_SERVICE_OFFERING = "change the service offering of"
    RESTORE = "restore"

    @property
    def job_type(self) -> str:
        """The job type (and Temporal workflow type): StartVirtualMachine, ..."""
        special = _SNAPSHOT_JOB_TYPES.get(self.value) or _SPECIAL_JOB_TYPES.get(self.value)
        return special or f"{self.value.capitalize()}VirtualMachine"

    @property
    def is_snapshot_operation(self) -> bool:
        return self.value in _SNAPSHOT_JOB_TYPES


#: VM snapshot jobs, named as CloudStack's commands are (createVMSnapshot, ...).
_SNAPSHOT_JOB_TYPES = {
    "snapshot": "CreateVmSnapshot",
    "revert to a snapshot of": "RevertToVmSnapshot",
    "delete a snapshot of": "DeleteVmSnapshot",
}
#: Other operations whose job type is not `<Verb>VirtualMachine` (CloudStack's scaleVirtualMachine
#: of a stopped VM, logged as VM.UPGRADE).
_SPECIAL_JOB_TYPES = {"change the service offering of": "ScaleVirtualMachine"}

#: CloudStack's `expunge.delay`: how long a destroyed VM stays recoverable.
EXPUNGE_DELAY_SECONDS = 86400


class VmRequest(BaseModel):
    """What every VM job's input holds: the job, its VM, who asked, and the job in words."""

    job_id: UUID
    vm_id: UUID
    operation: VmOperation
    account_id: UUID
    summary: str

    #: The fields on which two submissions ask for the same thing (a repeated click, which
    #: joins the queued job instead of running twice); None: each submission makes something
    #: of its own and is never the same as another.
    same_when: ClassVar[tuple[str, ...] | None] = ()

    def same_request_as(self, other: VmRequest) -> bool:
        if self.same_when is None or type(other) is not type(self):
            return False
        return all(getattr(self, name) == getattr(other, name) for name in self.same_when)


class StartVmRequest(VmRequest):
    operation: Literal[VmOperation.START] = VmOperation.START
    #: An HA restart (its host was fenced): hosts tagged `ha` take it too.
    ha_restart: bool = False


class StopVmRequest(VmRequest):
    operation: Literal[VmOperation.STOP] = VmOperation.STOP
    #: Power off without asking the guest.
    forced: bool = False

    same_when = ("forced",)


class RebootVmRequest(VmRequest):
    operation: Literal[VmOperation.REBOOT] = VmOperation.REBOOT


class DestroyVmRequest(VmRequest):
    operation: Literal[VmOperation.DESTROY] = VmOperation.DESTROY
    #: The stop inside the destroy (of a running VM) powers off without asking the guest.
    forced: bool = False
    #: Expunge at once instead of after the expunge delay.
    expunge: bool = False
    expunge_delay_seconds: int = EXPUNGE_DELAY_SECONDS

    same_when = ("forced", "expunge")


class RecoverVmRequest(VmRequest):
    operation: Literal[VmOperation.RECOVER] = VmOperation.RECOVER


class ExpungeVmRequest(VmRequest):
    operation: Literal[VmOperation.EXPUNGE] = VmOperation.EXPUNGE


class MigrateVmRequest(VmRequest):
    operation: Literal[VmOperation.MIGRATE] = VmOperation.MIGRATE
    #: The host to move the VM to; None lets the planner choose one in its cluster.
    host_id: UUID | None = None

    same_when = ("host_id",)


class VmSnapshotJobRequest(VmRequest):
    """A job on one of the VM's snapshots: the one it makes (its id derived from the job's),
    reverts to or deletes."""

    snapshot_id: UUID

    same_when: ClassVar[tuple[str, ...] | None] = ("snapshot_id",)


class SnapshotVmRequest(VmSnapshotJobRequest):
    operation: Literal[VmOperation.SNAPSHOT] = VmOperation.SNAPSHOT
    snapshot_name: str | None = None
    #: Capture the running VM's memory too.
    memory: bool = False

    same_when = None


class RevertToVmSnapshotRequest(VmSnapshotJobRequest):
    operation: Literal[VmOperation.REVERT_TO_SNAPSHOT] = VmOperation.REVERT_TO_SNAPSHOT


class DeleteVmSnapshotRequest(VmSnapshotJobRequest):
    operation: Literal[VmOperation.DELETE_SNAPSHOT] = VmOperation.DELETE_SNAPSHOT


class ChangeServiceOfferingRequest(VmRequest):
    operation: Literal[VmOperation.CHANGE_SERVICE_OFFERING] = VmOperation.CHANGE_SERVICE_OFFERING
    #: The offering the (stopped) VM takes.
    service_offering_id: UUID

    same_when = ("service_offering_id",)


class RestoreVmRequest(VmRequest):
    operation: Literal[VmOperation.RESTORE] = VmOperation.RESTORE
    #: The template of the new root volume; None means the VM's own template.
    template_id: UUID | None = None

    same_when = ("template_id",)


VmOperationRequest = Annotated[
    StartVmRequest
    | StopVmRequest
    | RebootVmRequest
    | DestroyVmRequest
    | RecoverVmRequest
    | ExpungeVmRequest
    | MigrateVmRequest
    | SnapshotVmRequest
    | RevertToVmSnapshotRequest
    | DeleteVmSnapshotRequest
    | ChangeServiceOfferingRequest
    | RestoreVmRequest,
    Field(discriminator="operation"),
]
_VM_OPERATION_REQUEST: TypeAdapter[VmOperationRequest] = TypeAdapter(VmOperationRequest)


def vm_operation_request(operation: VmOperation, **fields: Any) -> VmOperationRequest:
    """The model of `operation`, from its fields (for callers that choose the operation at run
    time); a field the operation does not take is refused."""
    request = _VM_OPERATION_REQUEST.validate_python({**fields, "operation": operation})
    unknown = set(fields) - set(type(request).model_fields)
    if unknown:
        raise ValueError(f"{operation.value} takes no {', '.join(sorted(unknown))}")
    return request


def stops_forcibly(request: VmRequest) -> bool:
    """Whether the job powers the VM off without asking the guest (a forced stop or destroy)."""
    return isinstance(request, StopVmRequest | DestroyVmRequest) and request.forced
