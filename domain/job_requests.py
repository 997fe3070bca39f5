"""What a job is asked to do: the inputs the API submits and the workflows run.

They live in the domain because both sides of the Temporal boundary need them: the API builds
them (and must not import workflow code) and the workflows receive them. Fields added later get
defaults, so histories recorded with older inputs still replay.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class JobAttribute(StrEnum):
    """The search attributes every job's workflow carries, all of type Keyword."""

    JOB_TYPE = "JobType"
    JOB_STATE = "JobState"
    ACCOUNT_ID = "AccountId"
    RESOURCE_TYPE = "ResourceType"
    RESOURCE_ID = "ResourceId"
    ZONE_ID = "ZoneId"


class DeploymentOrder(BaseModel):
    """A user's deployVirtualMachine, with ids already parsed."""

    model_config = ConfigDict(frozen=True)

    account_id: UUID
    zone_id: UUID
    service_offering_id: UUID
    template_id: UUID
    network_id: UUID
    name: str
    display_name: str
    root_disk_size_gib: int | None = None


class DeployVirtualMachineRequest(BaseModel):
    job_id: UUID
    order: DeploymentOrder
    summary: str


class SimulatorFaultChange(BaseModel):
    """configureSimulator: add a fault (fail or delay an operation, on one host or all) or
    remove one."""

    job_id: UUID
    account_id: UUID
    fault_id: UUID
    remove: bool = False
    operation: str = "*"
    action: str = "fail"
    host_id: UUID | None = None
    delay_seconds: float = 0.0
    error_code: int = 534
    message: str = ""


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


class VirtualMachineOperationRequest(BaseModel):
    """One operation on one VM: the input of its job workflow."""

    job_id: UUID
    vm_id: UUID
    operation: VmOperation
    account_id: UUID
    summary: str
    #: stop (and the stop inside destroy): power off without asking the guest.
    forced: bool = False
    #: destroy: expunge at once instead of after the expunge delay.
    expunge: bool = False
    expunge_delay_seconds: int = EXPUNGE_DELAY_SECONDS
    #: migrate: the host to move the VM to; None lets the planner choose one in its cluster.
    host_id: UUID | None = None
    #: VM snapshots: the snapshot made (its id derived from the job's), reverted to or deleted.
    snapshot_id: UUID | None = None
    #: snapshot: its name, and whether to capture the running VM's memory.
    snapshot_name: str | None = None
    memory: bool = False
    #: change the service offering: the offering the (stopped) VM takes.
    service_offering_id: UUID | None = None
    #: restore: the template of the new root volume; None means the VM's own template.
    template_id: UUID | None = None

    def same_request_as(self, other: VirtualMachineOperationRequest) -> bool:
        """Two submissions asking for the same thing (a repeated click). Two snapshot creates
        are never the same: each makes a snapshot of its own."""
        if self.operation is VmOperation.SNAPSHOT:
            return False
        return (
            self.operation,
            self.forced,
            self.expunge,
            self.host_id,
            self.snapshot_id,
            self.service_offering_id,
            self.template_id,
        ) == (
            other.operation,
            other.forced,
            other.expunge,
            other.host_id,
            other.snapshot_id,
            other.service_offering_id,
            other.template_id,
        )


class VmJobSubmission(BaseModel):
    """A job handed to a VM's queue. Exactly one of `operation` and `deployment` is set."""

    job_id: UUID
    job_type: str
    account_id: UUID
    zone_id: UUID | None = None
    summary: str
    details: str = ""
    #: The request's fingerprint: the same Idempotency-Key for a different request is refused.
    fingerprint: str = ""
    operation: VirtualMachineOperationRequest | None = None
    deployment: DeployVirtualMachineRequest | None = None
    #: A volume job (attach, resize, ...): in its VM's queue, or in the volume's own queue.
    volume: VolumeOperationRequest | None = None


class VmJobAccepted(BaseModel):
    """What the queue answers a submission: the job that will do it (a new one, or the pending
    identical one it joined), and whether the idempotency fingerprint matched."""

    job_id: UUID
    joined: bool = False
    sequence: int = 0
    conflict: bool = False


class VmQueueEntry(BaseModel):
    job_id: UUID
    job_type: str
    summary: str
    status: str  # queued | running
    sequence: int
    submitted_at: datetime


class VmQueueState(BaseModel):
    """The VM queue workflow's input, and what it carries across continue-as-new."""

    vm_id: UUID
    account_id: UUID
    zone_id: UUID | None = None
    #: What the queue serializes: a VM (`vm/<id>`, the default) or a detached volume
    #: (`volume/<id>`); `vm_id` then holds the volume's id.
    resource_type: str = "VirtualMachine"
    next_sequence: int = 1
    expunge_at: datetime | None = None
    expunge_attempts: int = 0
    expunge_source_job: UUID | None = None
    expunge_retry_seconds: float = 60.0
    removed: bool = False
    #: Recently submitted job ids with their request fingerprints (idempotent resubmission).
    recent_jobs: dict[str, str] = Field(default_factory=dict)


#: The workflow type of a VM's queue, and its workflow id.
VM_QUEUE_WORKFLOW = "VirtualMachineQueue"


def vm_queue_id(vm_id: UUID | str) -> str:
    return f"vm/{vm_id}"


# -- volumes ---------------------------------------------------------------------------------
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


class VolumeOperationRequest(BaseModel):
    """One operation on one volume: the input of its job workflow."""

    job_id: UUID
    volume_id: UUID
    operation: VolumeOperation
    account_id: UUID
    summary: str
    #: attach: the VM to plug the volume into.
    vm_id: UUID | None = None
    #: resize: the new size; shrinking needs `shrink_ok`.
    size_bytes: int | None = None
    shrink_ok: bool = False
    #: migrate: the primary storage pool to move the disk to.
    pool_id: UUID | None = None
    creation: VolumeCreation | None = None
    #: Snapshot jobs: the snapshot taken (its id derived from the job's), reverted to, deleted,
    #: or made into a volume (then `volume_id` is the new volume's) or a template.
    snapshot_id: UUID | None = None
    #: The name of what the job makes: a snapshot, a volume or a template.
    name: str | None = None
    #: A snapshot taken by a recurring policy: the job prunes the policy's oldest afterwards.
    policy_id: UUID | None = None
    #: A template made from a snapshot: its id (derived from the job's) and OS type.
    template_id: UUID | None = None
    os_type: str | None = None

    def same_request_as(self, other: VolumeOperationRequest) -> bool:
        """Two submissions asking for the same thing (a repeated click). Two snapshot, volume
        or template creations are never the same: each makes one of its own."""
        if self.operation in _MAKES_SOMETHING_NEW:
            return False
        return (
            self.volume_id,
            self.operation,
            self.vm_id,
            self.size_bytes,
            self.shrink_ok,
            self.pool_id,
            self.snapshot_id,
        ) == (
            other.volume_id,
            other.operation,
            other.vm_id,
            other.size_bytes,
            other.shrink_ok,
            other.pool_id,
            other.snapshot_id,
        )


_MAKES_SOMETHING_NEW = frozenset(
    {
        VolumeOperation.SNAPSHOT,
        VolumeOperation.CREATE_FROM_SNAPSHOT,
        VolumeOperation.CREATE_TEMPLATE_FROM_SNAPSHOT,
    }
)


VmJobSubmission.model_rebuild()

VOLUME_RESOURCE = "Volume"


def volume_queue_id(volume_id: UUID | str) -> str:
    """The queue of a detached volume (an attached one uses its VM's, `vm/<vm_id>`)."""
    return f"volume/{volume_id}"
