"""CloudStack request signatures, verified exactly as CloudStack clients compute them.

The `/client/api` endpoint has no session and no bearer token: a request is authenticated by
its `signature` alone, an HMAC over the request's own parameters. The canonical string we
rebuild must therefore be, byte for byte, the one the client hashed, or every request is
refused; and anything we accept beyond that is a way in. The rules below are those of
CloudStack's `ApiServer.verifyRequest` and of the Python `cs` client (5.2), and the tests sign
with `cs` itself:

* every parameter except `signature` takes part, with its name as sent;
* values are percent-encoded UTF-8, spaces as `%20` (never `+`); `cs` leaves `*` and `~`
  unescaped (`urllib.parse.quote(v, safe="*")`);
* parameters are sorted by name *case-sensitively* (`sorted` in `cs`, `Collections.sort` in
  CloudStack), joined as `name=value` with `&`, and only then is the whole string lower-cased.
  A case-insensitive sort would not match: `displayText` sorts before `displayname`;
* signature = base64(HMAC-SHA1(secret key, that string)).

Two encodings besides `cs`'s are accepted, because they are what the other CloudStack clients
hash and they differ from `cs` only for `*` and `~`: Java's `URLEncoder` (CloudStack's own
canonical form, `~` as `%7E`) and Go's `url.QueryEscape` (CloudMonkey, go-cloudstack: `*` as
`%2A`). Each is an unambiguous encoding of the same parameters, so accepting them lets no
unsigned change through; the extra HMACs are computed only when a value holds `*` or `~`.

Consequences that are CloudStack's own and kept for compatibility: the case of ASCII letters,
in names and values, is not covered by the signature (what signs `name=Web` signs `name=web`).

Replay: `signatureVersion=3` requires `expires` (`2026-12-03T10:00:00+0000`, or with `Z` or
`+00:00`), and a request is refused once `expires` is past (`expires == now` still passes, as in
CloudStack). CloudStack puts no bound on how far ahead `expires` may be, which makes a leaked URL
with a far-off `expires` replayable for that long; here it may be at most `max_validity` ahead,
24 hours by default: well past `cs`'s default of 10 minutes and any sane configured
`expiration` plus clock skew, yet a leaked URL dies within a day. An `expires` is checked
whenever present, even without `signatureVersion=3` (CloudStack ignores it then): renaming
`signatureVersion` to `signatureversion` leaves the lower-cased string, hence the signature,
unchanged, so that must not switch expiry off. Requests with neither, as older clients send them
and CloudStack accepts, are accepted unless `allow_unexpiring=False`.

Parameter names are refused when two differ only in case (which one would a command read?) or
when one holds `&` or `=` (names are not escaped, so such a name could make two different
requests hash alike). The secret and the expected signature never appear in a refusal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import quote

#: How far ahead of now an `expires` may lie by default (see the module docstring).
DEFAULT_MAX_VALIDITY = timedelta(hours=24)
#: The only signatureVersion with a meaning: 3, which requires `expires`.
SUPPORTED_SIGNATURE_VERSION = "3"
#: CloudStack parses `expires` with SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ssZ"); `%z` also takes
#: `Z` and `+00:00`.
_EXPIRES_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z")
#: Which of `*` and `~` each client leaves unescaped: cs (Python), Java URLEncoder, Go.
_ENCODINGS = ("*~", "*", "~")
_CS_ENCODING = "*~"


class Refusal(StrEnum):
    """Why a request's signature was refused, for logs and tests (the client is told 401)."""

    MISSING_API_KEY = "missing apiKey"
    MISSING_SIGNATURE = "missing signature"
    MALFORMED_PARAMETERS = "malformed parameters"
    UNSUPPORTED_VERSION = "signatureVersion unsupported"
    SIGNATURE_MISMATCH = "signature mismatch"
    MISSING_EXPIRES = "expires missing"
    MALFORMED_EXPIRES = "expires malformed"
    EXPIRED = "expired"
    EXPIRES_TOO_FAR = "expires too far ahead"


class SignatureRefused(Exception):
    """A request whose signature does not prove it; `reason` never holds the secret."""

    def __init__(self, reason: str, *, kind: Refusal) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def signature_of(params: Mapping[str, str], secret: str) -> str:
    """The signature `cs` sends for these parameters (any `signature` among them is ignored)."""
    return _hmac(_canonical(params, _CS_ENCODING), secret)


def api_key_of(params: Mapping[str, str]) -> str:
    """The `apiKey` naming whose secret signs the request (the name matched in any case)."""
    key = _named(params, "apiKey")
    if not key:
        raise SignatureRefused("the request carries no apiKey", kind=Refusal.MISSING_API_KEY)
    return key


def verify(
    params: Mapping[str, str],
    secret: str,
    now: datetime,
    *,
    max_validity: timedelta | None = DEFAULT_MAX_VALIDITY,
    allow_unexpiring: bool = True,
) -> None:
    """Return if `params` (query and form parameters together) are signed with `secret` and
    not expired at `now`; raise SignatureRefused otherwise. `max_validity=None` leaves
    `expires` unbounded, as CloudStack does."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    _check_names(params)
    presented = _named(params, "signature")
    if not presented:
        raise SignatureRefused("the request carries no signature", kind=Refusal.MISSING_SIGNATURE)
    version = _named(params, "signatureVersion")
    if version is not None and version != SUPPORTED_SIGNATURE_VERSION:
        raise SignatureRefused(
            f"signatureVersion {version[:16]!r} is not supported (only 3 is)",
            kind=Refusal.UNSUPPORTED_VERSION,
        )
    if not _signature_matches(presented, params, secret):
        raise SignatureRefused(
            "the signature does not match the request's parameters",
            kind=Refusal.SIGNATURE_MISMATCH,
        )
    _check_expiry(params, version, now, max_validity, allow_unexpiring)


def parse_expires(text: str) -> datetime:
    """An `expires` value as a timezone-aware datetime, in any of the forms clients send."""
    for form in _EXPIRES_FORMATS:
        try:
            return datetime.strptime(text, form)
        except ValueError:
            continue
    raise SignatureRefused(
        f"expires {text[:40]!r} is not a timestamp like 2026-12-03T10:00:00+0000",
        kind=Refusal.MALFORMED_EXPIRES,
    )


def _check_expiry(
    params: Mapping[str, str],
    version: str | None,
    now: datetime,
    max_validity: timedelta | None,
    allow_unexpiring: bool,
) -> None:
    text = _named(params, "expires")
    if text is None:
        if version == SUPPORTED_SIGNATURE_VERSION or not allow_unexpiring:
            raise SignatureRefused(
                "signatureVersion=3 requires an expires parameter"
                if version
                else "requests must carry signatureVersion=3 and expires",
                kind=Refusal.MISSING_EXPIRES,
            )
        return
    expires = parse_expires(text)
    if expires < now:
        raise SignatureRefused(
            f"the request expired at {_utc(expires)} ({_utc(now)} now)", kind=Refusal.EXPIRED
        )
    if max_validity is not None and expires - now > max_validity:
        raise SignatureRefused(
            f"expires {_utc(expires)} is more than {max_validity} ahead of {_utc(now)}",
            kind=Refusal.EXPIRES_TOO_FAR,
        )


def _check_names(params: Mapping[str, str]) -> None:
    seen: set[str] = set()
    for name in params:
        if "&" in name or "=" in name:
            raise SignatureRefused(
                f"parameter name {name[:40]!r} holds '&' or '='",
                kind=Refusal.MALFORMED_PARAMETERS,
            )
        folded = name.lower()
        if folded in seen:
            raise SignatureRefused(
                f"parameter {name[:40]!r} is given twice (names differing only in case)",
                kind=Refusal.MALFORMED_PARAMETERS,
            )
        seen.add(folded)


def _named(params: Mapping[str, str], name: str) -> str | None:
    """The value of the parameter called `name` in any case (names are unique in any case)."""
    wanted = name.lower()
    return next((value for key, value in params.items() if key.lower() == wanted), None)


def _signature_matches(presented: str, params: Mapping[str, str], secret: str) -> bool:
    # Base64 never holds a space: one is a '+' that a client left unescaped in the URL.
    given = presented.replace(" ", "+").encode("utf-8")
    matched = False
    for expected in _accepted_signatures(params, secret):
        # No early exit: every candidate is compared, each in constant time.
        matched |= hmac.compare_digest(given, expected.encode("ascii"))
    return matched


def _accepted_signatures(params: Mapping[str, str], secret: str) -> Iterator[str]:
    encodings = _ENCODINGS if _needs_variants(params) else (_CS_ENCODING,)
    for canonical in dict.fromkeys(_canonical(params, encoding) for encoding in encodings):
        yield _hmac(canonical, secret)


def _needs_variants(params: Mapping[str, str]) -> bool:
    return any("*" in value or "~" in value for value in params.values())


def _canonical(params: Mapping[str, str], literal: str) -> str:
    """The string CloudStack signs: sorted by name as sent, encoded, joined, lower-cased."""
    pairs = sorted((name, value) for name, value in params.items() if name.lower() != "signature")
    return "&".join(f"{name}={_encoded(value, literal)}" for name, value in pairs).lower()


def _encoded(value: str, literal: str) -> str:
    """Percent-encoded UTF-8, spaces as %20, leaving the marks in `literal` as they are."""
    encoded = quote(value, safe="*")  # leaves letters, digits, '-', '.', '_', '~' and '*'
    if "*" not in literal:
        encoded = encoded.replace("*", "%2A")
    if "~" not in literal:
        encoded = encoded.replace("~", "%7E")
    return encoded


def _hmac(canonical: str, secret: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
