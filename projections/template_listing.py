"""Which templates an account sees (listTemplates): the public ones and its own private ones.

A private template (made from a snapshot) carries its account, the snapshot it came from and
where its bytes lie; it is its owner's business, and administrators'. Templates are rows of the
inventory read model (kind `template`); visibility is decided in the query, so counts and pages
are those of what the caller sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.inventory_pages import page_inventory
from projections.store import Page

_VISIBLE = sql.SQL("((data->>'public')::boolean IS TRUE OR data->>'account_id' = ANY(%s))")


def template_visible(row: dict[str, Any], accounts: Sequence[UUID] | None) -> bool:
    """Whether a caller who sees these accounts' resources sees this template row (None: the
    root admin, who sees all; a domain admin sees its subtree's private templates)."""
    data = row.get("data") or {}
    return (
        accounts is None
        or data.get("public") is True
        or data.get("account_id") in {str(a) for a in accounts}
    )


def page_templates(
    pool: ConnectionPool[Any],
    *,
    visible_to: Sequence[UUID] | None,
    zone_id: UUID | None,
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
    own_only: UUID | None = None,
    template_id: UUID | None = None,
) -> Page:
    """Templates oldest first, as `ReadStore.page` pages them; `visible_to` None lists all;
    `own_only` narrows to one account's private templates, `template_id` to one template."""
    clauses: list[sql.Composable] = [sql.SQL("kind = 'template'")]
    params: list[Any] = []
    if zone_id is not None:
        clauses.append(sql.SQL("zone_id = %s"))
        params.append(zone_id)
    if visible_to is not None:
        clauses.append(_VISIBLE)
        params.append([str(a) for a in visible_to])
    if own_only is not None:
        clauses.append(sql.SQL("data->>'account_id' = %s"))
        params.append(str(own_only))
    if template_id is not None:
        clauses.append(sql.SQL("id = %s"))
        params.append(template_id)
    return page_inventory(pool, clauses, params, limit=limit, cursor=cursor, page=page)
