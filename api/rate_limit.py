"""Rate limiting per caller: a token bucket per key, answered as CloudStack answers it.

Every caller has a bucket of `burst` tokens that refills at `rate` tokens a second, up to
`burst`. A request takes one token; one that finds less than a token is refused with 429,
errorcode 429 (`API_LIMIT_EXCEEDED`), in the API's error format, with `Retry-After` saying in
whole seconds (at least 1, rounded up) when the next token will be there.

The request admission (api/admission.py) checks the bucket right after it has identified the
caller, before the body is read. The key is the caller's identity, never the raw API key: its
user id, or its account id for an account's own key (`caller_key`); whatever is given to
`RateLimiter.take` is held in memory for as long as its bucket lives, so it must not be a
secret (a key's SHA-256 digest would do too).

Each API replica limits on its own, in its own process, with no shared state: N replicas
behind a load balancer allow a caller up to N times the rate (and N times the burst), as
CloudStack's `api.throttling` does per management server. Set the per-replica values with that
in mind.

Thread-safe: the caller is identified in a threadpool, the check runs on the event loop, so
every bucket is read and written under one lock, held for a few arithmetic operations (O(1)
amortised per take, no I/O). Memory is bounded: a bucket left alone for as long as it takes to
refill from empty is full, and so no different from no bucket at all; such buckets are
forgotten as later takes pass them (least recently used first), and at most `max_keys` buckets
are kept whatever happens (past that, the least recently used is dropped: that caller starts
again with a full bucket, a leniency only possible with more than `max_keys` callers active
within one refill time).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from fastapi.responses import JSONResponse

from api.errors import ApiError, error_response
from api.settings import ApiSettings
from domain.errors import ErrorCode

#: Buckets kept at most, whatever the traffic: ~200 bytes each.
DEFAULT_MAX_KEYS = 100_000
#: Idle buckets forgotten per take at most, so that no take (on the event loop) sweeps long.
SWEEP_BATCH = 8
#: Float noise forgiven before rounding a wait up (a wait of 2.0000000000004 s is 2 s).
_ROUNDING_SLACK = 1e-9
#: Retry-After is at most this (a rate so low it would take longer is capped, not overflowed).
MAX_RETRY_AFTER = 10**9


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """A token bucket per key: `rate` tokens a second, at most `burst` at once."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of tokens a second, not {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self.rate = float(rate)
        self.burst = burst
        self.max_keys = max_keys
        #: How long an empty bucket takes to fill: a bucket idle this long is full.
        self.refill_seconds = burst / self.rate
        self._clock = clock
        self._lock = threading.Lock()
        # Least recently taken first; every take moves its key last and stamps it `now`, so
        # the order is also that of `updated` (the clock is monotonic).
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float | None:
        """Take a token for `key`: None if admitted, else the seconds until one is available."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(float(self.burst), now)
                self._buckets[key] = bucket
            else:
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
                bucket.updated = now
                self._buckets.move_to_end(key)
            self._forget_idle(now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        """The number of buckets held."""
        with self._lock:
            return len(self._buckets)

    def _forget_idle(self, now: float) -> None:
        """Drop a few buckets full by now (oldest first), and any past `max_keys`."""
        buckets = self._buckets
        for _ in range(SWEEP_BATCH):
            oldest = next(iter(buckets.values()))
            if now - oldest.updated < self.refill_seconds:
                break
            buckets.popitem(last=False)
        while len(buckets) > self.max_keys:
            buckets.popitem(last=False)


def retry_after_seconds(wait: float) -> int:
    """`Retry-After` for a wait: whole seconds, rounded up, at least 1."""
    if not math.isfinite(wait) or wait >= MAX_RETRY_AFTER:
        return MAX_RETRY_AFTER
    return max(1, math.ceil(wait - _ROUNDING_SLACK))


class RateLimited(ApiError):
    """429 with CloudStack's `API_LIMIT_EXCEEDED`; `retry_after` in whole seconds."""

    def __init__(self, wait: float) -> None:
        self.retry_after = retry_after_seconds(wait)
        super().__init__(
            429,
            f"API request limit exceeded; retry after {self.retry_after} s",
            code=ErrorCode.API_LIMIT_EXCEEDED,
            kind="rate_limited",
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def rate_limited_response(error: RateLimited) -> JSONResponse:
    """The 429 in the API's error format, with its `Retry-After` header."""
    response = error_response(error)
    response.headers.update(error.headers)
    return response


class _Identified(Protocol):
    @property
    def account_id(self) -> Any: ...

    @property
    def user_id(self) -> Any: ...


def caller_key(caller: _Identified) -> str:
    """The bucket of an identified caller: its user, or its account for an account's own key
    (never the key itself)."""
    if caller.user_id is not None:
        return f"user:{caller.user_id}"
    return f"account:{caller.account_id}"


def check(limiter: RateLimiter | None, key: str) -> None:
    """Take a token for `key`, or raise `RateLimited`; no limiter, no limit."""
    if limiter is None:
        return
    wait = limiter.take(key)
    if wait is not None:
        raise RateLimited(wait)


def limiter_from(settings: ApiSettings) -> RateLimiter | None:
    """The limiter the settings ask for; None when rate limiting is off."""
    if not settings.api_rate_limit_enabled:
        return None
    return RateLimiter(settings.api_rate_limit_per_second, settings.api_rate_limit_burst)
