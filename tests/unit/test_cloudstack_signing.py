"""The /client/api signature check accepts what the real `cs` client signs, and nothing else.

Requests are signed by an unchanged `cs.CloudStack` whose HTTP session is replaced by one that
keeps the prepared request: its URL query (GET) or form body (POST) is decoded as the endpoint
decodes it and handed to `verify`, so the test covers `cs`'s signing, its transport encoding
and our rebuilding of the canonical string together.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from cs import CloudStack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from api.cloudstack.signing import (
    DEFAULT_MAX_VALIDITY,
    Refusal,
    SignatureRefused,
    api_key_of,
    parse_expires,
    signature_of,
    verify,
)

KEY = "stratus-api-key"
SECRET = "s3cr3t-Key/with+base64=="
ENDPOINT = "http://stratus.test/client/api"
#: Every mark a URL or a form body treats specially, and non-ASCII text.
AWKWARD = "a b*c/d+e=f&g~h%i?j#k 'l\" été 云 🚀"


class CapturingSession:
    """A requests session that keeps every prepared request and answers an empty list."""

    def __init__(self) -> None:
        self.sent: list[requests.PreparedRequest] = []

    def send(self, prepped: requests.PreparedRequest, **_: Any) -> requests.Response:
        self.sent.append(prepped)
        response = requests.Response()
        response.status_code = 200
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps({"listzonesresponse": {}}).encode()
        return response


def received(prepped: requests.PreparedRequest) -> dict[str, str]:
    """The parameters as the endpoint decodes them: URL query for GET, form body for POST."""
    if prepped.method == "GET":
        encoded = urlsplit(prepped.url or "").query
    else:
        body = prepped.body
        encoded = body.decode() if isinstance(body, bytes) else str(body or "")
    pairs = parse_qsl(encoded, keep_blank_values=True, strict_parsing=bool(encoded))
    params = dict(pairs)
    assert len(params) == len(pairs), "cs sent a parameter twice"
    return params


def signed_by_cs(
    command: str = "listZones",
    *,
    method: str = "get",
    secret: str = SECRET,
    expiration: timedelta | int = timedelta(minutes=10),
    **params: Any,
) -> dict[str, str]:
    """The parameters an unchanged cs client sends for `command(**params)`."""
    return sent_by_cs(command, params, method=method, secret=secret, expiration=expiration)


def sent_by_cs(
    command: str,
    params: Mapping[str, Any],
    *,
    method: str = "get",
    secret: str = SECRET,
    expiration: timedelta | int = timedelta(minutes=10),
) -> dict[str, str]:
    session = CapturingSession()
    client = CloudStack(
        ENDPOINT, key=KEY, secret=secret, method=method, expiration=expiration, session=session
    )
    getattr(client, command)(**params)
    [prepped] = session.sent
    assert prepped.method == method.upper()
    return received(prepped)


def refusal(params: Mapping[str, str], **options: Any) -> SignatureRefused:
    with pytest.raises(SignatureRefused) as refused:
        verify(params, options.pop("secret", SECRET), options.pop("now", now()), **options)
    return refused.value


def now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_request_signed_by_cs_verifies_for_get_and_post(method: str) -> None:
    params = signed_by_cs("listVirtualMachines", method=method, name=AWKWARD, zoneid="z-1")
    assert params["name"] == AWKWARD
    verify(params, SECRET, now())


@pytest.mark.parametrize("method", ["get", "post"])
def test_cs_signs_with_version_3_and_an_expires_ten_minutes_ahead_by_default(method: str) -> None:
    before = now()
    params = signed_by_cs(method=method)
    assert params["signatureVersion"] == "3"
    assert params["expires"].endswith("+0000")
    expires = parse_expires(params["expires"])
    assert timedelta(minutes=9) < expires - before <= timedelta(minutes=10, seconds=1)
    assert {"apiKey", "command", "response", "signature"} <= params.keys()
    verify(params, SECRET, now())


@pytest.mark.parametrize("mark", [" ", "*", "/", "+", "=", "&", "~", "%", "é", "云", "🚀", ""])
@pytest.mark.parametrize("method", ["get", "post"])
def test_values_holding_any_special_mark_verify(method: str, mark: str) -> None:
    verify(signed_by_cs(method=method, name=f"x{mark}y", keyword=mark), SECRET, now())


@pytest.mark.parametrize("method", ["get", "post"])
def test_dicts_lists_booleans_and_numbers_as_cs_flattens_them_verify(method: str) -> None:
    params = signed_by_cs(
        "deployVirtualMachine",
        method=method,
        details={"cpuNumber": 2, "memory": "1 GiB"},
        tags=[{"key": "env", "value": "a&b"}, {"key": "tier", "value": "web=1"}],
        securitygroupids=["sg-1", "sg 2"],
        startvm=False,
        size=20,
    )
    assert params["details[0].cpuNumber"] == "2"
    assert params["tags[1].value"] == "web=1"
    assert params["securitygroupids"] == "sg-1,sg 2"
    assert params["startvm"] == "false"
    verify(params, SECRET, now())


def test_names_are_sorted_case_sensitively_before_the_string_is_lower_cased() -> None:
    # 'displayText' < 'displayname' case-sensitively, the other way round case-insensitively.
    params = signed_by_cs(displayText="t", displayname="n")
    verify(params, SECRET, now())
    unsigned = {name: value for name, value in params.items() if name != "signature"}
    folded = "&".join(f"{n}={v}" for n, v in sorted(unsigned.items(), key=lambda p: p[0].lower()))
    digest = hmac.new(SECRET.encode(), folded.lower().encode(), hashlib.sha1).digest()
    assert base64.b64encode(digest).decode() != params["signature"]


def test_signature_of_is_what_cs_sends() -> None:
    params = signed_by_cs(method="post", name=AWKWARD, details={"a": "b"})
    assert signature_of(params, SECRET) == params["signature"]


def test_cloudstacks_own_java_encoding_of_tilde_and_gos_of_star_are_accepted_too() -> None:
    params = {"apiKey": KEY, "command": "listZones", "name": "a~b*c"}
    java = "apiKey=stratus-api-key&command=listZones&name=a%7Eb*c".lower()
    go = "apiKey=stratus-api-key&command=listZones&name=a~b%2Ac".lower()
    for canonical in (java, go):
        digest = hmac.new(SECRET.encode(), canonical.encode(), hashlib.sha1).digest()
        verify({**params, "signature": base64.b64encode(digest).decode()}, SECRET, now())


def test_a_signature_whose_plus_signs_arrived_as_spaces_still_verifies() -> None:
    # A '+' left unescaped in a URL decodes as a space; base64 never holds one.
    for attempt in range(200):
        params = signed_by_cs(name=str(attempt))
        if "+" in params["signature"]:
            break
    else:
        pytest.fail("no signature with a '+' in 200 requests")
    verify({**params, "signature": params["signature"].replace("+", " ")}, SECRET, now())


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_tampered_parameter_is_a_signature_mismatch(method: str) -> None:
    params = signed_by_cs(method=method, name="web-1")
    assert refusal({**params, "name": "web-2"}).kind is Refusal.SIGNATURE_MISMATCH


def test_an_added_parameter_is_a_signature_mismatch() -> None:
    params = signed_by_cs(name="web-1")
    assert refusal({**params, "zoneid": "z-9"}).kind is Refusal.SIGNATURE_MISMATCH


def test_a_removed_parameter_is_a_signature_mismatch() -> None:
    params = signed_by_cs(name="web-1", zoneid="z-1")
    del params["zoneid"]
    assert refusal(params).kind is Refusal.SIGNATURE_MISMATCH


def test_a_wrong_secret_is_a_signature_mismatch() -> None:
    params = signed_by_cs(secret="another secret")
    assert refusal(params).kind is Refusal.SIGNATURE_MISMATCH


def test_a_removed_signature_is_refused_as_missing() -> None:
    params = signed_by_cs()
    del params["signature"]
    assert refusal(params).kind is Refusal.MISSING_SIGNATURE
    assert refusal({**params, "signature": ""}).kind is Refusal.MISSING_SIGNATURE


def test_a_non_ascii_signature_is_a_mismatch_not_a_crash() -> None:
    assert refusal({**signed_by_cs(), "signature": "été"}).kind is Refusal.SIGNATURE_MISMATCH


def test_an_expired_request_is_refused_saying_when_it_expired() -> None:
    params = signed_by_cs()
    later = now() + timedelta(minutes=11)
    refused = refusal(params, now=later)
    assert refused.kind is Refusal.EXPIRED
    assert params["expires"] in refused.reason


def test_a_request_is_accepted_up_to_the_second_it_expires() -> None:
    params = signed_by_cs()
    verify(params, SECRET, parse_expires(params["expires"]))
    at_expiry_plus_one = parse_expires(params["expires"]) + timedelta(seconds=1)
    assert refusal(params, now=at_expiry_plus_one).kind is Refusal.EXPIRED


def test_an_expires_more_than_a_day_ahead_is_refused_unless_the_bound_is_lifted() -> None:
    params = signed_by_cs(expiration=DEFAULT_MAX_VALIDITY + timedelta(hours=1))
    assert refusal(params).kind is Refusal.EXPIRES_TOO_FAR
    verify(params, SECRET, now(), max_validity=None)
    verify(params, SECRET, now(), max_validity=timedelta(days=2))
    verify(signed_by_cs(expiration=timedelta(hours=23)), SECRET, now())


def test_version_3_without_expires_is_refused() -> None:
    params = signed_by_cs(expiration=-1, signatureVersion="3")
    assert "expires" not in params
    assert refusal(params).kind is Refusal.MISSING_EXPIRES


@pytest.mark.parametrize("expires", ["tomorrow", "2026-12-03T10:00:00", "2026-12-03", "", "1e9"])
def test_a_malformed_expires_is_refused(expires: str) -> None:
    params = signed_by_cs(expiration=-1, signatureVersion="3", expires=expires)
    assert refusal(params).kind is Refusal.MALFORMED_EXPIRES


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-12-03T10:00:00+0000", "2026-12-03T10:00:00"),
        ("2026-12-03T10:00:00Z", "2026-12-03T10:00:00"),
        ("2026-12-03T10:00:00+00:00", "2026-12-03T10:00:00"),
        ("2026-12-03T11:30:00+0130", "2026-12-03T10:00:00"),
        ("2026-12-03T10:00:00.250-0200", "2026-12-03T12:00:00.250000"),
    ],
)
def test_expires_is_read_in_every_offset_form(text: str, utc: str) -> None:
    assert parse_expires(text).astimezone(UTC).replace(tzinfo=None).isoformat() == utc


def test_an_expires_without_version_3_is_still_enforced() -> None:
    params = signed_by_cs(expiration=-1, expires="2020-01-01T00:00:00+0000")
    assert "signatureVersion" not in params
    assert refusal(params).kind is Refusal.EXPIRED


@pytest.mark.parametrize("version", ["2", "1", "4", ""])
def test_a_signature_version_other_than_3_is_unsupported(version: str) -> None:
    params = signed_by_cs(expiration=-1, signatureVersion=version)
    assert refusal(params).kind is Refusal.UNSUPPORTED_VERSION


def test_an_unversioned_request_without_expires_is_accepted_only_when_allowed() -> None:
    params = signed_by_cs(expiration=-1)
    assert "signatureVersion" not in params and "expires" not in params
    verify(params, SECRET, now())
    assert refusal(params, allow_unexpiring=False).kind is Refusal.MISSING_EXPIRES


def test_names_differing_only_in_case_are_refused() -> None:
    params = {**signed_by_cs(name="a"), "NAME": "b"}
    assert refusal(params).kind is Refusal.MALFORMED_PARAMETERS


def test_a_name_holding_an_ampersand_or_equals_is_refused() -> None:
    # {"a=1&b": "2"} would hash like {"a": "1", "b": "2"}.
    params = signed_by_cs(a="1", b="2")
    forged = {k: v for k, v in params.items() if k not in ("a", "b")} | {"a=1&b": "2"}
    assert refusal(forged).kind is Refusal.MALFORMED_PARAMETERS


def test_a_case_only_change_of_a_value_is_not_detected_as_in_cloudstack() -> None:
    params = signed_by_cs(name="Web")
    verify({**params, "name": "wEB"}, SECRET, now())


def test_refusals_never_show_the_secret_or_the_expected_signature() -> None:
    params = signed_by_cs(name="x")
    expected = params["signature"]
    tampered = {**params, "name": "y", "signature": "AAAA"}
    expired = {**params}
    for case, options in [
        (tampered, {}),
        (expired, {"now": now() + timedelta(hours=1)}),
        ({**params, "signatureVersion": "2"}, {}),
        ({k: v for k, v in params.items() if k != "signature"}, {}),
    ]:
        refused = refusal(case, **options)
        for shown in (refused.reason, str(refused), repr(refused)):
            assert SECRET not in shown and expected not in shown


def test_the_api_key_is_found_in_any_case_and_its_absence_refused() -> None:
    assert api_key_of(signed_by_cs()) == KEY
    assert api_key_of({"apikey": "k"}) == "k"
    with pytest.raises(SignatureRefused) as refused:
        api_key_of({"command": "listZones"})
    assert refused.value.kind is Refusal.MISSING_API_KEY


def test_a_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(signed_by_cs(), SECRET, datetime.now())


#: Parameter names cs handles itself or consumes as options.
RESERVED = {
    "apikey",
    "command",
    "response",
    "signature",
    "signatureversion",
    "expires",
    "page",
    "pagesize",
    "json",
    "opcode_name",
    "fetch_list",
    "fetch_result",
    "headers",
}
names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True).filter(
    lambda name: name.lower() not in RESERVED
)
values = st.text(max_size=30)
parameters = st.lists(st.tuples(names, values), max_size=6, unique_by=lambda p: p[0].lower())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=parameters, method=st.sampled_from(["get", "post"]))
def test_any_parameters_signed_by_cs_verify(params: list[tuple[str, str]], method: str) -> None:
    sent = sent_by_cs("listZones", dict(params), method=method)
    assert {name: sent[name] for name, _ in params} == dict(params)
    verify(sent, SECRET, now())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=parameters.filter(lambda ps: any(value for _, value in ps)),
    method=st.sampled_from(["get", "post"]),
    choice=st.integers(min_value=0),
    replacement=st.characters(exclude_categories=["Cs"]),
)
def test_any_single_character_change_of_a_value_fails(
    params: list[tuple[str, str]], method: str, choice: int, replacement: str
) -> None:
    sent = sent_by_cs("listZones", dict(params), method=method)
    name, value = [(n, v) for n, v in params if v][choice % sum(1 for _, v in params if v)]
    index = choice % len(value)
    original = value[index]
    # The lower-cased string cannot tell an ASCII letter from its other case (CloudStack's rule).
    assume(original != replacement)
    assume(not (original + replacement).isascii() or original.lower() != replacement.lower())
    changed = value[:index] + replacement + value[index + 1 :]
    assert refusal({**sent, name: changed}).kind is Refusal.SIGNATURE_MISMATCH
