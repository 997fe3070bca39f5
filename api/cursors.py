"""Cursors as the API hands them out, checked before any query decodes one.

A cursor is base64url of a short JSON array of strings and integers (the last row's keys).
Anything else is refused with a 422 naming `cursor`, before a decoder meets it: a cursor that
decodes to deeply nested JSON once overflowed the parser's recursion, one holding `Infinity`
once reached `int()`. The bounded length makes deep nesting impossible; the shape check makes
the rest explicit.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pydantic_core import PydanticCustomError

#: The longest cursor the API hands out is about 160 characters.
MAX_CURSOR_LENGTH = 512
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
#: The keys of a row fit in a bigint.
_BIGINT = 2**63


class _NotACursor(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotACursor(f"{name} is not a number a cursor holds")


def cursor_keys(cursor: str) -> list[str | int]:
    """The keys a cursor holds; ValueError when it is not a cursor this API handed out."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        raise ValueError(f"not a cursor returned by this API (1-{MAX_CURSOR_LENGTH} characters)")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        keys = json.loads(raw, parse_constant=_refuse_constant)
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError("not a cursor returned by this API") from error
    if not isinstance(keys, list) or not keys:
        raise ValueError("not a cursor returned by this API")
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise ValueError("not a cursor returned by this API")
        if isinstance(key, int) and not -_BIGINT <= key < _BIGINT:
            raise ValueError("not a cursor returned by this API")
    return keys


#: The error type of a well-formed cursor the API never handed out: no schema can say which
#: are, so it is refused as a parameter error (431), not as malformed (430).
UNKNOWN_CURSOR = "unknown_cursor"


def check_cursor(cursor: str | None) -> str | None:
    """The `cursor` parameter's validator: a 422 naming it."""
    if cursor is not None:
        try:
            cursor_keys(cursor)
        except ValueError as error:
            raise PydanticCustomError(UNKNOWN_CURSOR, str(error)) from None
    return cursor
