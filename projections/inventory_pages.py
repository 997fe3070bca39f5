"""Pages of inventory rows under conditions `ReadStore.page`'s equality filters cannot say
(a JSON field, a subtree), paged the same way: oldest first, by cursor or page number."""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.store import Page, decode_cursor, encode_cursor


def page_inventory(
    pool: ConnectionPool[Any],
    clauses: list[sql.Composable],
    params: list[Any],
    *,
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
) -> Page:
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
