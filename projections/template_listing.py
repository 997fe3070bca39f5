"""Which templates an account sees (listTemplates): the public ones and its own private ones.

A private template (made from a snapshot) carries its account, the snapshot it came from and
where its bytes lie; it is its owner's business, and administrators'. Templates are rows of the
inventory read model (kind `template`); visibility is decided in the query, so counts and pages
are those of what the caller sees.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.store import Page, decode_cursor, encode_cursor

_VISIBLE = sql.SQL("((data->>'public')::boolean IS TRUE OR data->>'account_id' = %s)")


def template_visible(row: dict[str, Any], account_id: UUID | None) -> bool:
    """Whether an account sees this template row (None: an administrator, who sees all)."""
    data = row.get("data") or {}
    return (
        account_id is None
        or data.get("public") is True
        or data.get("account_id") == str(account_id)
    )


def page_templates(
    pool: ConnectionPool[Any],
    *,
    visible_to: UUID | None,
    zone_id: UUID | None,
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
) -> Page:
    """Templates oldest first, as `ReadStore.page` pages them; `visible_to` None lists all."""
    clauses: list[sql.Composable] = [sql.SQL("kind = 'template'")]
    params: list[Any] = []
    if zone_id is not None:
        clauses.append(sql.SQL("zone_id = %s"))
        params.append(zone_id)
    if visible_to is not None:
        clauses.append(_VISIBLE)
        params.append(str(visible_to))
    where = sql.SQL(" AND ").join(clauses)
    page_clauses = list(clauses)
    page_params = list(params)
    if cursor:
        created, row_id = decode_cursor(cursor)
        page_clauses.append(sql.SQL("(created, id) > (%s, %s)"))
        page_params += [created, row_id]
    offset = (page - 1) * limit if page and not cursor else 0
    count_query = sql.SQL("SELECT count(*) AS n FROM inventory WHERE {}").format(where)
    rows_query = sql.SQL(
        "SELECT * FROM inventory WHERE {} ORDER BY created, id LIMIT %s OFFSET %s"
    ).format(sql.SQL(" AND ").join(page_clauses))
    with pool.connection() as conn:
        count = conn.execute(count_query, params).fetchone()["n"]
        rows = conn.execute(rows_query, [*page_params, limit + 1, offset]).fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created"], rows[-1]["id"])
    return Page(data=rows, count=count, next_cursor=next_cursor)
