"""Unit tests run the domain against eventsourcing's in-memory (POPO) event store: the same
`Cloud` application, its load/decide/save and its optimistic concurrency, in milliseconds and
without PostgreSQL or Temporal."""

from __future__ import annotations

import pytest

from domain.cloud import Cloud
from tests.unit.builders import in_memory_cloud


@pytest.fixture
def memory_cloud() -> Cloud:
    """A fresh, empty in-memory `Cloud` per test."""
    return in_memory_cloud()
