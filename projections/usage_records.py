"""Usage records: cutting the projection's intervals into aggregation windows, when read.

A record is one resource, usage type, variant (offering, template, size) and window, with the
milliseconds of usage inside that window summed over the resource's intervals. Records are cut
by one SQL query over `usage_intervals` (each interval joined with the windows it overlaps,
generated in the configured timezone), so an export of any size streams from a server-side
cursor in constant memory, and the same intervals always give the same records, byte for byte:
rebuilding the projection cannot change an export.

Only windows that have ended are records (CloudStack reports a window once it is over); an
open interval counts up to each window's end. A record whose window was affected by a late
event carries the number of corrections (`projections.usage`), and `corrections()` lists them.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from projections.tariff import Tariff
from projections.usage_types import USAGE_CATALOG, USAGE_TYPE_DESCRIPTIONS, UsageCatalog, UsageType
from projections.usage_windows import (
    AggregationWindow,
    WindowSize,
    display_usage,
    raw_hours,
    size_gib,
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


class InvalidUsageCursor(ValueError):
    """A cursor this API did not hand out."""


@dataclass(frozen=True)
class RecordQuery:
    start: datetime
    end: datetime
    account_id: UUID | None = None
    usage_type: UsageType | None = None
    zone_id: UUID | None = None


@dataclass(frozen=True)
class RecordPage:
    data: list[dict[str, Any]]
    count: int
    next_cursor: str | None


_SELECT_COLUMNS = (
    "ws, we, usage_type, resource_id, account_id, zone_id, "
    "resource_name, offering_id, template_id, size_bytes, ms, record_id, corrections, "
    "resource_key"
)
#: The order of records, and the key of the listing's cursor.
_ORDER = 'r.ws, r.usage_type, r.resource_key, r.record_id COLLATE "C"'


def _floor(window: AggregationWindow, expression: str) -> str:
    """SQL for the start of the window holding `expression`, in the session's timezone.

    Hourly windows are cut in UTC shifted by the zone's sub-hour offset (so a repeated local
    hour at a DST fall-back stays two windows); daily windows at local midnight.
    """
    if window.size is WindowSize.HOURLY:
        shift = f"make_interval(mins => extract(timezone_minute from {expression})::int)"
        return f"(date_trunc('hour', {expression} - {shift}, 'UTC') + {shift})"
    return f"date_trunc('day', {expression})"


def records_sql(
    window: AggregationWindow, query: RecordQuery, *, with_corrections: bool
) -> tuple[str, dict[str, Any]]:
    """The records query (ordered by window, type, resource, record id) and its parameters."""
    filters = ["i.started_at < %(end)s", "(i.ended_at IS NULL OR i.ended_at > %(start)s)"]
    params: dict[str, Any] = {
        "start": query.start,
        "end": query.end,
        "step": f"1 {window.size.sql_unit}",
        "now": datetime.now(UTC),
    }
    if query.account_id is not None:
        filters.append("i.account_id = %(account_id)s")
        params["account_id"] = query.account_id
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
                   w.ws, w.ws + %(step)s::interval AS we
            FROM usage_intervals i
            CROSS JOIN LATERAL generate_series(
                {_floor(window, "greatest(i.started_at, %(start)s)")},
                least(coalesce(i.ended_at, 'infinity'::timestamptz), %(end)s)
                    - interval '1 millisecond',
                %(step)s::interval
            ) AS w(ws)
            WHERE {" AND ".join(filters)}
        ),
        grouped AS (
            SELECT ws, usage_type, resource_id, we, account_id, zone_id, resource_name,
                   offering_id, template_id, size_bytes,
                   sum(extract(epoch FROM least(coalesce(ended_at, we), we))
                       - extract(epoch FROM greatest(started_at, ws)))::numeric * 1000 AS ms
            FROM pieces
            WHERE we <= %(now)s
            GROUP BY ws, usage_type, resource_id, we, account_id, zone_id, resource_name,
                     offering_id, template_id, size_bytes
        )
        SELECT g.ws, g.we, g.usage_type, g.resource_id::text, g.account_id::text,
               g.zone_id::text, g.resource_name, g.offering_id::text, g.template_id::text,
               g.size_bytes, round(g.ms)::bigint AS ms,
               md5(concat_ws('/', g.usage_type, g.resource_id,
                   extract(epoch FROM g.ws)::bigint, g.offering_id, g.template_id, g.size_bytes,
                   g.account_id, g.zone_id, g.resource_name))::uuid::text AS record_id,
               {corrections} AS corrections, g.resource_id AS resource_key
        FROM grouped g
    """
    return text, params


def _set_timezone(conn: Connection[Any], window: AggregationWindow) -> None:
    conn.execute("SELECT set_config('TimeZone', %s, true)", (window.timezone,))


class UsageRecords:
    """Queries over the usage tables, on the read store's connection pool."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        window: AggregationWindow,
        catalog: UsageCatalog = USAGE_CATALOG,
    ) -> None:
        self.pool = pool
        self.window = window
        self.descriptions = {int(d.usage_type): d.description for d in catalog.declarations}
        self._accounts: dict[str, tuple[str | None, str | None]] = {}

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
        after = decode_record_cursor(cursor) if cursor else None
        with self.pool.connection() as conn, conn.transaction():
            _set_timezone(conn, self.window)
            self._load_accounts(conn)
            text, params = records_sql(
                self.window, query, with_corrections=self._has_corrections(conn, query)
            )
            count_row = conn.execute(
                f"SELECT count(*) AS n FROM ({text}) r",  # type: ignore[arg-type]
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
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_record_cursor(
                last["ws"], last["usage_type"], last["resource_key"], last["record_id"]
            )
        return RecordPage([self.record(row) for row in rows], count, next_cursor)

    def stream(self, query: RecordQuery, *, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """Every record of the query, in order, fetched `batch` rows at a time from a
        server-side cursor: memory stays constant whatever the period."""
        with self.pool.connection() as conn, conn.transaction():
            _set_timezone(conn, self.window)
            self._load_accounts(conn)
            text, params = records_sql(
                self.window, query, with_corrections=self._has_corrections(conn, query)
            )
            ordered = f"SELECT {_SELECT_COLUMNS} FROM ({text}) r ORDER BY {_ORDER}"
            with conn.cursor(name="usage_export", row_factory=tuple_row) as cur:
                cur.itersize = batch
                cur.execute(ordered, params)  # type: ignore[arg-type]
                names = [c.name for c in cur.description or ()]
                for values in cur:
                    yield self.record(dict(zip(names, values, strict=True)))

    def _has_corrections(self, conn: Connection[Any], query: RecordQuery) -> bool:
        """Whether any correction touches the period: records skip the per-record count
        (one index probe each) when none does."""
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM usage_corrections "
            "WHERE period_start < %s AND period_end > %s) AS found",
            (query.end, self.window.floor(query.start)),
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
        }

    # --- summary ----------------------------------------------------------------------

    def summary(self, query: RecordQuery, tariff: Tariff | None) -> list[dict[str, Any]]:
        """Per account: quantity per usage type (and cost, with a tariff) over the period."""
        with self.pool.connection() as conn, conn.transaction():
            _set_timezone(conn, self.window)
            text, params = records_sql(self.window, query, with_corrections=False)
            self._load_accounts(conn)
            rows = conn.execute(
                "SELECT account_id, "
                "usage_type, offering_id, count(*) AS records, sum(ms)::bigint AS ms, "
                "sum(ms::numeric * coalesce(size_bytes, 0)) AS byte_ms "
                f"FROM ({text}) r GROUP BY account_id, usage_type, offering_id "  # type: ignore[arg-type]
                "ORDER BY account_id, usage_type, offering_id NULLS FIRST",
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
                },
            )
            entry["records"] += int(row["records"])
            entry["raw_usage_ms"] += int(row["ms"])
            entry["byte_ms"] += Decimal(row["byte_ms"])
            if tariff is not None:
                offering = row["offering_id"]
                cost = tariff.cost(
                    usage_type,
                    None if offering is None else UUID(str(offering)),
                    int(row["ms"]),
                    int(row["byte_ms"]),
                )
                entry["cost"] += cost
                account["total_cost"] += cost
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
                if entry["cost"] is not None:
                    entry["cost"] = str(entry["cost"].quantize(Decimal("1e-6")))
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
        filters = ["period_start < %(end)s", "period_end > %(start)s"]
        params: dict[str, Any] = {"start": query.start, "end": query.end}
        if query.account_id is not None:
            filters.append("account_id = %(account_id)s")
            params["account_id"] = query.account_id
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
                "ORDER BY notification_id, id LIMIT %(limit)s OFFSET %(offset)s",
                {**params, "limit": limit, "offset": offset},
            ).fetchall()
        out = []
        for row in rows:
            usage_type = UsageType(row["usage_type"])
            out.append(
                {
                    "notification_id": row["notification_id"],
                    "resource_id": str(row["resource_id"]),
                    "usage_type": int(usage_type),
                    "usage_type_name": usage_type.name,
                    "account_id": str(row["account_id"]),
                    "zone_id": _str(row["zone_id"]),
                    "offering_id": _str(row["offering_id"]),
                    "template_id": _str(row["template_id"]),
                    "size_bytes": row["size_bytes"],
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
    except (ValueError, TypeError) as error:
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
            line = json.dumps(record, separators=(",", ":"))
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
    "UsageRecords",
    "export_chunks",
    "usage_type_listing",
]
