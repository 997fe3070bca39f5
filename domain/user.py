"""Users: the people (and programs) of an account, each with its own API key pair.

A user's API key identifies it; its secret key signs CloudStack requests. Only the key's
SHA-256 digest is recorded here: the secret never enters an event (ARCHITECTURE rule 10), it is
kept encrypted in the API's credential store. Registering new keys replaces the old pair at
once, which is how a leaked key is revoked.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from domain.aggregate import CloudAggregate


class UserState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class User(CloudAggregate):
    @event("Created")
    def __init__(self, account_id: UUID, name: str, api_key_sha256: str) -> None:
        self.account_id = account_id
        self.name = name
        self.api_key_sha256 = api_key_sha256
        self.state = UserState.ENABLED
        #: How many key pairs this user has had: a rotation is visible in the user's events.
        self.keys_registered = 1

    @event("KeysRegistered")
    def register_keys(self, api_key_sha256: str) -> None:
        self.api_key_sha256 = api_key_sha256
        self.keys_registered += 1

    @event("StateChanged")
    def set_state(self, state: str) -> None:
        self.state = UserState(state)
