"""What a job is asked to do: the inputs the API submits and the workflows run.

They live in the domain because both sides of the Temporal boundary need them: the API builds
them (and must not import workflow code) and the workflows receive them. Fields added later get
defaults, so histories recorded with older inputs still replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.vm_requests import (
    EXPUNGE_DELAY_SECONDS,
    VmOperation,
    VmOperationRequest,
    VmRequest,
)
from domain.volume_requests import (
    VOLUME_RESOURCE,
    VolumeCreation,
    VolumeOperation,
    VolumeOperationRequest,
)

#: The operations' own input models live in domain/vm_requests.py and domain/volume_requests.py;
#: the queue's submission carries their unions, and their enums stay importable from here.
__all__ = [
    "ENQUEUE_SIGNAL",
    "EXPUNGE_DELAY_SECONDS",
    "VM_QUEUE_WORKFLOW",
    "VOLUME_RESOURCE",
    "DeployVirtualMachineRequest",
    "DeploymentOrder",
    "JobAttribute",
    "JobQueue",
    "SimulatorFaultChange",
    "VmJobAccepted",
    "VmJobSubmission",
    "VmOperation",
    "VmOperationRequest",
    "VmQueueEntry",
    "VmQueueState",
    "VolumeCreation",
    "VolumeOperation",
    "VolumeOperationRequest",
    "vm_queue_id",
    "volume_queue_id",
]


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
    #: Submitted through the queue's `enqueue` signal: the deployment waits for its turn like
    #: every other job. Deployments submitted earlier (the `submit` update) started at once.
    waits_for_turn: bool = False


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


class VmJobSubmission(BaseModel):
    """A job handed to a VM's (or a detached volume's) queue. Exactly one of `operation`,
    `deployment` and `volume` is set; `operation` and `volume` are the discriminated unions of
    the operations' own models."""

    job_id: UUID
    job_type: str
    account_id: UUID
    zone_id: UUID | None = None
    summary: str
    details: str = ""
    #: The request's fingerprint: the same Idempotency-Key for a different request is refused.
    fingerprint: str = ""
    operation: VmOperationRequest | None = None
    deployment: DeployVirtualMachineRequest | None = None
    #: A volume job (attach, resize, ...): in its VM's queue, or in the volume's own queue.
    volume: VolumeOperationRequest | None = None
    #: The queue it is submitted to (`vm/<id>` or `volume/<id>`), recorded with the job so a
    #: cancel can reach it there before the queue has started its workflow.
    queue_id: str = ""


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


#: The workflow type of a VM's (or a detached volume's) queue, and its workflow id.
VM_QUEUE_WORKFLOW = "VirtualMachineQueue"
#: The queue's signal that hands it a job (sent with signal-with-start: no worker waited on).
ENQUEUE_SIGNAL = "enqueue"


def vm_queue_id(vm_id: UUID | str) -> str:
    return f"vm/{vm_id}"


def volume_queue_id(volume_id: UUID | str) -> str:
    """The queue of a detached volume (an attached one uses its VM's, `vm/<vm_id>`)."""
    return f"volume/{volume_id}"


@dataclass(frozen=True)
class JobQueue:
    """Where a job waits for its turn: its VM's queue (`vm/<id>`, a deployment's too), or a
    detached volume's (`volume/<id>`). `state` starts the queue when none runs."""

    workflow_id: str
    state: VmQueueState

    @classmethod
    def of_vm(cls, vm_id: UUID, account_id: UUID, zone_id: UUID | None) -> JobQueue:
        return cls(
            vm_queue_id(vm_id), VmQueueState(vm_id=vm_id, account_id=account_id, zone_id=zone_id)
        )

    @classmethod
    def of_volume(cls, volume_id: UUID, account_id: UUID, zone_id: UUID | None) -> JobQueue:
        return cls(
            volume_queue_id(volume_id),
            VmQueueState(
                vm_id=volume_id,
                account_id=account_id,
                zone_id=zone_id,
                resource_type=VOLUME_RESOURCE,
            ),
        )

    @property
    def summary(self) -> str:
        kind = "VM" if self.state.resource_type == "VirtualMachine" else "volume"
        return f"Job queue of {kind} {self.state.vm_id}: its operations, one at a time"

    def attributes(self) -> dict[JobAttribute, str]:
        """The queue's search attributes, so an operator finds it in the Temporal UI."""
        values = {
            JobAttribute.JOB_TYPE: VM_QUEUE_WORKFLOW,
            JobAttribute.ACCOUNT_ID: str(self.state.account_id),
            JobAttribute.RESOURCE_TYPE: self.state.resource_type,
            JobAttribute.RESOURCE_ID: str(self.state.vm_id),
        }
        if self.state.zone_id is not None:
            values[JobAttribute.ZONE_ID] = str(self.state.zone_id)
        return values


def handed_over(
    request: VmRequest,
    job_type: str,
    zone_id: UUID,
    details: list[str],
    fingerprint: str,
) -> tuple[JobQueue, VmJobSubmission]:
    """A VM job that another job hands to the VM's queue (a maintenance's migrate, an HA
    restart), as the API would hand it, and the queue it joins."""
    submission = VmJobSubmission(
        job_id=request.job_id,
        job_type=job_type,
        account_id=request.account_id,
        zone_id=zone_id,
        summary=request.summary,
        details="\n".join(details),
        fingerprint=fingerprint,
        operation=request,  # type: ignore[arg-type]  # one member of the union
    )
    return JobQueue.of_vm(request.vm_id, request.account_id, zone_id), submission
