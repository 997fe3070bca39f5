"""The API's request and response models (XCreate / XPublic / Listing[X])."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.catalog import HypervisorType
from domain.cluster_connection import ConnectionSettings
from domain.host_ha import HaSettings
from domain.locations import NetworkAddress, StoragePath
from domain.quantities import (
    DAY_SECONDS,
    CapacityFraction,
    DiskGib,
    OverprovisioningFactor,
    StorageBytes,
)
from domain.simulator_fault import SimulatorOperation
from domain.text import Label, Message, Name

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
    display_name: Name | None = None
    root_disk_size_gib: DiskGib | None = None
    account_id: UUID | None = Field(
        default=None, description="admins only: deploy on behalf of this account"
    )


class JobAccepted(BaseModel):
    job_id: UUID
    virtual_machine_id: UUID
    job_url: str
    temporal_url: str
    #: createVMSnapshot: the snapshot the job makes, known before it runs.
    vm_snapshot_id: UUID | None = None


class VirtualMachinePublic(BaseModel):
    """A VM as its owner sees it: where it runs (hosts) is for administrators."""

    id: UUID
    name: str
    display_name: str
    account_id: UUID
    zone_id: UUID
    state: str
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
    removed: datetime | None = Field(default=None, description="when it was expunged")


class VirtualMachineAdminPublic(VirtualMachinePublic):
    """A VM as an administrator sees it: with its host."""

    host_id: UUID | None
    last_host_id: UUID | None


class VolumePublic(BaseModel):
    """A volume as its owner sees it: where it lies (pools, paths) is for administrators."""

    id: UUID
    name: str
    account_id: UUID
    zone_id: UUID
    vm_id: UUID | None
    volume_type: str
    state: str
    size_bytes: int
    template_id: UUID | None
    disk_offering_id: UUID | None
    device_id: int | None
    created: datetime
    updated: datetime


class VolumeAdminPublic(VolumePublic):
    """A volume as an administrator sees it: with its pool and path."""

    pool_id: UUID | None
    path: str | None


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


class HaMovePublic(BaseModel):
    """One move of a host in CloudStack's HA machine."""

    state: str
    since: datetime | None
    reason: str
    ha_enabled: bool


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
    #: The maintenance job that took the host into (or is taking it into) maintenance, and
    #: why it is in ErrorInMaintenance: one line per VM that could not move.
    maintenance_job_id: UUID | None = None
    maintenance_errors: list[str] = Field(default_factory=list)
    #: Out-of-band management: the BMC's driver and address (its login is the agent's),
    #: whether power actions are allowed, and what the BMC last reported.
    oobm_driver: str | None = None
    oobm_address: str | None = None
    oobm_enabled: bool = False
    power_state: str = "Unknown"
    power_state_at: datetime | None = None
    #: Host HA: whether it is on, where the host is in CloudStack's HA machine and why.
    ha_enabled: bool = False
    ha_state: str = "Disabled"
    ha_reason: str = ""
    ha_history: list[HaMovePublic] = Field(
        default_factory=list, description="its last 20 moves in the HA machine, oldest first"
    )
    created: datetime
    updated: datetime

    @field_validator("maintenance_errors", "ha_history", mode="before")
    @classmethod
    def _nothing_recorded(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator(
        "oobm_enabled", "power_state", "ha_enabled", "ha_state", "ha_reason", mode="before"
    )
    @classmethod
    def _row_before_the_column(cls, value: Any, info: Any) -> Any:
        """A row projected before these columns existed holds NULL."""
        if value is None:
            return cls.model_fields[info.field_name].default
        return value


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

    operation: SimulatorOperation = Field(description="driver operation to affect, or * for all")
    action: Literal["fail", "delay"]
    host_id: UUID | None = Field(default=None, description="only this host; default: every host")
    delay_seconds: float = Field(default=0.0, ge=0, le=3600, allow_inf_nan=False)
    error_code: Literal[530, 534] = Field(default=534, description="534 (try another host) or 530")
    message: Message = ""


class SimulatorFaultPublic(BaseModel):
    fault_id: UUID
    operation: str
    action: str
    host_id: UUID | None
    delay_seconds: float
    error_code: int
    message: str


class VirtualMachineStop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    forced: bool = Field(default=False, description="power off without asking the guest")


class VirtualMachineMigrate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host_id: UUID | None = Field(
        default=None,
        description="a host of the VM's cluster, or of another cluster of its zone (the "
        "disks then move to that cluster's storage); default: the planner chooses one in the "
        "VM's cluster",
    )


class VmSnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    memory: bool = Field(
        default=False, description="also capture the running VM's memory (revert: Running)"
    )


class VmSnapshotPublic(BaseModel):
    id: UUID
    vm_id: UUID
    name: str
    account_id: UUID
    zone_id: UUID
    state: str
    memory: bool
    memory_requested: bool
    is_removed: bool
    created: datetime
    updated: datetime


class VirtualMachineDestroy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expunge: bool = Field(
        default=False,
        description="expunge at once; default: after the expunge delay, recoverable until then",
    )
    forced: bool = Field(default=False, description="if it runs: power off without asking")


class VirtualMachineChangeServiceOffering(BaseModel):
    """changeServiceForVirtualMachine / scaleVirtualMachine of a stopped VM."""

    model_config = ConfigDict(extra="forbid")

    service_offering_id: UUID


class VirtualMachineRestore(BaseModel):
    """restoreVirtualMachine: the template of the new root volume (default: the VM's own)."""

    model_config = ConfigDict(extra="forbid")

    template_id: UUID | None = None


class VmJobPublic(BaseModel):
    """A job in a VM's queue: the running one first, then the queued ones in order."""

    job_id: UUID
    job_type: str
    status: str = Field(description="running or queued")
    position: int = Field(description="0 for the running job, then 1, 2, ... in queue order")
    summary: str
    submitted_at: datetime
    job_url: str


class JobCancelled(BaseModel):
    job_id: UUID
    was: str = Field(description="queued (removed from its queue) or running (unwinding)")
    job_url: str


# -- infrastructure (admin): clusters, hosts and primary storage for real hypervisors ---------
HOST_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$"
#: A Temporal task queue name as Stratus makes them (hypervisor-<cluster id>, stratus-control).
TASK_QUEUE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


class ClusterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pod_id: UUID
    name: Name
    hypervisor: HypervisorType = Field(description="Simulator, KVM, VMware, XenServer or BareMetal")
    cpu_overprovisioning: OverprovisioningFactor = 1.0
    memory_overprovisioning: OverprovisioningFactor = 1.0
    disable_threshold: CapacityFraction = 0.85
    agent_task_queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=TASK_QUEUE_PATTERN,
        description="task queue of the agent serving the cluster; default hypervisor-<cluster "
        "id> for real hypervisors, the control plane's for the simulator",
    )
    connection: ConnectionSettings = Field(
        default_factory=ConnectionSettings,
        description="addresses only: credentials belong to the agent's configuration",
    )
    power_sync_interval_seconds: float = Field(
        default=60.0, ge=1.0, le=DAY_SECONDS, allow_inf_nan=False
    )
    transitional_grace_seconds: float = Field(
        default=600.0, ge=0.0, le=DAY_SECONDS, allow_inf_nan=False
    )


class ClusterPublic(BaseModel):
    id: UUID
    name: str
    zone_id: UUID
    pod_id: UUID
    hypervisor: str
    cpu_overprovisioning: float
    memory_overprovisioning: float
    disable_threshold: float
    agent_task_queue: str | None
    allocation_state: str
    connection: dict[str, Any]
    power_state_sync_workflow_id: str | None = None


class HostCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster_id: UUID
    name: str = Field(min_length=1, max_length=253, pattern=HOST_NAME_PATTERN)
    address: NetworkAddress = Field(
        description="how the agent reaches the host, host[:port] (for bare metal: its BMC's); "
        "no credentials: they belong in the agent's configuration",
    )
    tags: list[Label] = Field(default_factory=list, max_length=32)


class HostJobAccepted(BaseModel):
    job_id: UUID
    host_id: UUID
    job_url: str
    temporal_url: str


class StoragePoolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    scope: Literal["CLUSTER", "ZONE"] = "CLUSTER"
    cluster_id: UUID | None = Field(default=None, description="for a CLUSTER-scoped pool")
    zone_id: UUID | None = Field(default=None, description="for a ZONE-scoped pool")
    path: StoragePath = Field(
        description="libvirt pool path, datastore or SR name; no credentials: they belong in "
        "the agent's configuration"
    )
    capacity_bytes: StorageBytes = Field(description="bytes, at most 2^53 (8 PiB)")
    overprovisioning: OverprovisioningFactor = 2.0
    tags: list[Label] = Field(default_factory=list, max_length=32)


class StoragePoolPublic(BaseModel):
    id: UUID
    name: str
    zone_id: UUID
    scope: str
    cluster_id: UUID | None
    pod_id: UUID | None
    path: str
    capacity_bytes: int
    overprovisioning: float
    tags: list[str]


class EventPublic(BaseModel):
    """One event-log entry (CloudStack's listEvents `event`)."""

    id: UUID
    type: str = Field(description="CloudStack's event type: VM.CREATE, VM.STOP, HOST.ADD, ...")
    level: str = Field(description="INFO, or ERROR when the job failed")
    state: str = Field(description="Scheduled, Started or Completed")
    description: str
    account_id: UUID = Field(description="the account that asked (or owns the resource)")
    account_name: str | None
    domain_id: UUID | None = Field(default=None, description="the account's domain")
    domain: str | None = Field(default=None, description="the account's domain path")
    username: str = Field(description="who asked: the account's name, or `system`")
    resource_type: str
    resource_id: UUID
    zone_id: UUID | None
    job_id: UUID | None = Field(
        description="the job (CloudStack's `parentid`); none when out of band"
    )
    job_type: str | None
    outcome: str | None = Field(
        description="Completed rows: succeeded, failed or cancelled; out of band: the VM event"
    )
    error_code: int | None
    error_text: str | None
    created: datetime


class AlertPublic(BaseModel):
    """One alert (CloudStack's listAlerts `alert`): something an operator must look at."""

    id: UUID
    type: int = Field(description="CloudStack's alert type number: 7 HOST, 8 USERVM, 30 HA_ACTION")
    name: str = Field(description="CloudStack's alert name: ALERT.HOST, ALERT.USERVM, ...")
    subject: str
    description: str
    resource_type: str = Field(description="Host or VirtualMachine")
    resource_id: UUID
    zone_id: UUID
    cluster_id: UUID | None
    archived: bool
    created: datetime = Field(description="when it was raised (CloudStack's `sent`)")


# -- volumes (createVolume, attachVolume, detachVolume, resizeVolume, migrateVolume, deleteVolume)
class VolumeCreate(BaseModel):
    """createVolume: allocated only; the disk is made on primary storage when first attached."""

    model_config = ConfigDict(extra="forbid")

    zone_id: UUID
    disk_offering_id: UUID
    name: Name
    size_gib: DiskGib | None = Field(
        default=None, description="only for a customized disk offering"
    )


class VolumeAttach(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vm_id: UUID


class VolumeResize(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size_gib: DiskGib
    shrink_ok: bool = Field(default=False, description="allow a smaller size (data may be lost)")


class VolumeMigrate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool_id: UUID = Field(description="the primary storage pool to move the disk to")


class VolumeJobAccepted(BaseModel):
    job_id: UUID
    volume_id: UUID
    job_url: str
    temporal_url: str


# -- volume snapshots ------------------------------------------------------------------------
class SnapshotPublic(BaseModel):
    id: UUID
    volume_id: UUID
    name: str
    account_id: UUID
    zone_id: UUID
    volume_type: str
    hypervisor: str
    state: str = Field(
        description="Allocated, Creating, CreatedOnPrimary, BackingUp, BackedUp, Destroying, "
        "Destroyed or Error"
    )
    interval_type: str = Field(description="MANUAL, or the interval of the policy that took it")
    policy_id: UUID | None
    size_bytes: int = Field(description="the volume's size when the snapshot was taken")
    physical_size_bytes: int = Field(description="what the backup occupies on secondary storage")
    on_primary: bool
    secondary_storage_id: UUID | None
    is_removed: bool
    created: datetime
    updated: datetime


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None


class SnapshotJobAccepted(BaseModel):
    job_id: UUID
    snapshot_id: UUID
    job_url: str
    temporal_url: str


class VolumeFromSnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class TemplateFromSnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    os_type: Name | None = Field(default=None, description="default: the source VM's")


class TemplateJobAccepted(BaseModel):
    job_id: UUID
    template_id: UUID
    snapshot_id: UUID
    job_url: str
    temporal_url: str


# -- snapshot policies (createSnapshotPolicy, listSnapshotPolicies, deleteSnapshotPolicies) ---
#: HOURLY, DAILY, WEEKLY or MONTHLY, in any case (CloudStack's intervaltype).
PolicyInterval = Annotated[
    str,
    Field(
        pattern=r"^(?:[Hh][Oo][Uu][Rr][Ll][Yy]|[Dd][Aa][Ii][Ll][Yy]|[Ww][Ee][Ee][Kk][Ll][Yy]"
        r"|[Mm][Oo][Nn][Tt][Hh][Ll][Yy])$"
    ),
]
#: MM[:HH[:D]]: a minute 0-59, an hour 0-23, a day 1-28 (which parts: the interval says).
SCHEDULE_PATTERN = r"^[0-5]?[0-9](?::(?:[01]?[0-9]|2[0-3])(?::(?:0?[1-9]|1[0-9]|2[0-8]))?)?$"
#: An IANA time zone name's characters (whether it names a zone: the domain says).
TimezoneName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*$")
]


class SnapshotPolicyCreate(BaseModel):
    """createSnapshotPolicy: one policy per volume and interval; creating again updates it."""

    model_config = ConfigDict(extra="forbid")

    volume_id: UUID
    interval_type: PolicyInterval = Field(description="HOURLY, DAILY, WEEKLY or MONTHLY")
    schedule: str = Field(
        max_length=8,
        pattern=SCHEDULE_PATTERN,
        description='HOURLY "MM", DAILY "MM:HH", WEEKLY "MM:HH:D" (D 1-7, Sunday 1), '
        'MONTHLY "MM:HH:DD" (DD 1-28): the number of parts follows the interval',
    )
    timezone: TimezoneName = Field(default="UTC", description="IANA time zone of the schedule")
    max_snaps: int = Field(ge=1, le=8, description="how many of the policy's snapshots to keep")


class SnapshotPolicyJobAccepted(BaseModel):
    job_id: UUID
    snapshot_policy_id: UUID
    job_url: str
    temporal_url: str


class SnapshotPolicyPublic(BaseModel):
    id: UUID
    volume_id: UUID
    account_id: UUID
    zone_id: UUID
    interval_type: str
    schedule: str
    timezone: str
    max_snaps: int
    active: bool
    snapshots_taken: int
    created: datetime
    updated: datetime
    next_run_times: list[datetime] | None = Field(
        default=None, description="the schedule's next runs (UTC), when it could be asked"
    )


class AllocationStatePublic(BaseModel):
    """A host or cluster after it was enabled or disabled for new VMs."""

    id: UUID
    name: str
    allocation_state: str


class HostHaPublic(BaseModel):
    """A host's HA after it was switched on or off."""

    host_id: UUID
    name: str
    cluster_id: UUID
    ha_enabled: bool
    ha_state: str
    ha_reason: str


class ClusterHaPublic(BaseModel):
    """A cluster's kvm.ha settings (CloudStack's names: kvm.ha.<setting with dots>)."""

    cluster_id: UUID
    name: str
    settings: HaSettings


class OutOfBandConfigure(BaseModel):
    """configureOutOfBandManagement: how the host's BMC is reached. The login is the agent's
    (`[clusters.oobm]` in its configuration), never the API's."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["ipmitool"] = "ipmitool"
    address: NetworkAddress = Field(description="the BMC's host[:port] (port 623 by default)")


class OutOfBandPublic(BaseModel):
    host_id: UUID
    name: str
    driver: str | None
    address: str | None
    enabled: bool
    power_state: str
    power_state_at: datetime | None = None


class PowerActionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["ON", "OFF", "CYCLE", "RESET", "SOFT", "STATUS"]
