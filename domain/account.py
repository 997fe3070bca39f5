"""Accounts: who owns resources and whose usage is metered, in a domain, with a role.

The role is CloudStack's account type: a root admin runs the cloud, a domain admin
administers its domain's subtree, a user owns resources. Keys belong to the account's users
(domain/user.py); accounts made before users existed keep their key's digest here.
Only a SHA-256 digest of an API key is ever recorded; the key itself is shown once, when made.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate
from domain.resource_limits import ResourceType


class AccountType(StrEnum):
    USER = "User"
    #: The root admin.
    ADMIN = "Admin"
    DOMAIN_ADMIN = "DomainAdmin"

    @property
    def cloudstack_id(self) -> int:
        """CloudStack's `accounttype`: 0 user, 1 root admin, 2 domain admin."""
        return {AccountType.USER: 0, AccountType.ADMIN: 1, AccountType.DOMAIN_ADMIN: 2}[self]

    @property
    def role_name(self) -> str:
        return {
            AccountType.USER: "User",
            AccountType.ADMIN: "Root Admin",
            AccountType.DOMAIN_ADMIN: "Domain Admin",
        }[self]


class AccountState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


def api_key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class Account(CloudAggregate):
    @event("Created")
    def __init__(
        self,
        name: str,
        account_type: str,
        api_key_sha256: str = "",
        domain: str = "ROOT",
        domain_id: UUID | None = None,
        domain_ancestry: list[str] | None = None,
    ) -> None:
        self.name = name
        self.account_type = AccountType(account_type)
        #: Accounts made before users existed: their one key. Empty for the others.
        self.api_key_sha256 = api_key_sha256
        #: The domain's path, "ROOT/sales".
        self.domain = domain
        self.domain_id = domain_id
        #: The ids of the account's domain and of every domain above it (ROOT first).
        self.domain_ancestry = list(domain_ancestry or [])
        self.state = AccountState.ENABLED
        self.limits: dict[str, int] = {}
        self.users: list[str] = []

    @property
    def is_admin(self) -> bool:
        return self.account_type is AccountType.ADMIN

    @event("ApiKeyRotated")
    def rotate_api_key(self, api_key_sha256: str) -> None:
        self.api_key_sha256 = api_key_sha256

    @event("StateChanged")
    def set_state(self, state: str) -> None:
        self.state = AccountState(state)

    @event("UserAdded")
    def add_user(self, user_id: str) -> None:
        self.users.append(user_id)

    @event("LimitSet")
    def set_limit(self, resource: str, maximum: int) -> None:
        self.limits[ResourceType(resource).value] = maximum
