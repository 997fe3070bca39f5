"""Bytes reserved on primary storage per volume (with overprovisioning) and kept on secondary
storage per template or snapshot: never beyond the pool, every repeat and undo harmless."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InsufficientCapacity, InvalidParameter
from tests.unit.builders import GIB, new_primary_storage, new_secondary_storage


def test_a_pool_takes_up_to_its_capacity_times_its_overprovisioning() -> None:
    pool = new_primary_storage(capacity_bytes=100 * GIB)  # overprovisioning 2.0 by default
    pool.allocate(uuid.uuid4(), 150 * GIB, "a/allocate")
    pool.allocate(uuid.uuid4(), 50 * GIB, "b/allocate")
    assert pool.allocated_bytes == 200 * GIB
    with pytest.raises(InsufficientCapacity) as refused:
        pool.allocate(uuid.uuid4(), 1, "c/allocate")
    assert refused.value.code == 533 and pool.name in refused.value.message
    assert pool.allocated_bytes == 200 * GIB


def test_a_pool_without_overprovisioning_takes_its_capacity_exactly() -> None:
    pool = new_primary_storage(capacity_bytes=10 * GIB, overprovisioning=1.0)
    assert pool.fits(10 * GIB) and not pool.fits(10 * GIB + 1)


def test_a_volume_allocated_again_is_not_counted_twice() -> None:
    pool, volume = new_primary_storage(), uuid.uuid4()
    pool.allocate(volume, GIB, "job/allocate")
    version = pool.version
    pool.allocate(volume, GIB, "job/allocate")  # the activity ran again
    pool.allocate(volume, 5 * GIB, "other-job/allocate")  # the same volume
    assert pool.version == version and pool.allocated_bytes == GIB


def test_a_release_gives_the_bytes_back_once() -> None:
    pool, volume = new_primary_storage(), uuid.uuid4()
    pool.allocate(volume, GIB, "job/allocate")
    pool.allocate(uuid.uuid4(), 2 * GIB, "other/allocate")
    pool.release(volume, "job/release")
    version = pool.version
    pool.release(volume, "job/release")
    pool.release(uuid.uuid4(), "never/release")
    assert pool.version == version and pool.allocated_bytes == 2 * GIB


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 4), st.integers(1, 80 * GIB)), max_size=30),
    st.sampled_from([1.0, 1.5, 2.0]),
)
def test_no_sequence_of_allocations_and_releases_overfills_a_pool(
    steps: list[tuple[bool, int, int]], overprovisioning: float
) -> None:
    pool = new_primary_storage(capacity_bytes=100 * GIB, overprovisioning=overprovisioning)
    volumes = [uuid.uuid4() for _ in range(5)]
    for n, (allocate, which, size) in enumerate(steps):
        if allocate:
            try:
                pool.allocate(volumes[which], size, f"cmd/{n}")
            except InsufficientCapacity:
                assert not pool.fits(size)
        else:
            pool.release(volumes[which], f"cmd/{n}")
        assert pool.allocated_bytes <= pool.capacity_bytes * overprovisioning


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"capacity_bytes": 0}, "capacity_bytes must be positive"),
        ({"scope": "CLUSTER"}, "a cluster-scoped pool needs cluster_id"),
    ],
)
def test_a_pool_that_cannot_hold_anything_is_refused(
    arguments: dict[str, object], complaint: str
) -> None:
    with pytest.raises(InvalidParameter) as refused:
        new_primary_storage(**arguments)
    assert complaint in refused.value.message


def test_secondary_storage_keeps_objects_up_to_its_capacity_and_no_further() -> None:
    store = new_secondary_storage(capacity_bytes=10 * GIB)
    template = uuid.uuid4()
    store.store(template, 8 * GIB, "t/store")
    store.store(template, 8 * GIB, "t/store")  # a repeat is not a second copy
    store.store(uuid.uuid4(), 2 * GIB, "s/store")
    assert store.used_bytes == 10 * GIB
    with pytest.raises(InsufficientCapacity):
        store.store(uuid.uuid4(), 1, "full/store")
    store.remove(template, "t/remove")
    store.remove(template, "t/remove")
    assert store.used_bytes == 2 * GIB
