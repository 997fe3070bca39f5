"""Listing domains and accounts by subtree: a domain admin lists what lies under its domain.

Every domain and account row carries its ancestry (the ids of the domains above it, ROOT
first), so "under domain D" is one JSON containment test per row.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.inventory_pages import page_inventory
from projections.store import Page


def page_domains(
    pool: ConnectionPool[Any],
    *,
    under: UUID | None,
    only: UUID | None = None,
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
) -> Page:
    """Domains oldest first: all, or those `under` a domain (itself included), or `only` one."""
    clauses: list[sql.Composable] = [
        sql.SQL("kind = 'domain'"),
        sql.SQL("data->>'state' = 'Active'"),
    ]
    params: list[Any] = []
    if under is not None:
        clauses.append(sql.SQL("data->'ancestry' ? %s"))
        params.append(str(under))
    if only is not None:
        clauses.append(sql.SQL("id = %s"))
        params.append(only)
    return page_inventory(pool, clauses, params, limit=limit, cursor=cursor, page=page)


def page_accounts(
    pool: ConnectionPool[Any],
    *,
    accounts: list[UUID] | None,
    domain_id: UUID | None = None,
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
) -> Page:
    """Accounts oldest first: all or those listed, narrowed to one domain's subtree."""
    clauses: list[sql.Composable] = [sql.SQL("kind = 'account'")]
    params: list[Any] = []
    if accounts is not None:
        clauses.append(sql.SQL("id = ANY(%s)"))
        params.append(accounts)
    if domain_id is not None:
        clauses.append(sql.SQL("data->'domain_ancestry' ? %s"))
        params.append(str(domain_id))
    return page_inventory(pool, clauses, params, limit=limit, cursor=cursor, page=page)
