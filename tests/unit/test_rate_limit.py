"""Rate limiting per caller: a token bucket per key, on a fake clock, answered as 429 with
Retry-After in the API's error format; thread-safe and bounded in memory."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from api.rate_limit import (
    RateLimited,
    RateLimiter,
    caller_key,
    check,
    limiter_from,
    rate_limited_response,
    retry_after_seconds,
)
from api.settings import ApiSettings


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def admitted(limiter: RateLimiter, key: str, times: int) -> int:
    return sum(limiter.take(key) is None for _ in range(times))


def test_the_burst_is_admitted_then_the_next_request_is_refused(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=2.0, burst=5, clock=clock)
    assert [limiter.take("a") for _ in range(5)] == [None] * 5
    wait = limiter.take("a")
    assert wait is not None and wait == pytest.approx(0.5)  # one token at 2 a second


def test_refill_over_time_admits_again_at_the_rate_and_never_past_the_burst(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter(rate=2.0, burst=5, clock=clock)
    assert admitted(limiter, "a", 5) == 5
    clock.advance(0.25)  # half a token
    assert limiter.take("a") == pytest.approx(0.25)
    clock.advance(0.25)  # one token
    assert limiter.take("a") is None
    assert limiter.take("a") is not None
    clock.advance(1.5)  # three tokens
    assert admitted(limiter, "a", 10) == 3
    clock.advance(3600)  # refilled, but to the burst only
    assert admitted(limiter, "a", 10) == 5


def test_a_refused_request_takes_no_token(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.take("a") is None
    for _ in range(100):
        assert limiter.take("a") is not None
    clock.advance(1.0)
    assert limiter.take("a") is None


@pytest.mark.parametrize(
    ("wait", "seconds"),
    [(0.0001, 1), (0.5, 1), (1.0, 1), (1.0000001, 2), (2.5, 3), (3.0, 3), (59.9, 60)],
)
def test_retry_after_is_the_ceiling_of_the_wait_and_at_least_one(wait: float, seconds: int) -> None:
    assert retry_after_seconds(wait) == seconds


def test_retry_after_forgives_float_noise_and_never_overflows() -> None:
    assert retry_after_seconds(0.1 + 0.2 + 1.7) == 2  # 2.0000000000000004
    assert retry_after_seconds(float("inf")) == retry_after_seconds(1e300) > 0


def test_retry_after_of_a_refusal_is_when_the_next_token_is_there(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=0.4, burst=1, clock=clock)  # a token every 2.5 s
    check(limiter, "a")
    with pytest.raises(RateLimited) as refused:
        check(limiter, "a")
    assert refused.value.retry_after == 3
    clock.advance(2.0)
    with pytest.raises(RateLimited) as refused:
        check(limiter, "a")
    assert refused.value.retry_after == 1  # 0.5 s to wait: still a whole second
    clock.advance(0.5)
    check(limiter, "a")


def test_the_refusal_is_a_429_in_the_api_error_format_with_retry_after() -> None:
    response = rate_limited_response(RateLimited(2.2))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    body = json.loads(bytes(response.body))
    assert body["errorcode"] == 429
    assert body["detail"] == [
        {"loc": [], "msg": "API request limit exceeded; retry after 3 s", "type": "rate_limited"}
    ]


def test_two_keys_are_independent(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=3, clock=clock)
    assert admitted(limiter, "a", 10) == 3
    assert admitted(limiter, "b", 10) == 3
    clock.advance(1.0)
    assert admitted(limiter, "a", 10) == 1
    assert admitted(limiter, "b", 10) == 1


def test_memory_is_bounded_after_many_distinct_keys(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=10, max_keys=100, clock=clock)
    for i in range(10_000):
        limiter.take(f"key-{i}")
    assert len(limiter) == 100
    # The most recent keys kept their buckets (tokens taken); an older one starts afresh.
    assert admitted(limiter, "key-9999", 100) == 9
    assert admitted(limiter, "key-0", 100) == 10


def test_idle_buckets_are_forgotten_once_they_would_be_full(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=10.0, burst=20, clock=clock)  # full again after 2 s
    for i in range(5):
        assert admitted(limiter, f"key-{i}", 100) == 20
    assert len(limiter) == 5
    clock.advance(1.9)
    limiter.take("other")
    assert len(limiter) == 6  # not full yet: kept
    clock.advance(0.1)
    limiter.take("other")
    assert len(limiter) == 1  # the five are full, as good as new: gone
    assert admitted(limiter, "key-0", 100) == 20  # and a forgotten caller lost nothing


@pytest.fixture
def fine_switching() -> Iterator[None]:
    """Threads switched every microsecond or so, so that their takes interleave."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_concurrent_takes_from_threads_never_admit_more_than_burst(
    clock: FakeClock, fine_switching: None
) -> None:
    """Threads race through the same fresh keys (a first take creates the bucket: the widest
    window), each asking more than the burst; the clock never moves, so nothing refills."""
    burst, threads, keys, tries = 3, 8, 2000, 2
    limiter = RateLimiter(rate=1.0, burst=burst, clock=clock)
    start = threading.Barrier(threads)
    counts: list[int] = []
    errors: list[BaseException] = []
    recorded = threading.Lock()

    def hammer() -> None:
        try:
            start.wait()
            mine = sum(admitted(limiter, f"key-{k}", tries) for k in range(keys))
        except BaseException as error:
            with recorded:
                errors.append(error)
            raise
        with recorded:
            counts.append(mine)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == [] and len(counts) == threads
    assert sum(counts) == burst * keys  # every key admitted its burst exactly, never more
    assert all(limiter.take(f"key-{k}") is not None for k in range(keys))


@dataclass(frozen=True)
class Who:
    account_id: uuid.UUID
    user_id: uuid.UUID | None = None


def test_a_caller_is_limited_as_its_user_or_else_its_account_never_by_its_key() -> None:
    account, alice, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    keys = {caller_key(Who(account, alice)), caller_key(Who(account, bob))}
    keys.add(caller_key(Who(account)))
    assert keys == {f"user:{alice}", f"user:{bob}", f"account:{account}"}


def test_no_limiter_no_limit() -> None:
    for _ in range(1000):
        check(None, "a")


def test_the_settings_build_the_limiter_or_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENABLED", "PER_SECOND", "BURST"):
        monkeypatch.delenv(f"STRATUS_API_RATE_LIMIT_{name}", raising=False)
    defaults = ApiSettings()
    assert defaults.api_rate_limit_enabled
    assert (defaults.api_rate_limit_per_second, defaults.api_rate_limit_burst) == (50.0, 200)
    limiter = limiter_from(defaults)
    assert limiter is not None and (limiter.rate, limiter.burst) == (50.0, 200)

    monkeypatch.setenv("STRATUS_API_RATE_LIMIT_PER_SECOND", "2.5")
    monkeypatch.setenv("STRATUS_API_RATE_LIMIT_BURST", "7")
    limiter = limiter_from(ApiSettings())
    assert limiter is not None and (limiter.rate, limiter.burst) == (2.5, 7)

    monkeypatch.setenv("STRATUS_API_RATE_LIMIT_ENABLED", "false")
    assert limiter_from(ApiSettings()) is None


@pytest.mark.parametrize(
    "values",
    [
        {"api_rate_limit_per_second": 0},
        {"api_rate_limit_per_second": -1},
        {"api_rate_limit_per_second": 100_001},
        {"api_rate_limit_per_second": float("nan")},
        {"api_rate_limit_per_second": float("inf")},
        {"api_rate_limit_burst": 0},
        {"api_rate_limit_burst": 1_000_001},
    ],
)
def test_settings_out_of_range_are_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        ApiSettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"),
    [(0.0, 1, 10), (float("nan"), 1, 10), (float("inf"), 1, 10), (1.0, 0, 10), (1.0, 1, 0)],
)
def test_a_limiter_that_could_not_work_is_refused(rate: float, burst: int, max_keys: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst, max_keys=max_keys)
