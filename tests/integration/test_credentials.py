"""Secret keys at rest: encrypted in their own table, readable only with the configured key,
and gone for good once a user's keys are rotated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from api.credentials import TABLE, CredentialStore, KeyPair, new_encryption_key, new_key_pair
from projections.store import ReadStore


@pytest.fixture
def reads(database_url: str) -> Iterator[ReadStore]:
    store = ReadStore(database_url, max_size=2)
    yield store
    store.close()


def test_a_secret_is_stored_encrypted_and_read_back_only_with_its_key(reads: ReadStore) -> None:
    key = new_encryption_key()
    store = CredentialStore(reads.pool, key)
    store.create_table()
    pair = new_key_pair()
    store.keep(uuid.uuid4(), pair)
    with reads.pool.connection() as conn:
        raw = bytes(
            conn.execute(
                f"SELECT secret FROM {TABLE} WHERE api_key_sha256 = %s", (pair.digest,)
            ).fetchone()["secret"]
        )
        dump = str(conn.execute(f"SELECT * FROM {TABLE}").fetchall())
    assert pair.secret_key.encode() not in raw and pair.secret_key not in dump
    assert pair.api_key not in dump  # only the key's digest names the row
    assert store.secret_of(pair.digest) == pair.secret_key
    assert CredentialStore(reads.pool, new_encryption_key()).secret_of(pair.digest) is None
    assert store.secret_of(KeyPair("unknown", "x").digest) is None


def test_keeping_a_pair_twice_keeps_one_and_a_rotation_forgets_the_old(reads: ReadStore) -> None:
    store = CredentialStore(reads.pool, new_encryption_key())
    store.create_table()
    user = uuid.uuid4()
    old, new = new_key_pair(), new_key_pair()
    store.keep(user, old)
    store.keep(user, old)
    store.keep(user, new)
    store.forget_all_but(user, new.digest)
    assert store.secret_of(old.digest) is None
    assert store.secret_of(new.digest) == new.secret_key
    with reads.pool.connection() as conn:
        count = conn.execute(f"SELECT count(*) AS n FROM {TABLE} WHERE user_id = %s", (user,))
        assert count.fetchone()["n"] == 1


def test_a_key_pair_never_shows_its_secret_when_printed() -> None:
    pair = new_key_pair()
    assert pair.secret_key not in repr(pair) and pair.secret_key not in str(pair)
