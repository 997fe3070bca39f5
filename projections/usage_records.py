"""Usage records: cutting the projection's intervals into aggregation windows, when read.

A record is one resource, usage type, variant (offering, template, size) and window, with the
milliseconds of usage inside that window summed over the resource's intervals. Records are cut
by one SQL query over `usage_intervals`: the windows' boundaries come from
`projections.usage_windows` (the one definition of a window, DST included) as a sorted array,
and each interval is joined with the windows it overlaps by binary search (`width_bucket`).
A record always covers its whole window, whatever the period asked for, so the same intervals
give the same records, byte for byte: rebuilding the projection cannot change an export. A
window without usage (a zero-length interval) has no record.

Final and provisional: a window that ended more than the grace period ago
(`STRATUS_USAGE_GRACE_SECONDS`) is *final*; the window still open (its usage so far, counted
up to now) and those within the grace period are *provisional*. Listings and summaries show
both, marked `provisional`, so a user sees a new VM's usage at once and a month-to-date
figure; exports hold final records only. A read that serves final records first records the
served horizon (`projections.usage_served`): from then on a late event changes those windows
only through correction rows, which `corrections()` lists, each naming the record it corrects.
A provisional record firming up is not a correction: it was never served as final. While the
projection is being rebuilt behind what was served, nothing is final: listings and summaries
mark every record provisional and exports are refused (`UsageRebuilding`).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from projections.tariff import Tariff
from projections.usage import UsageProjection
from projections.usage_served import is_rebuilding, served_snapshot
from projections.usage_settings import DEFAULT_GRACE_SECONDS
from projections.usage_types import USAGE_CATALOG, USAGE_TYPE_DESCRIPTIONS, UsageCatalog, UsageType
from projections.usage_windows import (
    AggregationWindow,
    display_usage,
    raw_hours,
    size_gib,
    to_ms_precision,
)

#: Export columns, in order; JSON and NDJSON use the same names.
RECORD_FIELDS = (
    "id",
    "account_id",
    "account_name",
    "domain",
    "zone_id",
    "usage_type",
    "usage_type_name",
    "description",
    "raw_usage",
    "raw_usage_ms",
    "usage",
    "start_date",
    "end_date",
    "resource_id",
    "resource_name",
    "offering_id",
    "template_id",
    "size_bytes",
    "corrections",
)
TRACKING_TABLE = f"{UsageProjection.name}_tracking"


class InvalidUsageCursor(ValueError):
    """A cursor this API did not hand out."""


class UsageRebuilding(RuntimeError):
    """The usage projection is replaying the log behind what was already served: nothing can
    be exported as final until it has caught up (`projections.usage_served`)."""


@dataclass(frozen=True)
class RecordQuery:
    start: datetime
    end: datetime
    #: One account, or the accounts of a subtree (a domain admin's), or None for all.
    account_id: UUID | list[UUID] | None = None
    usage_type: UsageType | None = None
    zone_id: UUID | None = None


@dataclass(frozen=True)
class WindowCut:
    """The windows one read covers, at one moment: their boundaries (n windows, n + 1
    instants), the moment (usage of the open window counts up to it) and the end of the final
    windows (those ending at or before it; None: none is final)."""

    bounds: list[datetime]
    now: datetime
    final_until: datetime | None

    @property
    def horizon(self) -> datetime | None:
        """The end of the last final window of the cut: what serving it serves up to."""
        limit = self.final_until
        final = [] if limit is None else [b for b in self.bounds[1:] if b <= limit]
        return final[-1] if final else None

    def provisional(self) -> WindowCut:
        """The same cut with no window final (a rebuilding projection serves nothing final)."""
        return WindowCut(self.bounds, self.now, None)

    def final_only(self) -> WindowCut:
        """The same cut without its provisional windows (what an export serves)."""
        horizon = self.horizon
        bounds = [b for b in self.bounds if horizon is not None and b <= horizon]
        return WindowCut(bounds, self.now, self.final_until)


@dataclass(frozen=True)
class RecordPage:
    data: list[dict[str, Any]]
    count: int
    next_cursor: str | None
    provisional_count: int = 0
    final_until: datetime | None = None


_SELECT_COLUMNS = (
    "ws, we, usage_type, resource_id, account_id, zone_id, "
    "resource_name, offering_id, template_id, size_bytes, ms, record_id, corrections, "
    "resource_key, provisional"
)
#: The order of records, and the key of the listing's cursor.
_ORDER = 'r.ws, r.usage_type, r.resource_key, r.record_id COLLATE "C"'


def records_sql(
    query: RecordQuery, cut: WindowCut, *, with_corrections: bool
) -> tuple[str, dict[str, Any]]:
    """The records query (ordered by window, type, resource, record id) and its parameters.

    `bounds` holds the windows' boundaries; `width_bucket` finds the window of an instant in
    it by binary search, so each interval meets only the windows it overlaps. Usage is cut at
    `upper`: the end of the last window, or now when that is earlier (the open window).
    """
    filters = [
        "i.started_at < %(upper)s",
        "(i.ended_at IS NULL OR (i.ended_at > %(lower)s AND i.ended_at > i.started_at))",
    ]
    params: dict[str, Any] = {
        "bounds": cut.bounds,
        "lower": cut.bounds[0],
        "upper": min(cut.bounds[-1], cut.now),
        "now": cut.now,
        "final_until": cut.final_until,
    }
    if query.account_id is not None:
        filters.append("i.account_id = ANY(%(account_id)s)")
        params["account_id"] = _as_list(query.account_id)
    if query.usage_type is not None:
        filters.append("i.usage_type = %(usage_type)s")
        params["usage_type"] = int(query.usage_type)
    if query.zone_id is not None:
        filters.append("i.zone_id = %(zone_id)s")
        params["zone_id"] = query.zone_id
    corrections = (
        "(SELECT count(*) FROM usage_corrections c WHERE c.resource_id = g.resource_id "
        "AND c.usage_type = g.usage_type AND c.period_start < g.we AND c.period_end > g.ws)"
        if with_corrections
        else "0::bigint"
    )
    text = f"""
        WITH pieces AS (
            SELECT i.usage_type, i.resource_id, i.account_id, i.zone_id, i.resource_name,
                   i.offering_id, i.template_id, i.size_bytes, i.started_at, i.ended_at,
                   b.bounds[k] AS ws, b.bounds[k + 1] AS we
            FROM usage_intervals i
            CROSS JOIN (SELECT %(bounds)s::timestamptz[] AS bounds) b
            CROSS JOIN LATERAL generate_series(
                width_bucket(greatest(i.started_at, %(lower)s), b.bounds),
                width_bucket(
                    least(coalesce(i.ended_at, 'infinity'::timestamptz), %(upper)s)
                        - interval '1 millisecond',
                    b.bounds
                )
            ) AS k
            WHERE {" AND ".join(filters)}
        ),
        grouped AS (
            SELECT ws, usage_type, resource_id, we, account_id, zone_id, resource_name,
                   offering_id, template_id, size_bytes,
                   round(sum(extract(epoch FROM least(coalesce(ended_at, we), we, %(now)s))
                             - extract(epoch FROM greatest(started_at, ws))) * 1000) AS ms
            FROM pieces
            GROUP BY ws, usage_type, resource_id, we, account_id, zone_id, resource_name,
                     offering_id, template_id, size_bytes
        )
        SELECT g.ws, g.we, g.usage_type, g.resource_id::text, g.account_id::text,
               g.zone_id::text, g.resource_name, g.offering_id::text, g.template_id::text,
               g.size_bytes, g.ms::bigint AS ms,
               md5(concat_ws('/', g.usage_type, g.resource_id,
                   extract(epoch FROM g.ws)::bigint, g.offering_id, g.template_id, g.size_bytes,
                   g.account_id, g.zone_id, g.resource_name))::uuid::text AS record_id,
               {corrections} AS corrections, g.resource_id AS resource_key,
               coalesce(g.we > %(final_until)s::timestamptz, true) AS provisional
        FROM grouped g
        WHERE g.ms > 0
    """
    return text, params


def record_id(
    usage_type: int,
    resource_id: UUID | str,
    window_start: datetime,
    offering_id: UUID | str | None,
    template_id: UUID | str | None,
    size_bytes: int | None,
    account_id: UUID | str | None,
    zone_id: UUID | str | None,
    resource_name: str | None,
) -> str:
    """The id `records_sql` gives the record of these fields (`concat_ws` skips NULLs)."""
    parts = (
        int(usage_type),
        resource_id,
        int(window_start.timestamp()),
        offering_id,
        template_id,
        size_bytes,
        account_id,
        zone_id,
        resource_name,
    )
    text = "/".join(str(part) for part in parts if part is not None)
    return str(UUID(hashlib.md5(text.encode()).hexdigest()))


def _now() -> datetime:
    return datetime.now(UTC)


class UsageRecords:
    """Queries over the usage tables, on the read store's connection pool.

    `grace` is how long after its end a window stays provisional; `clock` says what time it
    is (the open window's usage counts up to it).
    """

    def __init__(
        self,
        pool: ConnectionPool[Any],
        window: AggregationWindow,
        catalog: UsageCatalog = USAGE_CATALOG,
        *,
        grace: timedelta = timedelta(seconds=DEFAULT_GRACE_SECONDS),
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.pool = pool
        self.window = window
        self.grace = grace
        self.clock = clock
        self.descriptions = {int(d.usage_type): d.description for d in catalog.declarations}
        self._accounts: dict[str, tuple[str | None, str | None]] = {}

    def cut(self, query: RecordQuery) -> WindowCut:
        """The windows of a query's period, as of now."""
        now = to_ms_precision(self.clock())
        return WindowCut(self.window.boundaries(query.start, query.end), now, now - self.grace)

    def _load_accounts(self, conn: Connection[Any]) -> None:
        """Account names and domains, looked up per record in memory (one row per account)."""
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(
                "SELECT id::text, facts->>'name', facts->>'domain' FROM usage_resources "
                "WHERE kind = 'account'"
            )
            self._accounts = {row[0]: (row[1], row[2]) for row in cur}

    # --- records ----------------------------------------------------------------------

    def page(self, query: RecordQuery, *, limit: int, cursor: str | None = None) -> RecordPage:
        """One page of the period's records, final and provisional (marked)."""
        after = decode_record_cursor(cursor) if cursor else None
        cut = self.cut(query)
        with (
            self.pool.connection() as conn,
            served_snapshot(conn, cut.horizon, TRACKING_TABLE) as served,
        ):
            if served.rebuilding:
                cut = cut.provisional()
            self._load_accounts(conn)
            text, params = records_sql(
                query, cut, with_corrections=self._has_corrections(conn, cut)
            )
            count_row = conn.execute(
                "SELECT count(*) AS n, count(*) FILTER (WHERE r.provisional) AS provisional "  # type: ignore[arg-type]
                f"FROM ({text}) r",
                params,
            ).fetchone()
            page_filter = ""
            if after is not None:
                page_filter = (
                    f"WHERE ({_ORDER}) > (%(a_ws)s, %(a_type)s, %(a_resource)s, %(a_record)s)"
                )
                params.update(
                    a_ws=after[0], a_type=after[1], a_resource=after[2], a_record=after[3]
                )
            rows = conn.execute(
                f"SELECT {_SELECT_COLUMNS} FROM ({text}) r {page_filter} "  # type: ignore[arg-type]
                f"ORDER BY {_ORDER} LIMIT %(limit)s",
                {**params, "limit": limit + 1},
            ).fetchall()
        count = int(count_row["n"]) if count_row else 0
        provisional = int(count_row["provisional"]) if count_row else 0
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_record_cursor(
                last["ws"], last["usage_type"], last["resource_key"], last["record_id"]
            )
        return RecordPage(
            [self.record(row) for row in rows], count, next_cursor, provisional, cut.final_until
        )

    def stream(self, query: RecordQuery, *, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """Every final record of the query, in order, fetched `batch` rows at a time from a
        server-side cursor: memory stays constant whatever the period. Provisional windows
        are left out: an export is a bill, and they may still change. UsageRebuilding while
        the projection rebuilds."""
        cut = self.cut(query).final_only()
        if len(cut.bounds) < 2:
            return
        with (
            self.pool.connection() as conn,
            served_snapshot(conn, cut.horizon, TRACKING_TABLE) as served,
        ):
            if served.rebuilding:
                raise UsageRebuilding("usage records are being rebuilt: export again later")
            self._load_accounts(conn)
            text, params = records_sql(
                query, cut, with_corrections=self._has_corrections(conn, cut)
            )
            ordered = f"SELECT {_SELECT_COLUMNS} FROM ({text}) r ORDER BY {_ORDER}"
            with conn.cursor(name="usage_export", row_factory=tuple_row) as cur:
                cur.itersize = batch
                cur.execute(ordered, params)  # type: ignore[arg-type]
                names = [c.name for c in cur.description or ()]
                for values in cur:
                    yield self.record(dict(zip(names, values, strict=True)))

    def rebuilding(self) -> bool:
        """Whether the projection is rebuilding (an export would be refused)."""
        with self.pool.connection() as conn:
            return is_rebuilding(conn, TRACKING_TABLE)

    def _has_corrections(self, conn: Connection[Any], cut: WindowCut) -> bool:
        """Whether any correction touches the period: records skip the per-record count
        (one index probe each) when none does."""
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM usage_corrections "
            "WHERE period_start < %s AND period_end > %s) AS found",
            (cut.bounds[-1], cut.bounds[0]),
        ).fetchone()
        return bool(row and _value(row, "found"))

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        """A database row as the record users read and export."""
        usage_type = UsageType(row["usage_type"])
        ms = int(row["ms"])
        size = row["size_bytes"]
        account_id = _str(row["account_id"])
        account_name, domain = self._accounts.get(account_id or "", (None, None))
        fields = {"resource_name": row["resource_name"] or "", "size_gib": size_gib(size)}
        template = self.descriptions.get(int(usage_type), "{resource_name} usage")
        description = template.format(**fields)
        return {
            "id": str(row["record_id"]),
            "account_id": account_id,
            "account_name": account_name,
            "domain": domain,
            "zone_id": _str(row["zone_id"]),
            "usage_type": int(usage_type),
            "usage_type_name": usage_type.name,
            "description": description,
            "raw_usage": raw_hours(ms),
            "raw_usage_ms": ms,
            "usage": display_usage(ms),
            "start_date": self.window.local(row["ws"]).isoformat(),
            "end_date": self.window.local(row["we"]).isoformat(),
            "resource_id": _str(row["resource_id"]),
            "resource_name": row["resource_name"],
            "offering_id": _str(row["offering_id"]),
            "template_id": _str(row["template_id"]),
            "size_bytes": size,
            "corrections": int(row["corrections"]),
            "provisional": bool(row["provisional"]),
        }

    # --- summary ----------------------------------------------------------------------

    def summary(self, query: RecordQuery, tariff: Tariff | None) -> list[dict[str, Any]]:
        """Per account: quantity per usage type (and cost, with a tariff) over the period,
        provisional usage included (the figure so far) and also shown apart."""
        cut = self.cut(query)
        with (
            self.pool.connection() as conn,
            served_snapshot(conn, cut.horizon, TRACKING_TABLE) as served,
        ):
            if served.rebuilding:
                cut = cut.provisional()
            text, params = records_sql(query, cut, with_corrections=False)
            self._load_accounts(conn)
            rows = conn.execute(
                "SELECT account_id, usage_type, offering_id, provisional, "  # type: ignore[arg-type]
                "count(*) AS records, sum(ms)::bigint AS ms, "
                "sum(ms::numeric * coalesce(size_bytes, 0)) AS byte_ms "
                f"FROM ({text}) r GROUP BY account_id, usage_type, offering_id, provisional "
                "ORDER BY account_id, usage_type, offering_id NULLS FIRST, provisional",
                params,
            ).fetchall()
        accounts: dict[str, dict[str, Any]] = {}
        for row in rows:
            account_id = str(row["account_id"])
            account_name, domain = self._accounts.get(account_id, (None, None))
            account = accounts.setdefault(
                account_id,
                {
                    "account_id": account_id,
                    "account_name": account_name,
                    "domain": domain,
                    "start": query.start.isoformat(),
                    "end": query.end.isoformat(),
                    "final_until": _local(self.window, cut.final_until),
                    "provisional": False,
                    "currency": tariff.currency if tariff else None,
                    "total_cost": Decimal(0) if tariff else None,
                    "usage": {},
                },
            )
            usage_type = UsageType(row["usage_type"])
            entry = account["usage"].setdefault(
                int(usage_type),
                {
                    "usage_type": int(usage_type),
                    "usage_type_name": usage_type.name,
                    "records": 0,
                    "raw_usage_ms": 0,
                    "byte_ms": Decimal(0),
                    "cost": Decimal(0) if tariff else None,
                    "provisional_records": 0,
                    "provisional_raw_usage_ms": 0,
                    "provisional_cost": Decimal(0) if tariff else None,
                },
            )
            records, ms = int(row["records"]), int(row["ms"])
            entry["records"] += records
            entry["raw_usage_ms"] += ms
            entry["byte_ms"] += Decimal(row["byte_ms"])
            if row["provisional"]:
                account["provisional"] = True
                entry["provisional_records"] += records
                entry["provisional_raw_usage_ms"] += ms
            if tariff is not None:
                offering = row["offering_id"]
                cost = tariff.cost(
                    usage_type,
                    None if offering is None else UUID(str(offering)),
                    ms,
                    int(row["byte_ms"]),
                )
                entry["cost"] += cost
                account["total_cost"] += cost
                if row["provisional"]:
                    entry["provisional_cost"] += cost
        result = []
        for account in accounts.values():
            usage = []
            for entry in account["usage"].values():
                byte_ms = entry.pop("byte_ms")
                entry["raw_usage"] = raw_hours(entry["raw_usage_ms"])
                entry["usage"] = display_usage(entry["raw_usage_ms"])
                entry["gib_hours"] = float(
                    (byte_ms / (3_600_000 * 1024**3)).quantize(Decimal("1e-6"))
                )
                for money in ("cost", "provisional_cost"):
                    if entry[money] is not None:
                        entry[money] = str(entry[money].quantize(Decimal("1e-6")))
                usage.append(entry)
            account["usage"] = usage
            if account["total_cost"] is not None:
                account["total_cost"] = str(account["total_cost"].quantize(Decimal("1e-6")))
            result.append(account)
        return result

    # --- corrections ------------------------------------------------------------------

    def corrections(
        self, query: RecordQuery, *, limit: int, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """Corrections of served windows in the period: each names the record it corrects
        (served value + its corrections = the record now)."""
        filters = ["period_start < %(end)s", "period_end > %(start)s"]
        params: dict[str, Any] = {"start": query.start, "end": query.end}
        if query.account_id is not None:
            filters.append("account_id = ANY(%(account_id)s)")
            params["account_id"] = _as_list(query.account_id)
        if query.usage_type is not None:
            filters.append("usage_type = %(usage_type)s")
            params["usage_type"] = int(query.usage_type)
        where = " AND ".join(filters)
        with self.pool.connection() as conn:
            count_row = conn.execute(
                f"SELECT count(*) AS n FROM usage_corrections WHERE {where}",  # type: ignore[arg-type]
                params,
            ).fetchone()
            rows = conn.execute(
                f"SELECT * FROM usage_corrections WHERE {where} "  # type: ignore[arg-type]
                "ORDER BY notification_id, period_start, usage_type, id "
                "LIMIT %(limit)s OFFSET %(offset)s",
                {**params, "limit": limit, "offset": offset},
            ).fetchall()
        out = []
        for row in rows:
            usage_type = UsageType(row["usage_type"])
            window_start = self.window.floor(row["period_start"])
            out.append(
                {
                    "notification_id": row["notification_id"],
                    "record_id": record_id(
                        int(usage_type),
                        row["resource_id"],
                        window_start,
                        row["offering_id"],
                        row["template_id"],
                        row["size_bytes"],
                        row["account_id"],
                        row["zone_id"],
                        row.get("resource_name"),
                    ),
                    "resource_id": str(row["resource_id"]),
                    "resource_name": row.get("resource_name"),
                    "usage_type": int(usage_type),
                    "usage_type_name": usage_type.name,
                    "account_id": str(row["account_id"]),
                    "zone_id": _str(row["zone_id"]),
                    "offering_id": _str(row["offering_id"]),
                    "template_id": _str(row["template_id"]),
                    "size_bytes": row["size_bytes"],
                    "window_start": self.window.local(window_start).isoformat(),
                    "window_end": self.window.local(
                        self.window.next_start(window_start)
                    ).isoformat(),
                    "period_start": self.window.local(row["period_start"]).isoformat(),
                    "period_end": self.window.local(row["period_end"]).isoformat(),
                    "delta_ms": row["delta_ms"],
                    "delta_hours": raw_hours(row["delta_ms"]),
                    "reason": row["reason"],
                    "event_topic": row["event_topic"],
                    "event_time": self.window.local(row["event_time"]).isoformat(),
                    "watermark": self.window.local(row["watermark"]).isoformat(),
                }
            )
        return out, int(count_row["n"]) if count_row else 0


def _local(window: AggregationWindow, instant: datetime | None) -> str | None:
    return None if instant is None else window.local(instant).isoformat()


def _value(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else row[0]


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


# --- cursors and export formats -----------------------------------------------------------


def encode_record_cursor(ws: datetime, usage_type: int, resource_id: UUID, record_id: str) -> str:
    raw = json.dumps([ws.isoformat(), int(usage_type), str(resource_id), str(record_id)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_record_cursor(cursor: str) -> tuple[datetime, int, UUID, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        ws, usage_type, resource_id, record_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(ws), int(usage_type), UUID(resource_id), str(UUID(record_id))
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        # OverflowError: an Infinity where a number was; RecursionError: deeply nested JSON.
        raise InvalidUsageCursor("cursor: not a cursor returned by this API") from error


class ExportFormat:
    CSV = "csv"
    JSON = "json"
    NDJSON = "ndjson"
    ALL = (CSV, JSON, NDJSON)
    MEDIA_TYPES = {CSV: "text/csv", JSON: "application/json", NDJSON: "application/x-ndjson"}


def _csv_line(values: Sequence[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return out.getvalue()


def export_chunks(
    records: Iterator[dict[str, Any]], fmt: str, *, chunk_records: int = 1000
) -> Iterator[bytes]:
    """Records encoded as CSV (header first), a JSON array (one record per line) or NDJSON,
    yielded in chunks of about `chunk_records` records."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n") if fmt == ExportFormat.CSV else None
    if writer is not None:
        writer.writerow(RECORD_FIELDS)
    elif fmt == ExportFormat.JSON:
        buffer.write("[\n")
    first = True
    pending = 0
    for record in records:
        if writer is not None:
            writer.writerow(["" if record[f] is None else record[f] for f in RECORD_FIELDS])
        else:
            line = json.dumps({f: record[f] for f in RECORD_FIELDS}, separators=(",", ":"))
            if fmt == ExportFormat.JSON:
                buffer.write(line if first else ",\n" + line)
            else:
                buffer.write(line + "\n")
        first = False
        pending += 1
        if pending >= chunk_records:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if fmt == ExportFormat.JSON:
        buffer.write("\n]\n" if not first else "]\n")
    tail = buffer.getvalue()
    if tail:
        yield tail.encode()


def usage_type_listing(metered: frozenset[UsageType]) -> list[dict[str, Any]]:
    """listUsageTypes: every CloudStack usage type, and whether Stratus meters it yet."""
    return [
        {
            "id": int(t),
            "name": t.name,
            "description": USAGE_TYPE_DESCRIPTIONS[t],
            "metered": t in metered,
        }
        for t in UsageType
    ]


__all__ = [
    "RECORD_FIELDS",
    "ExportFormat",
    "InvalidUsageCursor",
    "RecordPage",
    "RecordQuery",
    "UsageRebuilding",
    "UsageRecords",
    "WindowCut",
    "export_chunks",
    "record_id",
    "usage_type_listing",
]


def _as_list(accounts: UUID | list[UUID]) -> list[UUID]:
    return accounts if isinstance(accounts, list) else [accounts]
