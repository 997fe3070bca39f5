"""How every job calls its steps: the one set of retry policies and timeouts.

Control-plane steps are decisions over the event store: quick, idempotent by command id, retried
briskly. Hypervisor steps talk to a real device: slower, retried with more patience, and taken
for lost when their worker stops heartbeating. Undo steps must give back what a job took, so
they are retried for much longer before the job's error text names what could not be undone.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

CONTROL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=8,
)
HYPERVISOR_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
)
#: A probe of something outside Stratus (a new host, a hypervisor's VM listing): asked a few
#: times, then the job says it did not answer.
PROBE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)

CONTROL_TIMEOUT = timedelta(seconds=60)
HYPERVISOR_TIMEOUT = timedelta(minutes=10)
#: A hypervisor worker that stops heartbeating this long is taken for dead; the call is retried.
HYPERVISOR_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
