"""`stratus domain`, `stratus account`, `stratus user` against a live stack, as an operator runs
them: the key pair a command prints works against the API, disabling and re-keying take effect
at once, and a refusal exits 1 with the API's detail."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from typer.testing import CliRunner, Result

from tests.e2e.conftest import Stack
from tests.support import ADMIN_KEY
from workers.cli import app as stratus


async def run(stack: Stack, *args: str) -> Result:
    """The CLI in a thread: its httpx calls block, and the API serves on this event loop."""
    env = {"STRATUS_API_URL": stack.url, "STRATUS_API_KEY": ADMIN_KEY, "COLUMNS": "300"}
    return await asyncio.to_thread(CliRunner().invoke, stratus, list(args), env=env)


async def ok(stack: Stack, *args: str) -> str:
    result = await run(stack, *args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


async def as_json(stack: Stack, *args: str) -> Any:
    """`--output json`: stdout is JSON alone (a notice goes to stderr)."""
    result = await run(stack, *args, "--output", "json")
    assert result.exit_code == 0, (args, result.output, result.exception)
    return json.loads(result.stdout)


def printed(output: str, label: str) -> str:
    found = re.search(rf"^{label}:\s+(\S+)$", output, re.MULTILINE)
    assert found, f"no {label!r} in {output!r}"
    return found.group(1)


async def status_with(stack: Stack, key: str) -> int:
    async with stack.http(key) as http:
        return (await http.get("/v1/virtual-machines")).status_code


async def test_an_admin_makes_a_domain_admin_whose_printed_keys_work_until_disabled(
    stack: Stack,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    domain_name, account_name = f"cli-d-{suffix}", f"cli-a-{suffix}"

    created = await ok(stack, "domain", "create", domain_name)
    assert f"ROOT/{domain_name}" in created
    domain = next(
        d for d in (await as_json(stack, "domain", "list"))["data"] if d["name"] == domain_name
    )
    assert domain["path"] == f"ROOT/{domain_name}"
    assert (await as_json(stack, "domain", "show", domain["id"]))["id"] == domain["id"]
    assert domain_name in await ok(stack, "domain", "list")

    made = await ok(
        stack, "account", "create", account_name, "--type", "DomainAdmin", "--domain", domain["id"]
    )
    assert "shown this once" in made
    api_key, secret_key = printed(made, "api key"), printed(made, "secret key")
    user_id = printed(made, "user id")
    assert len(api_key) > 40 and len(secret_key) > 40
    assert await status_with(stack, api_key) == 200

    accounts = (await as_json(stack, "account", "list", "--domain", domain["id"]))["data"]
    assert [(a["name"], a["account_type"]) for a in accounts] == [(account_name, "DomainAdmin")]
    account_id = accounts[0]["id"]
    listed = await ok(stack, "account", "list", "--domain", domain["id"])
    assert account_name in listed and "DomainAdmin" in listed and "1 in all" in listed
    shown = await ok(stack, "account", "show", account_id)
    assert account_name in shown and f"ROOT/{domain_name}" in shown
    assert api_key not in shown and secret_key not in shown

    # Limits: set (-1 too, without `--`), then shown by `limits` and `show`.
    assert "user_vm limit set to 7" in await ok(
        stack, "account", "set-limit", account_id, "user_vm", "7"
    )
    assert "unlimited" in await ok(stack, "account", "set-limit", account_id, "cpu", "-1")
    limits = {r["resource_type"]: r for r in await as_json(stack, "account", "limits", account_id)}
    assert limits["user_vm"]["max"] == 7 and limits["cpu"]["max"] == -1
    assert re.search(r"user_vm\s.*\s7\s", await ok(stack, "account", "limits", account_id))
    assert "user_vm=7" in await ok(stack, "account", "show", account_id)
    await ok(stack, "domain", "set-limit", domain["id"], "volume", "20")
    domain_limits = await as_json(stack, "domain", "limits", domain["id"])
    assert {r["resource_type"]: r["max"] for r in domain_limits}["volume"] == 20
    assert "volume=20" in await ok(stack, "domain", "list")

    # Disabling the account (or the user) stops the key at once; enabling restores it.
    assert "is disabled" in await ok(stack, "account", "disable", account_id)
    assert await status_with(stack, api_key) == 401
    assert "is enabled" in await ok(stack, "account", "enable", account_id)
    assert await status_with(stack, api_key) == 200
    assert "is disabled" in await ok(stack, "user", "disable", user_id)
    assert await status_with(stack, api_key) == 401
    await ok(stack, "user", "enable", user_id)
    assert await status_with(stack, api_key) == 200

    # New keys: a new pair is printed, the old key stops working, the new one works.
    rotated = await ok(stack, "user", "register-keys", user_id)
    new_key = printed(rotated, "api key")
    assert new_key != api_key and printed(rotated, "secret key") != secret_key
    assert "no longer works" in rotated
    assert await status_with(stack, api_key) == 401
    assert await status_with(stack, new_key) == 200
    user = await as_json(stack, "user", "show", user_id)
    assert user["keys_registered"] == 2 and new_key not in json.dumps(user)

    # A second user of the account, with keys of its own.
    added = await ok(stack, "account", "add-user", account_id, f"cli-u-{suffix}")
    assert await status_with(stack, printed(added, "api key")) == 200
    users = await ok(stack, "account", "users", account_id)
    assert account_name in users and f"cli-u-{suffix}" in users

    # A domain with an account is not deleted; an empty one is.
    refused = await run(stack, "domain", "delete", domain["id"])
    assert refused.exit_code == 1 and refused.output.startswith("409"), refused.output
    assert "1 account(s)" in refused.output
    empty = await as_json(stack, "domain", "create", f"cli-e-{suffix}", "--parent", domain["id"])
    assert "deleted" in await ok(stack, "domain", "delete", empty["id"])
    again = await run(stack, "domain", "delete", empty["id"])
    assert again.exit_code == 1 and again.output.startswith("404"), again.output
    gone = await run(stack, "domain", "show", empty["id"])
    assert gone.exit_code == 1 and gone.output.startswith("404"), gone.output
    assert empty["id"] not in await ok(stack, "domain", "list")


async def test_a_refused_command_exits_1_with_the_status_and_the_field(stack: Stack) -> None:
    refused = await run(stack, "account", "create", "bad name!")
    assert refused.exit_code == 1
    assert refused.output.startswith("422"), refused.output
    assert "body.name:" in refused.output and "api key" not in refused.output

    unknown = await run(stack, "account", "show", str(uuid.uuid4()))
    assert unknown.exit_code == 1 and unknown.output.startswith("404"), unknown.output

    # A limit that is not a number is refused before any request.
    account = await as_json(stack, "account", "create", f"cli-l-{uuid.uuid4().hex[:8]}")
    bad_max = await run(stack, "account", "set-limit", account["account"]["id"], "cpu", "lots")
    assert bad_max.exit_code == 2 and "lots" in bad_max.output
