"""Key pairs: an API key that names its user, a secret key that signs its requests.

The API key is recorded only as its SHA-256 digest (on the user, in the event store). The
secret key must be readable again, since a CloudStack signature is checked by recomputing it
with the secret, so it is kept here, encrypted (Fernet: AES-128-CBC with HMAC-SHA256) under a
key from the API's configuration, in a table of its own: never in an event, a log, a workflow
or a read model (ARCHITECTURE rule 10). A database dump without the configuration's key holds
no usable secret.

This table is not a read model: it cannot be rebuilt from events (nothing there holds a
secret), so it is never dropped with them. A pair whose user was never recorded (the event
write failed after the secret was kept) is harmless: no user has its digest, so it
authenticates nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography.fernet import Fernet, InvalidToken
from psycopg_pool import ConnectionPool

from domain.account import api_key_digest

TABLE = "api_secret_keys"
#: As long as CloudStack's (86 characters of URL-safe base64).
KEY_BYTES = 64


@dataclass(frozen=True)
class KeyPair:
    api_key: str
    secret_key: str

    @property
    def digest(self) -> str:
        return api_key_digest(self.api_key)

    def __repr__(self) -> str:  # a pair printed in a log or a traceback shows no secret
        return f"KeyPair(api_key={self.api_key[:6]}..., secret_key=***)"


def new_key_pair() -> KeyPair:
    return KeyPair(secrets.token_urlsafe(KEY_BYTES), secrets.token_urlsafe(KEY_BYTES))


def new_encryption_key() -> str:
    return Fernet.generate_key().decode()


class CredentialStore:
    def __init__(self, pool: ConnectionPool[Any], encryption_key: str) -> None:
        self.pool = pool
        self.cipher = Fernet(encryption_key.encode())

    def create_table(self) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                "api_key_sha256 text PRIMARY KEY, user_id uuid NOT NULL, "
                "secret bytea NOT NULL, created timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_user ON {TABLE} (user_id)")

    def keep(self, user_id: UUID, pair: KeyPair) -> None:
        """Keep the pair's secret, encrypted. Keeping the same pair again changes nothing."""
        with self.pool.connection() as conn:
            conn.execute(
                f"INSERT INTO {TABLE} (api_key_sha256, user_id, secret) VALUES (%s, %s, %s) "
                "ON CONFLICT (api_key_sha256) DO NOTHING",
                (pair.digest, user_id, self.cipher.encrypt(pair.secret_key.encode())),
            )

    def forget(self, digest: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(f"DELETE FROM {TABLE} WHERE api_key_sha256 = %s", (digest,))

    def forget_all_but(self, user_id: UUID, digest: str) -> None:
        """After a rotation is recorded: the user's older secrets are gone for good."""
        with self.pool.connection() as conn:
            conn.execute(
                f"DELETE FROM {TABLE} WHERE user_id = %s AND api_key_sha256 <> %s",
                (user_id, digest),
            )

    def secret_of(self, digest: str) -> str | None:
        """The secret paired with the API key of this digest; None if there is none (or it
        was encrypted under another key, which is the same thing to a caller)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT secret FROM {TABLE} WHERE api_key_sha256 = %s", (digest,)
            ).fetchone()
        if row is None:
            return None
        try:
            return self.cipher.decrypt(bytes(row["secret"])).decode()
        except InvalidToken:
            return None
