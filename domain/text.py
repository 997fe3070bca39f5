"""Text a cloud can store: the one validated string type of every free-text input.

An event is kept as JSON, so it happily holds a NUL; the read models are PostgreSQL text
columns, which cannot. A name with a NUL was once accepted and then stopped every projection
that met it (ARCHITECTURE rule 13). So every free-text field and every string parameter is one
of the types below, each with a bounded length and none of the characters a text column, a JSON
document or a terminal cannot take safely:

- control characters: C0 (U+0000-U+001F, tab and newline included: these are single-line
  fields), DEL (U+007F) and C1 (U+0080-U+009F);
- the line and paragraph separators U+2028 and U+2029 (a line break by another name);
- the noncharacters U+FDD0-U+FDEF, U+FFFE and U+FFFF;
- lone UTF-16 surrogates U+D800-U+DFFF, which UTF-8 cannot encode (a JSON text can still
  spell one as an escape).

The regular expression that validates is the OpenAPI `pattern` of every such field, so a client
reads what the API enforces. The pattern leaves the surrogates out: JSON Schema tools cannot
compile a class holding them (Schemathesis silently drops such a pattern), and a well-formed
string has none; the validator refuses them all the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from domain.errors import InvalidParameter

#: The characters no text field takes, as a regular-expression class body. Written with
#: `\uXXXX` escapes so that it reads the same in Python and in ECMA-262 (JSON Schema).
FORBIDDEN_CHARACTERS = r"\u0000-\u001F\u007F-\u009F\u2028\u2029\uFDD0-\uFDEF\uFFFE\uFFFF"
#: What every text field matches, as documented in the OpenAPI document.
TEXT_PATTERN = f"^[^{FORBIDDEN_CHARACTERS}]*$"
_FORBIDDEN = re.compile(f"[{FORBIDDEN_CHARACTERS}\\uD800-\\uDFFF]")


def forbidden_character(value: str) -> str | None:
    """Why `value` cannot be stored, naming the first offending character; None if it can."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return None
    return (
        f"must not contain control characters, line separators, surrogates or "
        f"noncharacters (found U+{ord(found.group()):04X} at position {found.start()})"
    )


def check_text(value: str) -> str:
    """The validator of every text type: a ValueError (so a 422 naming the field) for a
    character that cannot be stored."""
    reason = forbidden_character(value)
    if reason is not None:
        raise ValueError(reason)
    return value


def check_storable(value: str, field: str) -> None:
    """The domain's own guard, for values that reach it by another door than the API's types
    (InvalidParameter names the field)."""
    reason = forbidden_character(value)
    if reason is not None:
        raise InvalidParameter(reason, field=field)


@dataclass(frozen=True)
class DocumentedPattern:
    """Puts the pattern a validator enforces into the field's JSON schema (a Python validator
    has no schema of its own), with a `format` naming what no pattern can say."""

    pattern: str = TEXT_PATTERN
    format: str | None = None

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        if self.format is not None:
            schema["format"] = self.format
        return schema


#: What makes a `str` a text type; each type adds its bounds.
STORABLE = AfterValidator(check_text)
DOCUMENTED = DocumentedPattern()

#: A resource's name or display name (CloudStack caps names at 255 characters).
Name = Annotated[str, StringConstraints(min_length=1, max_length=255), STORABLE, DOCUMENTED]
#: A short label: a tag, an OS type.
Label = Annotated[str, StringConstraints(min_length=1, max_length=64), STORABLE, DOCUMENTED]
#: A free-text message (a simulator fault's message), possibly empty.
Message = Annotated[str, StringConstraints(min_length=0, max_length=500), STORABLE, DOCUMENTED]
#: A value to filter a listing by (a state, a type): never longer than what it matches.
FilterText = Annotated[str, StringConstraints(min_length=1, max_length=100), STORABLE, DOCUMENTED]
#: A client's idempotency key (the `Idempotency-Key` header).
IdempotencyKeyText = Annotated[
    str, StringConstraints(min_length=1, max_length=255), STORABLE, DOCUMENTED
]
