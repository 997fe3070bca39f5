"""Accounts: who owns resources and whose usage is metered.

Only a SHA-256 digest of an API key is ever recorded; the key itself is shown once, when made.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate


class AccountType(StrEnum):
    USER = "User"
    ADMIN = "Admin"


class AccountState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


def api_key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class Account(CloudAggregate):
    @event("Created")
    def __init__(
        self, name: str, account_type: str, api_key_sha256: str, domain: str = "ROOT"
    ) -> None:
        self.name = name
        self.account_type = AccountType(account_type)
        self.api_key_sha256 = api_key_sha256
        self.domain = domain
        self.state = AccountState.ENABLED

    @property
    def is_admin(self) -> bool:
        return self.account_type is AccountType.ADMIN

    @event("ApiKeyRotated")
    def rotate_api_key(self, api_key_sha256: str) -> None:
        self.api_key_sha256 = api_key_sha256

    @event("StateChanged")
    def set_state(self, state: str) -> None:
        self.state = AccountState(state)
