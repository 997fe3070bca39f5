"""A cursor is what the API handed out, or a 422: never a parser's recursion or an overflow."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from api.cursors import MAX_CURSOR_LENGTH, cursor_keys
from projections.store import encode_cursor
from projections.usage_records import encode_record_cursor


def encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_the_cursors_the_api_hands_out_are_accepted() -> None:
    now = datetime.now(UTC)
    listing = encode_cursor(now, uuid4())
    usage = encode_record_cursor(now, 1, uuid4(), str(uuid4()))
    assert len(cursor_keys(listing)) == 2 and len(cursor_keys(usage)) == 4
    assert max(len(listing), len(usage)) < MAX_CURSOR_LENGTH // 2


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100 + b"]" * 100,
        b"[[1], 2]",
        b'{"a": 1}',
        b"[]",
        b"[Infinity, 1]",
        b"[-Infinity]",
        b"[NaN]",
        b"[1e400]",
        b"[1.5]",
        b"[true]",
        b"[null]",
        b"[" + b"9" * 30 + b"]",
        b"not json",
        b"\xff\xfe",
    ],
)
def test_anything_else_is_refused_before_a_decoder_sees_it(raw: bytes) -> None:
    with pytest.raises(ValueError):
        cursor_keys(encoded(raw))


def test_a_cursor_too_long_to_be_ours_is_refused_without_decoding() -> None:
    deep = encoded(b"[" * 50_000 + b"]" * 50_000)
    with pytest.raises(ValueError, match="characters"):
        cursor_keys(deep)


def test_a_cursor_that_is_not_base64_is_refused() -> None:
    for cursor in ("garbage!", "", "====", "a"):
        with pytest.raises(ValueError):
            cursor_keys(cursor)
    assert json.loads(base64.urlsafe_b64decode(encoded(b'["a"]') + "===")) == ["a"]
