"""Where Stratus reaches a hypervisor, a BMC or storage: addresses, URIs and paths, never with
credentials.

What an admin records (a host's address, a cluster's libvirt URI, a pool's path) goes into
events, Temporal histories and job summaries, which keep it forever and show it to every
admin. A password smuggled into one of them (`root:pw@10.0.0.77`, `nfs://admin:pw@filer/x`,
`qemu+tcp://h/system?password=pw`) would be kept forever too (ARCHITECTURE rule 10). So each
is refused when it carries any user information (`user@`, `user:password@`) or any parameter
whose name says secret (password, passwd, pwd, secret, token, key, auth, credential, signature,
session, user, login), however it is spelled: in any case, percent-encoded (once or more), or
in fullwidth forms that Unicode normalization folds to `@`. The agent that serves the cluster
holds the credentials, in its own configuration.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any
from urllib.parse import unquote

from pydantic import AfterValidator, BeforeValidator, StringConstraints

from domain.errors import InvalidParameter
from domain.text import (
    FORBIDDEN_CHARACTERS,
    STORABLE,
    TEXT_PATTERN,
    DocumentedPattern,
    check_storable,
)

#: The reason every refusal gives, after naming what it found.
WHERE_CREDENTIALS_BELONG = (
    "credentials belong in the agent's configuration (STRATUS_AGENT_CONFIG), never in what "
    "Stratus records"
)
#: A parameter name that says it carries a secret (or half of a login).
SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|key|auth|cred|sig|session|user|login", re.IGNORECASE
)
_PARAMETER = re.compile(r"[?&;#]\s*([^=&;#?]*?)\s*=")
_AUTHORITY_END = re.compile(r"[/?#]")
#: How many layers of percent-encoding are peeled off (`%2540` is `@` encoded twice).
_DECODING_ROUNDS = 8

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_PORT = (
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}"
    r"|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
#: host[:port]: a DNS name or IPv4 address, or an IPv6 address in brackets; port 1-65535.
ADDRESS_PATTERN = rf"^(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]{{2,45}}\])(?::{_PORT})?$"
#: scheme:rest, as a libvirt URI (template) is; no spaces.
URI_PATTERN = rf"^[A-Za-z][A-Za-z0-9+.-]*:[^ {FORBIDDEN_CHARACTERS}]*$"
_URI = re.compile(URI_PATTERN)
_ADDRESS = re.compile(ADDRESS_PATTERN)


def _readings(value: str) -> list[str]:
    """The value as given, and as a parser that normalizes and percent-decodes would read it."""
    readings = [value]
    text = unicodedata.normalize("NFKC", value)
    for _ in range(_DECODING_ROUNDS):
        readings.append(text)
        decoded = unicodedata.normalize("NFKC", unquote(text))
        if decoded == text:
            break
        text = decoded
    return readings


def _authority(reading: str) -> str:
    """The part of a location that names the server: after `scheme://` (or a leading `//`) up
    to the path, or, without a scheme, everything before the first slash (`user@host:/export`).
    A backslash does not end it: some parsers read it as a slash, others as part of the host."""
    _scheme, separator, rest = reading.partition("://")
    if not separator:
        rest = reading[2:] if reading.startswith("//") else reading
    return _AUTHORITY_END.split(rest, maxsplit=1)[0]


def credentials_in(value: str) -> str | None:
    """What in `value` is a credential, in words; None when it carries none."""
    for reading in _readings(value):
        if "@" in _authority(reading):
            return "user information (user@ or user:password@)"
        for match in _PARAMETER.finditer(reading):
            name = match.group(1)
            if SECRET_PARAMETER.search(name):
                return f"the parameter {name!r}"
    return None


def credentials_refusal(value: str) -> str | None:
    """The refusal message for a location carrying credentials; None when it carries none."""
    found = credentials_in(value)
    if found is None:
        return None
    return f"must not carry credentials ({found}): {WHERE_CREDENTIALS_BELONG}"


def check_location(value: str, field: str) -> None:
    """The domain's own check of a recorded address, URI or path (InvalidParameter names the
    field), whichever door the value came in by."""
    reason = credentials_refusal(value)
    if reason is not None:
        raise InvalidParameter(reason, field=field)
    check_storable(value, field)


def check_address(value: str, field: str) -> None:
    """The domain's own check of a recorded host[:port] (InvalidParameter names the field)."""
    check_location(value, field)
    try:
        _check_address(value)
    except ValueError as error:
        raise InvalidParameter(str(error), field=field) from None


def _refuse_credentials(value: Any) -> Any:
    """Before the syntax is checked, so that `root:pw@host` is told why, not just "no match"."""
    if isinstance(value, str):
        reason = credentials_refusal(value)
        if reason is not None:
            raise ValueError(reason)
    return value


def _check_address(value: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise ValueError(
            "must be host[:port]: a DNS name or an IPv4 address, or an IPv6 address in "
            "brackets, with a port from 1 to 65535"
        )
    return value


def _check_uri(value: str) -> str:
    if not _URI.fullmatch(value):
        raise ValueError("must be a URI with a scheme, such as qemu+tls://{address}/system")
    return value


#: Format names of the three kinds of location in the OpenAPI document.
ADDRESS_FORMAT = "network-address"
URI_FORMAT = "uri-without-credentials"
PATH_FORMAT = "path-without-credentials"

#: host[:port], e.g. a host's or a BMC's address, a vCenter or pool master.
NetworkAddress = Annotated[
    str,
    BeforeValidator(_refuse_credentials),
    StringConstraints(min_length=1, max_length=261),
    AfterValidator(_check_address),
    DocumentedPattern(ADDRESS_PATTERN, ADDRESS_FORMAT),
]
#: A URI (template), e.g. a cluster's libvirt URI.
LocationUri = Annotated[
    str,
    BeforeValidator(_refuse_credentials),
    StringConstraints(min_length=1, max_length=500),
    STORABLE,
    AfterValidator(_check_uri),
    DocumentedPattern(URI_PATTERN, URI_FORMAT),
]
#: A storage path: a directory, an export URI, a datastore or SR name.
StoragePath = Annotated[
    str,
    BeforeValidator(_refuse_credentials),
    StringConstraints(min_length=1, max_length=1000),
    STORABLE,
    DocumentedPattern(TEXT_PATTERN, PATH_FORMAT),
]
