"""The event log (listEvents): who asked for what, when, and how it ended.

CloudStack keeps a second, human-facing record beside its async jobs: `VM.START`, `VM.STOP`,
`VOLUME.CREATE` ... each logged as Scheduled, Started and Completed, with a level (INFO or
ERROR), a description and the account that asked. Stratus derives the same log from its domain
events instead of writing it by hand at every call site, so it can never miss a step the domain
recorded, and it rebuilds identically from the event store like every other read model.

Rows come from two sources:

- a job's life (`Job` events): `Started` gives the Scheduled row (at the time the API accepted
  it), `Began` (or, for a job recorded only when its turn came, its first step) the Started row
  (a job cancelled while still queued never starts, and its log must not say it did), and
  `Succeeded` / `Failed` / `Cancelled` the Completed row;
- what happened without anyone asking: a VM's power state followed from its hypervisor by the
  power-state sync (`FollowAgentPowerOnReport` and friends), logged in the VM owner's account.

The same projection keeps the alert listing (`projections.alerts`): one row per `Alert`.

Every row's id is derived from the domain event that caused it (originator id, version and
the row's role), and every column from the event store alone, so a replay writes the same rows.
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic
from psycopg import sql
from psycopg_pool import ConnectionPool

from domain.account import Account
from domain.alert import Alert
from domain.cloud import Cloud
from domain.job import Job
from domain.virtual_machine import VirtualMachine, VmEvent
from projections.alerts import ALERT_TOPICS, ALERTS, alert_row
from projections.read_model import AggregateStates, ReadModelView, Row, Table, event_topics

EVENT_LOG = Table(
    "event_log",
    {
        "id": "uuid PRIMARY KEY",
        "type": "text NOT NULL",
        "level": "text NOT NULL",
        "state": "text NOT NULL",
        "description": "text NOT NULL",
        "account_id": "uuid NOT NULL",
        "account_name": "text",
        "username": "text NOT NULL",
        "resource_type": "text NOT NULL",
        "resource_id": "uuid NOT NULL",
        "zone_id": "uuid",
        "job_id": "uuid",
        "job_type": "text",
        "outcome": "text",
        "error_code": "integer",
        "error_text": "text",
        "source_event": "text NOT NULL",
        "created": "timestamptz NOT NULL",
    },
    indexes=(
        "account_id, created, id",
        "created, id",
        "resource_id, created, id",
        "job_id",
        "type, created, id",
    ),
)

#: Who is named as the author of a change no one asked for (CloudStack logs these as "system").
SYSTEM_USER = "system"

#: Namespace of the row ids: uuid5 of "<originator id>/<version>/<role>".
EVENT_LOG_NAMESPACE = uuid.UUID("8f0d2a4e-5b7c-4c1e-9a63-2f4b7e1d9c05")


class EventLevel(StrEnum):
    INFO = "INFO"
    ERROR = "ERROR"


class EventState(StrEnum):
    """CloudStack's event states: an async job is logged Scheduled, Started, then Completed."""

    SCHEDULED = "Scheduled"
    STARTED = "Started"
    COMPLETED = "Completed"


#: Job types as CloudStack names their events. Types not listed are named by `event_type_of`.
JOB_EVENT_TYPES: Mapping[str, str] = {
    "DeployVirtualMachine": "VM.CREATE",
    "StartVirtualMachine": "VM.START",
    "StopVirtualMachine": "VM.STOP",
    "RebootVirtualMachine": "VM.REBOOT",
    "DestroyVirtualMachine": "VM.DESTROY",
    "RecoverVirtualMachine": "VM.RECOVER",
    "ExpungeVirtualMachine": "VM.EXPUNGE",
    "MigrateVirtualMachine": "VM.MIGRATE",
    "MigrateVirtualMachineWithVolume": "VM.MIGRATE",
    "ScaleVirtualMachine": "VM.UPGRADE",
    "AddHost": "HOST.ADD",
    "PrepareHostForMaintenance": "MAINT.PREPARE",
    "CancelHostMaintenance": "MAINT.CANCEL",
    "IssueOutOfBandManagementPowerAction": "HOST.OOBM.POWERACTION",
    "RestartVmsOfFencedHost": "HA.VM.RESTART",
    "CreateVolume": "VOLUME.CREATE",
    "AttachVolume": "VOLUME.ATTACH",
    "DetachVolume": "VOLUME.DETACH",
    "ResizeVolume": "VOLUME.RESIZE",
    "MigrateVolume": "VOLUME.MIGRATE",
    "DeleteVolume": "VOLUME.DELETE",
    "DestroyVolume": "VOLUME.DESTROY",
    "RecoverVolume": "VOLUME.RECOVER",
    "CreateSnapshot": "SNAPSHOT.CREATE",
    "DeleteSnapshot": "SNAPSHOT.DELETE",
    "RevertSnapshot": "SNAPSHOT.REVERT",
    "CreateVmSnapshot": "VMSNAPSHOT.CREATE",
    "RevertToVmSnapshot": "VMSNAPSHOT.REVERTTO",
    "DeleteVmSnapshot": "VMSNAPSHOT.DELETE",
    "CreateNetwork": "NETWORK.CREATE",
    "DeleteNetwork": "NETWORK.DELETE",
    "RestartNetwork": "NETWORK.RESTART",
}

#: Out-of-band VM changes (no job): the power-state sync following what the hypervisor reports.
POWER_ON = "VM.POWER.ON"
POWER_OFF = "VM.POWER.OFF"
OUT_OF_BAND_VM_EVENTS: Mapping[str, str] = {
    VmEvent.FOLLOW_AGENT_POWER_ON_REPORT.value: POWER_ON,
    VmEvent.AGENT_REPORT_RUNNING.value: POWER_ON,
    VmEvent.FOLLOW_AGENT_POWER_OFF_REPORT.value: POWER_OFF,
    VmEvent.AGENT_REPORT_STOPPED.value: POWER_OFF,
}

#: Nouns that CloudStack abbreviates in event types.
_NOUNS = {"VirtualMachine": "VM", "Maintenance": "MAINT", "Template": "TEMPLATE"}
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z][a-z0-9]*|[a-z0-9]+")


def event_type_of(job_type: str) -> str:
    """CloudStack's event type for a job type; a type nobody listed still gets a readable name.

    An unlisted `VerbNoun` job type reads `NOUN.VERB` (`ConfigureSimulator` →
    `SIMULATOR.CONFIGURE`), as CloudStack's own names do; anything else becomes `JOB.<TYPE>`.
    A new job type must never stop the log (or the projector) from recording it.
    """
    known = JOB_EVENT_TYPES.get(job_type)
    if known is not None:
        return known
    words = _WORD.findall(job_type)
    if len(words) >= 2 and words[0][:1].isupper():
        noun = "".join(words[1:])
        return f"{_NOUNS.get(noun, noun.upper())}.{words[0].upper()}"
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", job_type).strip("_").upper()
    return f"JOB.{cleaned or 'UNKNOWN'}"


def row_id(originator_id: UUID, version: int, role: str) -> UUID:
    """The row's id, from the domain event that caused it: the same on every replay."""
    return uuid.uuid5(EVENT_LOG_NAMESPACE, f"{originator_id}/{version}/{role}")


@dataclass(frozen=True)
class _JobFacts:
    """What a job's `Started` event says, needed again for its later rows."""

    job_type: str
    account_id: UUID
    resource_type: str
    resource_id: UUID
    zone_id: UUID | None
    summary: str


@dataclass(frozen=True)
class _VmFacts:
    name: str
    account_id: UUID
    zone_id: UUID


class EventLogView(ReadModelView):
    tables = (EVENT_LOG, ALERTS)


class EventLogProjection(Projection[ReadModelView]):
    """Turns job and out-of-band VM events into event-log rows (zero, one or two per event).

    Facts fixed at an aggregate's creation (a job's type and account, a VM's owner, an account's
    name) are cached; after a restart they are read back from the aggregate's first version,
    which never changes, so the rows do not depend on when the projection ran.
    """

    name = "event_log_projection"
    topics = tuple(
        sorted({*event_topics(Job), get_topic(VirtualMachine.Transitioned), *ALERT_TOPICS})  # type: ignore[attr-defined]
    )
    cloud_env: ClassVar[Mapping[str, str] | None] = None
    CACHE_SIZE = 10_000

    def __init__(self, view: ReadModelView) -> None:
        super().__init__(view)
        self._jobs: OrderedDict[UUID, _JobFacts] = OrderedDict()
        self._vms: OrderedDict[UUID, _VmFacts] = OrderedDict()
        self._account_names: dict[UUID, str | None] = {}
        self._cloud: Cloud | None = None
        self._alerts = AggregateStates(lambda: self.cloud_env)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        if isinstance(domain_event, Alert.Event):
            alert = self._alerts.after(domain_event)
            self.view.record(ALERTS.name, [alert_row(alert)], tracking)
            return
        self.view.record(EVENT_LOG.name, self.rows_of(domain_event), tracking)

    def rows_of(self, domain_event: Any) -> list[Row]:
        if isinstance(domain_event, Job.Started):  # type: ignore[attr-defined]
            return self._job_started(domain_event)
        if isinstance(domain_event, Job.Began):  # type: ignore[attr-defined]
            return [self._job_began(domain_event, domain_event.started_at)]
        if isinstance(domain_event, Job.StepEntered):  # type: ignore[attr-defined]
            return self._job_step(domain_event)
        if isinstance(domain_event, Job.Succeeded | Job.Failed | Job.Cancelled):  # type: ignore[attr-defined]
            return [self._job_ended(domain_event)]
        if isinstance(domain_event, VirtualMachine.Transitioned):  # type: ignore[attr-defined]
            return self._vm_transitioned(domain_event)
        return []

    # -- jobs ---------------------------------------------------------------------------------
    def _job_started(self, e: Any) -> list[Row]:
        facts = _JobFacts(
            job_type=e.job_type,
            account_id=e.account_id,
            resource_type=e.resource_type,
            resource_id=e.resource_id,
            zone_id=e.zone_id,
            summary=e.summary,
        )
        self._remember(self._jobs, e.originator_id, facts)
        return [
            self._job_row(
                e,
                facts,
                role="scheduled",
                state=EventState.SCHEDULED,
                description=f"{facts.summary}: scheduled",
                created=e.submitted_at,
            )
        ]

    def _job_step(self, e: Any) -> list[Row]:
        # A job recorded by itself (not at submission) began with its first step, right
        # after Started; one recorded at submission has a Began event of its own.
        if e.originator_version != Aggregate.INITIAL_VERSION + 1:
            return []
        return [self._job_began(e, e.timestamp, f" ({e.step})")]

    def _job_began(self, e: Any, at: Any, detail: str = "") -> Row:
        facts = self._job_facts(e.originator_id)
        return self._job_row(
            e,
            facts,
            role="started",
            state=EventState.STARTED,
            description=f"{facts.summary}: started{detail}",
            created=at,
        )

    def _job_ended(self, e: Any) -> Row:
        facts = self._job_facts(e.originator_id)
        if isinstance(e, Job.Failed):  # type: ignore[attr-defined]
            return self._job_row(
                e,
                facts,
                role="completed",
                state=EventState.COMPLETED,
                level=EventLevel.ERROR,
                outcome="failed",
                error_code=e.error_code,
                error_text=e.error_text,
                description=f"{facts.summary}: failed with error {e.error_code}: {e.error_text}",
                created=e.timestamp,
            )
        if isinstance(e, Job.Cancelled):  # type: ignore[attr-defined]
            return self._job_row(
                e,
                facts,
                role="completed",
                state=EventState.COMPLETED,
                outcome="cancelled",
                error_text=e.reason,
                description=f"{facts.summary}: cancelled ({e.reason})",
                created=e.timestamp,
            )
        return self._job_row(
            e,
            facts,
            role="completed",
            state=EventState.COMPLETED,
            outcome="succeeded",
            description=f"{facts.summary}: completed",
            created=e.timestamp,
        )

    def _job_row(
        self,
        e: Any,
        facts: _JobFacts,
        *,
        role: str,
        state: EventState,
        description: str,
        created: datetime,
        level: EventLevel = EventLevel.INFO,
        outcome: str | None = None,
        error_code: int | None = None,
        error_text: str | None = None,
    ) -> Row:
        account_name = self._account_name(facts.account_id)
        return {
            "id": row_id(e.originator_id, e.originator_version, role),
            "type": event_type_of(facts.job_type),
            "level": level.value,
            "state": state.value,
            "description": description,
            "account_id": facts.account_id,
            "account_name": account_name,
            "username": account_name or str(facts.account_id),
            "resource_type": facts.resource_type,
            "resource_id": facts.resource_id,
            "zone_id": facts.zone_id,
            "job_id": e.originator_id,
            "job_type": facts.job_type,
            "outcome": outcome,
            "error_code": error_code,
            "error_text": error_text,
            "source_event": _event_name(e),
            "created": created,
        }

    def _job_facts(self, job_id: UUID) -> _JobFacts:
        facts = self._jobs.get(job_id)
        if facts is None:
            job: Any = self._first_version(job_id)
            facts = _JobFacts(
                job_type=job.job_type,
                account_id=job.account_id,
                resource_type=job.resource_type,
                resource_id=job.resource_id,
                zone_id=job.zone_id,
                summary=job.summary,
            )
            self._remember(self._jobs, job_id, facts)
        return facts

    # -- out-of-band VM changes ---------------------------------------------------------------
    def _vm_transitioned(self, e: Any) -> list[Row]:
        event_type = OUT_OF_BAND_VM_EVENTS.get(e.vm_event)
        if event_type is None:
            return []  # a step of some job: the job's own rows tell it
        facts = self._vms.get(e.originator_id)
        if facts is None:
            vm: Any = self._first_version(e.originator_id)
            facts = _VmFacts(name=vm.name, account_id=vm.account_id, zone_id=vm.zone_id)
            self._remember(self._vms, e.originator_id, facts)
        why = f": {e.reason}" if e.reason else ""
        return [
            {
                "id": row_id(e.originator_id, e.originator_version, "out-of-band"),
                "type": event_type,
                "level": EventLevel.INFO.value,
                "state": EventState.COMPLETED.value,
                "description": f"{facts.name}: {e.old_state} → {e.new_state}{why}",
                "account_id": facts.account_id,
                "account_name": self._account_name(facts.account_id),
                "username": SYSTEM_USER,
                "resource_type": "VirtualMachine",
                "resource_id": e.originator_id,
                "zone_id": facts.zone_id,
                "job_id": None,
                "job_type": None,
                "outcome": e.vm_event,
                "error_code": None,
                "error_text": None,
                "source_event": _event_name(e),
                "created": e.timestamp,
            }
        ]

    # -- facts from the event store -----------------------------------------------------------
    def _account_name(self, account_id: UUID) -> str | None:
        """An account's name is fixed when it is created, so its first version says it."""
        if account_id not in self._account_names:
            try:
                account: Account = self._first_version(account_id)  # type: ignore[assignment]
                self._account_names[account_id] = account.name
            except AggregateNotFoundError:
                self._account_names[account_id] = None
        return self._account_names[account_id]

    def _first_version(self, aggregate_id: UUID) -> Any:
        if self._cloud is None:
            self._cloud = Cloud(env=dict(self.cloud_env or {}))
        return self._cloud.repository.get(aggregate_id, version=Aggregate.INITIAL_VERSION)

    def _remember(self, cache: OrderedDict[UUID, Any], key: UUID, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > self.CACHE_SIZE:
            cache.popitem(last=False)


def _event_name(domain_event: Any) -> str:
    return type(domain_event).__qualname__


# -- the listing ------------------------------------------------------------------------------
#: Columns a listing may filter on by equality.
FILTERABLE = frozenset(
    {"type", "level", "state", "account_id", "resource_id", "job_id", "resource_type"}
)

MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True)
class EventLogPage:
    rows: list[Row]
    count: int
    #: (created, id) of the last row when more rows follow, for the next keyset cursor.
    last: tuple[datetime, UUID] | None


def page_event_log(
    pool: ConnectionPool[Any],
    filters: Mapping[str, Any],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 50,
    after: tuple[datetime, UUID] | None = None,
    page: int | None = None,
) -> EventLogPage:
    """Rows oldest first, filtered by equality on indexed columns and by a time window
    (`start` ≤ created ≤ `end`); `after` continues a keyset page, `page` counts pages."""
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in filters.items():
        if value is None:
            continue
        if column not in FILTERABLE:
            raise KeyError(f"{EVENT_LOG.name} cannot be filtered on {column}")
        if isinstance(value, list):
            clauses.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier(column)))
        else:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
        params.append(value)
    if start is not None:
        clauses.append(sql.SQL("created >= %s"))
        params.append(start)
    if end is not None:
        clauses.append(sql.SQL("created <= %s"))
        params.append(end)
    table = sql.Identifier(EVENT_LOG.name)
    count_query = sql.SQL("SELECT count(*) AS n FROM {} {}").format(table, _where(clauses))
    page_clauses = list(clauses)
    page_params = list(params)
    if after is not None:
        page_clauses.append(sql.SQL("(created, id) > (%s, %s)"))
        page_params.extend(after)
    # PostgreSQL's OFFSET is a bigint: a page far beyond the end is simply empty.
    offset = min((page - 1) * limit if page and after is None else 0, MAX_OFFSET)
    rows_query = sql.SQL("SELECT * FROM {} {} ORDER BY created, id LIMIT %s OFFSET %s").format(
        table, _where(page_clauses)
    )
    with pool.connection() as conn:
        counted = conn.execute(count_query, params).fetchone()
        rows = conn.execute(rows_query, [*page_params, limit + 1, offset]).fetchall()
    last = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = (rows[-1]["created"], rows[-1]["id"])
    return EventLogPage(rows=list(rows), count=int(counted["n"]) if counted else 0, last=last)


def _where(clauses: Sequence[sql.Composable]) -> sql.Composable:
    if not clauses:
        return sql.SQL("")
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(clauses)
