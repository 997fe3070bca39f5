"""The API's request and response models (XCreate / XPublic / Listing[X])."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

HOSTNAME_PATTERN = r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"


class Listing(BaseModel, Generic[T]):
    data: list[T]
    count: int = Field(description="rows matching the filters, over all pages")
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page")


class VirtualMachineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zone_id: UUID
    service_offering_id: UUID
    template_id: UUID
    network_id: UUID | None = Field(
        default=None, description="guest network; default: the zone's first shared network"
    )
    name: str | None = Field(
        default=None,
        pattern=HOSTNAME_PATTERN,
        max_length=63,
        description="host name (RFC 1123 label); default: derived from the job id",
    )
    display_name: str | None = Field(default=None, min_length=1, max_length=255)
    root_disk_size_gib: int | None = Field(default=None, ge=1, le=65536)
    account_id: UUID | None = Field(
        default=None, description="admins only: deploy on behalf of this account"
    )


class JobAccepted(BaseModel):
    job_id: UUID
    virtual_machine_id: UUID
    job_url: str
    temporal_url: str


class VirtualMachinePublic(BaseModel):
    id: UUID
    name: str
    display_name: str
    account_id: UUID
    zone_id: UUID
    state: str
    host_id: UUID | None
    last_host_id: UUID | None
    service_offering_id: UUID
    template_id: UUID
    network_id: UUID
    hypervisor: str
    cpu_count: int
    cpu_speed_mhz: int
    memory_mib: int
    ip_address: str | None
    mac_address: str | None
    root_volume_id: UUID
    ha_enabled: bool
    last_reason: str | None
    created_by_job: UUID
    created: datetime
    updated: datetime


class VolumePublic(BaseModel):
    id: UUID
    name: str
    account_id: UUID
    zone_id: UUID
    vm_id: UUID | None
    volume_type: str
    state: str
    size_bytes: int
    pool_id: UUID | None
    path: str | None
    template_id: UUID | None
    disk_offering_id: UUID | None
    device_id: int | None
    created: datetime
    updated: datetime


class JobPublic(BaseModel):
    id: UUID
    job_type: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    jobstatus: int = Field(
        description="CloudStack's: 0 in progress, 1 succeeded, 2 failed, 3 cancelled"
    )
    step: str | None
    summary: str | None
    result: dict[str, Any] | None
    error_code: int | None
    error_text: str | None
    resource_type: str | None
    resource_id: UUID | None
    account_id: UUID | None
    zone_id: UUID | None
    created: datetime | None
    completed: datetime | None
    temporal_url: str


class HostPublic(BaseModel):
    id: UUID
    name: str
    zone_id: UUID
    pod_id: UUID
    cluster_id: UUID
    hypervisor: str
    address: str
    status: str
    resource_state: str
    cpu_count: int
    cpu_speed_mhz: int
    cpu_total_mhz: int
    cpu_used_mhz: int
    memory_total_mib: int
    memory_used_mib: int
    vm_count: int
    tags: list[str]
    created: datetime
    updated: datetime


class InventoryItemPublic(BaseModel):
    id: UUID
    kind: str
    name: str
    zone_id: UUID | None
    details: dict[str, Any]
    created: datetime
    updated: datetime


class SimulatorFaultCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operation: str = Field(description="driver operation to affect, or * for all")
    action: str = Field(pattern="^(fail|delay)$")
    host_id: UUID | None = Field(default=None, description="only this host; default: every host")
    delay_seconds: float = Field(default=0.0, ge=0, le=3600)
    error_code: int = Field(default=534, description="534 (try another host) or 530")
    message: str = Field(default="", max_length=500)


class SimulatorFaultPublic(BaseModel):
    fault_id: UUID
    operation: str
    action: str
    host_id: UUID | None
    delay_seconds: float
    error_code: int
    message: str
