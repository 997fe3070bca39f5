"""`stratus domain`, `stratus account`, `stratus user`: tenancy from a terminal, through the
admin API (`/v1/domains`, `/v1/accounts`, `/v1/users`).

A key pair (`account create`, `account add-user`, `user register-keys`) is printed once, to
stdout, and written nowhere else: the API keeps the secret encrypted and never shows it again.
Listings and shows take `--output json` for scripts; a refusal prints the API's status and
detail and exits 1.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import httpx
import typer
from rich.text import Text

from api.cli import checked, client, console, table
from domain.account import AccountType
from domain.resource_limits import ResourceType

domain_app = typer.Typer(
    help="Domains: the tree of accounts, and limits that cap a whole subtree.",
    no_args_is_help=True,
)
account_app = typer.Typer(
    help="Accounts: their users, key pairs, state and limits.", no_args_is_help=True
)
user_app = typer.Typer(help="Users: key pairs and state.", no_args_is_help=True)

#: A limit's MAX may be -1 (unlimited), which would otherwise be read as an option.
NEGATIVE_NUMBERS = {"ignore_unknown_options": True}
#: Rows per page when a listing follows its cursor to the end (the API's largest page).
PAGE = 500


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


def _output() -> Any:
    return typer.Option(Output.TABLE, "--output", "-o", help="table, or json for scripts")


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def _fields(row: dict[str, Any], names: list[str]) -> None:
    """One `name  value` line per field, values printed as they are (never read as markup)."""
    width = max(len(n) for n in names)
    for name in names:
        value = row.get(name)
        if isinstance(value, dict):
            value = _limits_text(value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        elif value is None:
            value = "-"
        console.print(Text.assemble((f"{name:>{width}}", "bold"), f"  {value}"), soft_wrap=True)


def _limits_text(limits: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_max_text(v)}" for k, v in limits.items()) or "none set"


def _max_text(value: Any) -> str:
    return "unlimited" if value == -1 else str(value)


def _listing(http: httpx.Client, path: str, params: dict[str, Any], limit: int | None) -> Any:
    """Every row (or the first `limit`), following `next_cursor`; with the listing's count."""
    rows: list[dict[str, Any]] = []
    query = {**params, "consistent": "true", "limit": min(limit or PAGE, PAGE)}
    while True:
        found = checked(http.get(path, params=query))
        rows.extend(found["data"])
        if not found.get("next_cursor") or (limit is not None and len(rows) >= limit):
            return {"data": rows[:limit] if limit else rows, "count": found["count"]}
        query = {**query, "cursor": found["next_cursor"]}


def _show_limits(limits: list[dict[str, Any]], output: Output) -> None:
    if output is Output.JSON:
        _print_json(limits)
        return
    table(
        [{**row, "max": _max_text(row["max"])} for row in limits],
        ["resource_type", "resource_type_id", "max", "used"],
    )


def _parse_max(value: str) -> int:
    if value.strip().lower() == "unlimited":
        return -1
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a whole number (or -1, or 'unlimited')", param_hint="MAX"
        ) from None


def _set_limit(kind: str, owner_id: str, resource: ResourceType, maximum: str) -> None:
    body = {"max": _parse_max(maximum)}
    with client() as http:
        limits = checked(http.put(f"/v1/{kind}/{owner_id}/limits/{resource.value}", json=body))
    console.print(
        f"{resource.value} limit set to {_max_text(body['max'])}", markup=False, highlight=False
    )
    _show_limits(limits, Output.TABLE)


def _print_keys(keys: dict[str, Any], output: Output, notice: str) -> None:
    """The key pair, to stdout only, each key whole on its line (never wrapped) so it can be
    copied; the notice goes to stderr when stdout is JSON for a script."""
    if output is Output.TABLE:
        typer.echo(f"user id:    {keys['user_id']}")
        typer.echo(f"api key:    {keys['api_key']}")
        typer.echo(f"secret key: {keys['secret_key']}")
    typer.echo(notice, err=output is Output.JSON)


def _shown_once(user_id: str) -> str:
    return (
        "The secret key is shown this once and cannot be read again: store it now. "
        f"If it is lost, register new keys: stratus user register-keys {user_id}"
    )


# Domains.

DOMAIN_FIELDS = ["id", "name", "path", "parent_id", "state", "limits", "created"]


@domain_app.command("create")
def create_domain(
    name: str = typer.Argument(..., help="letters, digits and ._- (64 at most)"),
    parent: str | None = typer.Option(
        None, "--parent", help="parent domain id (default: your own domain)"
    ),
    output: Output = _output(),
) -> None:
    """Create a subdomain."""
    body: dict[str, Any] = {"name": name}
    if parent:
        body["parent_id"] = parent
    with client() as http:
        created = checked(http.post("/v1/domains", json=body))
    if output is Output.JSON:
        _print_json(created)
        return
    console.print(f"created domain {created['path']}", markup=False, highlight=False)
    _fields(created, DOMAIN_FIELDS)


@domain_app.command("list")
def list_domains(
    limit: int | None = typer.Option(None, help="at most this many (default: all)", min=1),
    output: Output = _output(),
) -> None:
    """The domains you administer (yours, and those below it)."""
    with client() as http:
        found = _listing(http, "/v1/domains", {}, limit)
    if output is Output.JSON:
        _print_json(found)
        return
    rows = [{**row, "limits": _limits_text(row["limits"])} for row in found["data"]]
    table(rows, ["id", "path", "state", "limits", "created"])
    console.print(f"{found['count']} in all")


@domain_app.command("show")
def show_domain(domain_id: str, output: Output = _output()) -> None:
    """A domain: its path, parent, state and limits."""
    with client() as http:
        found = checked(http.get(f"/v1/domains/{domain_id}"))
    if output is Output.JSON:
        _print_json(found)
        return
    _fields(found, DOMAIN_FIELDS)


@domain_app.command("delete")
def delete_domain(domain_id: str) -> None:
    """Delete an empty domain (no subdomain, no account)."""
    with client() as http:
        checked(http.delete(f"/v1/domains/{domain_id}"))
    console.print(f"deleted domain {domain_id}", markup=False, highlight=False)


@domain_app.command("limits")
def domain_limits(domain_id: str, output: Output = _output()) -> None:
    """A domain's limits, and what its whole subtree uses."""
    with client() as http:
        limits = checked(http.get(f"/v1/domains/{domain_id}/limits"))
    _show_limits(limits, output)


@domain_app.command("set-limit", context_settings=NEGATIVE_NUMBERS)
def set_domain_limit(
    domain_id: str,
    resource: ResourceType = typer.Argument(..., case_sensitive=False, help="the resource type"),
    maximum: str = typer.Argument(..., metavar="MAX", help="a count, or -1 / unlimited"),
) -> None:
    """Cap a domain's subtree on a resource type (-1 or `unlimited`: no cap)."""
    _set_limit("domains", domain_id, resource, maximum)


# Accounts.

ACCOUNT_FIELDS = [
    "id",
    "name",
    "account_type",
    "role",
    "domain",
    "domain_id",
    "state",
    "limits",
    "users",
    "created",
]
USER_FIELDS = ["id", "name", "account_id", "state", "keys_registered", "created"]
USER_COLUMNS = ["id", "name", "state", "keys_registered", "created"]


@account_app.command("create")
def create_account(
    name: str = typer.Argument(..., help="letters, digits and ._- (64 at most)"),
    account_type: AccountType = typer.Option(
        AccountType.USER,
        "--type",
        case_sensitive=False,
        help="User, DomainAdmin, or Admin (root admin, in ROOT)",
    ),
    domain: str | None = typer.Option(None, "--domain", help="domain id (default: yours)"),
    username: str | None = typer.Option(
        None, "--username", help="the first user's name (default: the account's)"
    ),
    output: Output = _output(),
) -> None:
    """Create an account with its first user, and print that user's key pair (once)."""
    body: dict[str, Any] = {"name": name, "account_type": account_type.value}
    if domain:
        body["domain_id"] = domain
    if username:
        body["username"] = username
    with client() as http:
        created = checked(http.post("/v1/accounts", json=body))
    user_id = created["keys"]["user_id"]
    if output is Output.JSON:
        _print_json(created)
    else:
        account, user = created["account"], created["user"]
        console.print(
            f"created {account['account_type']} account {account['name']} ({account['id']}) "
            f"in {account['domain']}, with user {user['name']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    _print_keys(created["keys"], output, _shown_once(user_id))


@account_app.command("list")
def list_accounts(
    domain: str | None = typer.Option(None, "--domain", help="only this domain's (its id)"),
    limit: int | None = typer.Option(None, help="at most this many (default: all)", min=1),
    output: Output = _output(),
) -> None:
    """The accounts you can see."""
    params = {"domain_id": domain} if domain else {}
    with client() as http:
        found = _listing(http, "/v1/accounts", params, limit)
    if output is Output.JSON:
        _print_json(found)
        return
    rows = [{**row, "users": len(row["users"])} for row in found["data"]]
    table(rows, ["id", "name", "account_type", "domain", "state", "users", "created"])
    console.print(f"{found['count']} in all")


@account_app.command("show")
def show_account(account_id: str, output: Output = _output()) -> None:
    """An account: type, domain, state, limits and users."""
    with client() as http:
        found = checked(http.get(f"/v1/accounts/{account_id}"))
    if output is Output.JSON:
        _print_json(found)
        return
    _fields(found, ACCOUNT_FIELDS)


def _set_account_state(account_id: str, action: str) -> None:
    with client() as http:
        account = checked(http.post(f"/v1/accounts/{account_id}/{action}"))
    console.print(
        f"account {account['name']} ({account['id']}) is {account['state']}",
        markup=False,
        highlight=False,
    )


@account_app.command("disable")
def disable_account(account_id: str) -> None:
    """Disable an account: the keys of all its users stop working at once."""
    _set_account_state(account_id, "disable")


@account_app.command("enable")
def enable_account(account_id: str) -> None:
    """Enable an account: its users' keys work again."""
    _set_account_state(account_id, "enable")


@account_app.command("limits")
def account_limits(account_id: str, output: Output = _output()) -> None:
    """An account's limits, and what it uses."""
    with client() as http:
        limits = checked(http.get(f"/v1/accounts/{account_id}/limits"))
    _show_limits(limits, output)


@account_app.command("set-limit", context_settings=NEGATIVE_NUMBERS)
def set_account_limit(
    account_id: str,
    resource: ResourceType = typer.Argument(..., case_sensitive=False, help="the resource type"),
    maximum: str = typer.Argument(..., metavar="MAX", help="a count, or -1 / unlimited"),
) -> None:
    """Cap an account on a resource type (-1 or `unlimited`: no cap)."""
    _set_limit("accounts", account_id, resource, maximum)


@account_app.command("users")
def account_users(account_id: str, output: Output = _output()) -> None:
    """An account's users."""
    with client() as http:
        users = checked(http.get(f"/v1/accounts/{account_id}/users"))["data"]
    if output is Output.JSON:
        _print_json(users)
        return
    table(users, USER_COLUMNS)


@account_app.command("add-user")
def add_user(
    account_id: str,
    username: str = typer.Argument(..., help="letters, digits and ._- (64 at most)"),
    output: Output = _output(),
) -> None:
    """Add a user to an account, and print its key pair (once)."""
    with client() as http:
        created = checked(
            http.post(f"/v1/accounts/{account_id}/users", json={"username": username})
        )
    user = created["user"]
    if output is Output.JSON:
        _print_json(created)
    else:
        console.print(
            f"created user {user['name']} ({user['id']}) in account {user['account_id']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    _print_keys(created["keys"], output, _shown_once(user["id"]))


# Users.


@user_app.command("show")
def show_user(user_id: str, output: Output = _output()) -> None:
    """A user: its account, state and how many key pairs it has had (never the keys)."""
    with client() as http:
        found = checked(http.get(f"/v1/users/{user_id}"))
    if output is Output.JSON:
        _print_json(found)
        return
    _fields(found, USER_FIELDS)


@user_app.command("register-keys")
def register_keys(user_id: str, output: Output = _output()) -> None:
    """Register a new key pair for a user and print it (once): the old pair stops working."""
    with client() as http:
        keys = checked(http.post(f"/v1/users/{user_id}/keys"))
    if output is Output.JSON:
        _print_json(keys)
    notice = f"The old key pair of user {user_id} no longer works. " + _shown_once(user_id)
    _print_keys(keys, output, notice)


def _set_user_state(user_id: str, action: str) -> None:
    with client() as http:
        user = checked(http.post(f"/v1/users/{user_id}/{action}"))
    console.print(
        f"user {user['name']} ({user['id']}) is {user['state']}", markup=False, highlight=False
    )


@user_app.command("disable")
def disable_user(user_id: str) -> None:
    """Disable a user: its keys stop working at once."""
    _set_user_state(user_id, "disable")


@user_app.command("enable")
def enable_user(user_id: str) -> None:
    """Enable a user: its keys work again."""
    _set_user_state(user_id, "enable")
