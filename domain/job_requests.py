"""What a job is asked to do: the inputs the API submits and the workflows run.

They live in the domain because both sides of the Temporal boundary need them: the API builds
them (and must not import workflow code) and the workflows receive them. Fields added later get
defaults, so histories recorded with older inputs still replay.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict


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
