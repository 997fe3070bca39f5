"""Domains: the tree accounts live in (ROOT and nested subdomains), as CloudStack has it.

A domain admin administers its domain's whole subtree, so every domain records the ids of its
ancestors (`ancestry`, ROOT first, itself last): "is account A under domain D" is then a
membership test on A's domain's ancestry, with no walk up the tree and no read of other
domains. A domain is never moved, so its ancestry never changes.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.errors import InvalidParameter, ResourceInUse
from domain.ids import named_id
from domain.resource_limits import ResourceType

ROOT_DOMAIN_ID = named_id("domain", "ROOT")
ROOT_DOMAIN_NAME = "ROOT"
#: Deep enough for any organisation chart; bounded so a path stays a readable string.
MAX_DOMAIN_DEPTH = 16


class DomainState(StrEnum):
    ACTIVE = "Active"
    INACTIVE = "Inactive"


class Domain(CloudAggregate):
    @event("Created")
    def __init__(self, name: str, parent_id: UUID | None, path: str, ancestry: list[str]) -> None:
        self.name = name
        self.parent_id = parent_id
        #: Names from ROOT down, "ROOT/sales/emea": what CloudStack shows as the domain path.
        self.path = path
        #: Ids from ROOT down to this domain itself, as strings.
        self.ancestry = ancestry
        self.state = DomainState.ACTIVE
        #: Names of the subdomains and accounts directly in this domain, each unique here.
        self.children: dict[str, str] = {}
        self.accounts: dict[str, str] = {}
        #: User names are unique in a domain, as in CloudStack (they log in by name + domain).
        self.usernames: dict[str, str] = {}
        self.limits: dict[str, int] = {}

    @property
    def depth(self) -> int:
        return len(self.ancestry)

    def contains(self, domain_ancestry: list[str]) -> bool:
        """True if a domain with that ancestry is this one or below it."""
        return str(self.id) in domain_ancestry

    def check_child_name_free(self, name: str) -> None:
        if name in self.children:
            raise InvalidParameter(
                f"domain {self.path} already has a subdomain named {name}", field="name"
            )

    def check_account_name_free(self, name: str) -> None:
        if name in self.accounts:
            raise InvalidParameter(
                f"domain {self.path} already has an account named {name}", field="name"
            )

    @event("SubdomainAdded")
    def add_subdomain(self, name: str, domain_id: str) -> None:
        self.children[name] = domain_id

    @event("AccountAdded")
    def add_account(self, name: str, account_id: str) -> None:
        self.accounts[name] = account_id

    def check_username_free(self, name: str) -> None:
        if name in self.usernames:
            raise InvalidParameter(
                f"domain {self.path} already has a user named {name}", field="username"
            )

    @event("UserAdded")
    def add_user(self, name: str, user_id: str) -> None:
        self.usernames[name] = user_id

    @event("AccountRemoved")
    def remove_account(self, name: str) -> None:
        self.accounts.pop(name, None)

    @event("SubdomainRemoved")
    def remove_subdomain(self, name: str) -> None:
        self.children.pop(name, None)

    def check_removable(self) -> None:
        if self.parent_id is None:
            raise InvalidParameter("the ROOT domain cannot be deleted", field="id")
        if self.children or self.accounts:
            raise ResourceInUse(
                f"domain {self.path} still holds "
                f"{len(self.children)} subdomain(s) and {len(self.accounts)} account(s)"
            )

    @event("Removed")
    def remove(self) -> None:
        self.state = DomainState.INACTIVE

    @event("LimitSet")
    def set_limit(self, resource: str, maximum: int) -> None:
        self.limits[ResourceType(resource).value] = maximum


def subdomain_path(parent: Domain, name: str) -> str:
    return f"{parent.path}/{name}"


def check_depth(parent: Domain) -> None:
    if parent.depth >= MAX_DOMAIN_DEPTH:
        raise InvalidParameter(
            f"domains nest at most {MAX_DOMAIN_DEPTH} deep; {parent.path} is at the limit",
            field="parent_id",
        )
