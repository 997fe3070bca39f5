"""Heartbeats for activities that wait on a backend.

A driver call can take minutes (a real host booting a VM) and gives no natural point to
heartbeat, so a thread heartbeats on its behalf while it runs. Temporal then notices within the
heartbeat timeout when the worker running it dies, and retries the (idempotent) call on another
worker, instead of waiting out the whole start-to-close timeout.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from temporalio import activity

HEARTBEAT_INTERVAL_SECONDS = 2.0


@contextmanager
def heartbeating(detail: str, interval: float = HEARTBEAT_INTERVAL_SECONDS) -> Iterator[None]:
    if not activity.in_activity():
        yield
        return
    done = threading.Event()
    context = contextvars.copy_context()

    def beat() -> None:
        while not done.wait(interval):
            context.run(activity.heartbeat, detail)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
