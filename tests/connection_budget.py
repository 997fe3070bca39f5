"""The suite's share of the PostgreSQL server's connections: how many it needs, who holds them.

Every xdist worker, the e2e stack's projector (forty connections) and the worker processes
the kill tests start share one `max_connections` (100 on a stock server). A normal run peaks
near sixty; one run here once found the server full ("sorry, too many clients already") and
could not say who held the slots. So the controller checks there is room before it uses a
server, every connection names its worker (`PGAPPNAME`), and a watcher reports the peak and who
held it at the end of the run, so the next overflow names its cause.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psycopg

#: What the suite needs free on the server to run: the highest peak measured (60) and room.
SUITE_CONNECTIONS = 85

#: A client backend, not one of the server's own processes.
_CLIENTS = "backend_type = 'client backend'"


def free_connection_slots(admin_url: str) -> int:
    """Connections a non-superuser could still open on this server."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            f" - (SELECT count(*) FROM pg_stat_activity WHERE {_CLIENTS})"
        ).fetchone()
    assert row is not None
    return int(row[0])


def connect_when_a_slot_frees(url: str, *, timeout: float = 60.0) -> psycopg.Connection:
    """Connect, waiting (up to `timeout`) while the server is full rather than failing at once:
    a worker's session database made in a moment of overflow would fail every test it runs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as error:
            if "too many clients" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


@dataclass
class ConnectionWatch:
    """Samples who holds the server's connections, keeping the busiest moment."""

    admin_url: str
    every: float = 0.5
    peak: int = 0
    peak_holders: Counter[str] = field(default_factory=Counter)
    max_connections: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="connection-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                setting = conn.execute("SHOW max_connections").fetchone()
                self.max_connections = int(setting[0]) if setting else 0
                while not self._stop.wait(self.every):
                    rows = conn.execute(
                        "SELECT coalesce(nullif(application_name, ''), '(unnamed)'), count(*)"
                        f" FROM pg_stat_activity WHERE {_CLIENTS} GROUP BY 1"
                    ).fetchall()
                    holders = Counter({str(name): int(n) for name, n in rows})
                    total = sum(holders.values())
                    if total > self.peak:
                        self.peak, self.peak_holders = total, holders
        except psycopg.Error:
            return  # the server went away at the end of the run; what was seen stands

    def summary(self) -> str:
        holders = ", ".join(f"{name} {n}" for name, n in self.peak_holders.most_common())
        return (
            f"PostgreSQL connections: peak {self.peak} of max_connections "
            f"{self.max_connections} (the suite needs {SUITE_CONNECTIONS} free); "
            f"held then by: {holders or 'nobody'}"
        )
