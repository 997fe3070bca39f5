"""Text that PostgreSQL can store, for every read-model write.

PostgreSQL's `text` cannot hold a NUL character and its `jsonb` refuses the `\\u0000` escape.
An event holding a NUL was accepted by APIs that did not refuse it, and it stays in the event
store for ever: if a projection wrote it as it is, every attempt would fail and the read model
would stop at that event. So the projection layer replaces each such character with U+FFFD, the
Unicode replacement character: visible (an operator sees that something unprintable was
there), stable (a replay writes the same rows) and the same in every read model. The events
themselves are never changed. Lone UTF-16 surrogates (`"\\ud800"`, which JSON input can carry)
cannot reach today's event store, whose JSON is UTF-8, but UTF-8 cannot encode them for a read
model either, so they are replaced the same way.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

#: What an unstorable character becomes in a read model.
REPLACEMENT = "\ufffd"
#: Field types that hold no text.
_NO_TEXT = frozenset({int, float, bool, type(None), UUID, datetime, date, Decimal})
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates replaced; the same object when there are none.

    The checks before the regular expression keep the common case nearly free: `in` is a
    memchr, and an ASCII-only string (CPython knows without scanning) holds no surrogate.
    """
    if "\x00" in text or (not text.isascii() and _UNSTORABLE.search(text)):
        return _UNSTORABLE.sub(REPLACEMENT, text)
    return text


def storable(value: Any) -> Any:
    """`value` with every string in it made storable, keys of mappings included (they become
    jsonb keys); the same object when nothing needed replacing, so callers can tell."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        items = [(storable(k), storable(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        cleaned = [storable(item) for item in value]
        if all(new is old for new, old in zip(cleaned, value, strict=True)):
            return value
        return type(value)(cleaned) if isinstance(value, list) else tuple(cleaned)
    return value


def make_storable(domain_event: Any) -> None:
    """Replace unstorable text in a decoded event's fields before a projection sees it.

    Projections keep state derived from events in memory (cached aggregates, usage facts) and
    compare it with what they wrote; cleaning the event first keeps memory and tables equal,
    so a projection restarted from its tables decides exactly as one that ran throughout.
    The event object is the projection's own decoded copy: the event store is untouched.
    """
    fields = getattr(domain_event, "__dict__", None)
    if not fields:
        return
    changed = {}
    for name, value in fields.items():
        kind = type(value)
        if kind in _NO_TEXT or (kind is str and "\x00" not in value and value.isascii()):
            continue  # the common case, kept cheap: projections see every event
        cleaned = storable(value)
        if cleaned is not value:
            changed[name] = cleaned
    for name, cleaned in changed.items():
        object.__setattr__(domain_event, name, cleaned)
