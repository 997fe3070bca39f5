"""The commands `/client/api` answers, by name, and those it names as not offered (432).

Each command is a function of its `Context` that answers CloudStack's JSON. Every one calls
the `/v1` route function that does the same thing (listing, submitting a job), with the
caller `/client/api` authenticated: one implementation, two dialects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response

from api.auth import Caller
from api.cloudstack.params import Params
from api.services import CloudServices


@dataclass
class Context:
    services: CloudServices
    caller: Caller
    request: Request
    params: Params
    #: What the `/v1` functions set headers on; `/client/api` answers with its own.
    response: Response = field(default_factory=Response)

    @property
    def command(self) -> str:
        return self.params.command


Handler = Callable[[Context], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    #: Answers with a job id to poll (queryAsyncJobResult).
    is_async: bool = False


COMMANDS: dict[str, Command] = {}


def command(name: str, *, is_async: bool = False) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name.lower()] = Command(name, handler, is_async)
        return handler

    return register


#: Core CloudStack commands whose feature Stratus does not have yet, and why (answered 432).
NOT_OFFERED: dict[str, str] = {
    **{
        name: "guest networks other than the zone's shared one are not offered yet"
        for name in ("createNetwork", "restartNetwork", "deleteNetwork")
    },
    **{
        name: "public IP addresses and their rules are not offered yet"
        for name in (
            "associateIpAddress",
            "disassociateIpAddress",
            "listPublicIpAddresses",
            "enableStaticNat",
            "createFirewallRule",
            "createPortForwardingRule",
        )
    },
}


def find(name: str) -> Command | None:
    return COMMANDS.get(name.lower())


def not_offered(name: str) -> str | None:
    lowered = name.lower()
    return next((why for known, why in NOT_OFFERED.items() if known.lower() == lowered), None)
