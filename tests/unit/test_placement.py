"""The FirstFit planner: last host first, overprovisioning, disable threshold, avoid set."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import TypedDict, Unpack
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InsufficientCapacity
from domain.placement import (
    HA_TAG,
    AvoidSet,
    ClusterSnapshot,
    DeploymentRequest,
    FirstFitPlanner,
    HostSnapshot,
    PoolSnapshot,
    cluster_passes_disable_threshold,
)

GIB = 1024**3


class HostOptions(TypedDict, total=False):
    """What `cluster` passes on to `host` for each of its hosts."""

    cpu_used: int
    mem_used: int
    cpu: int
    mem: int
    available: bool
    tags: frozenset[str]


class RequestOptions(TypedDict, total=False):
    """The optional fields of a DeploymentRequest, as `request` takes them."""

    last_host_id: UUID | None
    host_tags: frozenset[str]
    is_ha_restart: bool
    required_pool_id: UUID | None
    avoid: AvoidSet


def host(
    cluster: UUID,
    *,
    cpu_used: int = 0,
    mem_used: int = 0,
    cpu: int = 8000,
    mem: int = 8192,
    available: bool = True,
    tags: frozenset[str] = frozenset(),
) -> HostSnapshot:
    return HostSnapshot(uuid.uuid4(), "h", cluster, cpu, cpu_used, mem, mem_used, available, tags)


def cluster(
    hosts: int = 2,
    *,
    hypervisor: str = "Simulator",
    cpu_factor: float = 1.0,
    mem_factor: float = 1.0,
    threshold: float = 1.0,
    pool_bytes: int = 100 * GIB,
    **host_kwargs: Unpack[HostOptions],
) -> ClusterSnapshot:
    cluster_id = uuid.uuid4()
    return ClusterSnapshot(
        cluster_id=cluster_id,
        name="c",
        pod_id=uuid.uuid4(),
        hypervisor=hypervisor,
        hosts=tuple(host(cluster_id, **host_kwargs) for _ in range(hosts)),
        pools=(PoolSnapshot(uuid.uuid4(), "p", pool_bytes, 0),),
        cpu_overprovisioning=cpu_factor,
        memory_overprovisioning=mem_factor,
        disable_threshold=threshold,
    )


def request(
    cpu: int = 1000, mem: int = 1024, disk: int = GIB, **kwargs: Unpack[RequestOptions]
) -> DeploymentRequest:
    return DeploymentRequest(
        cpu_mhz=cpu, memory_mib=mem, root_disk_bytes=disk, hypervisor="Simulator", **kwargs
    )


planner = FirstFitPlanner()


def test_the_first_host_that_fits_is_taken_in_order() -> None:
    c = cluster()
    plan = planner.plan(request(), [c])
    assert plan.host_id == c.hosts[0].host_id and plan.pool_id == c.pools[0].pool_id


def test_the_last_host_comes_first_when_it_fits() -> None:
    c = cluster(hosts=3)
    plan = planner.plan(request(last_host_id=c.hosts[2].host_id), [c])
    assert plan.host_id == c.hosts[2].host_id


def test_a_full_last_host_is_passed_over() -> None:
    a, b = cluster(hosts=1, mem_used=8192), cluster(hosts=1)
    plan = planner.plan(request(last_host_id=a.hosts[0].host_id), [a, b])
    assert plan.host_id == b.hosts[0].host_id


def test_overprovisioning_lets_cpu_exceed_the_physical_total() -> None:
    tight = cluster(hosts=1, cpu_used=7500)
    with pytest.raises(InsufficientCapacity):
        planner.plan(request(cpu=1000), [tight])
    overprovisioned = cluster(hosts=1, cpu_used=7500, cpu_factor=2.0)
    assert planner.plan(request(cpu=1000), [overprovisioned])


def test_a_cluster_past_its_disable_threshold_is_skipped() -> None:
    busy = cluster(hosts=1, mem_used=6000, threshold=0.85)  # (6000 + 1024) / 8192 > 0.85
    free = cluster(hosts=1)
    plan = planner.plan(request(), [busy, free])
    assert plan.cluster_id == free.cluster_id


def test_avoided_hosts_clusters_and_pools_are_not_tried() -> None:
    a, b = cluster(hosts=2), cluster(hosts=1)
    avoid = AvoidSet(frozenset({a.hosts[0].host_id}), frozenset(), frozenset())
    assert planner.plan(request(avoid=avoid), [a, b]).host_id == a.hosts[1].host_id
    avoid = AvoidSet(frozenset(), frozenset({a.cluster_id}), frozenset())
    assert planner.plan(request(avoid=avoid), [a, b]).cluster_id == b.cluster_id
    avoid = AvoidSet(frozenset(), frozenset(), frozenset({a.pools[0].pool_id}))
    assert planner.plan(request(avoid=avoid), [a, b]).cluster_id == b.cluster_id


def test_other_hypervisors_and_unavailable_hosts_are_not_candidates() -> None:
    kvm = cluster(hosts=1, hypervisor="KVM")
    down = cluster(hosts=1, available=False)
    with pytest.raises(InsufficientCapacity):
        planner.plan(request(), [kvm, down])


def test_ha_hosts_take_only_ha_restarts() -> None:
    ha = cluster(hosts=1, tags=frozenset({HA_TAG}))
    with pytest.raises(InsufficientCapacity):
        planner.plan(request(), [ha])
    assert planner.plan(request(is_ha_restart=True), [ha])


def test_a_root_volume_already_on_a_pool_pins_the_vm_to_that_pool() -> None:
    a, b = cluster(hosts=1), cluster(hosts=1)
    plan = planner.plan(request(required_pool_id=b.pools[0].pool_id), [a, b])
    assert plan.cluster_id == b.cluster_id and plan.pool_id == b.pools[0].pool_id


def test_a_pool_without_room_for_the_root_disk_is_not_used() -> None:
    small = cluster(hosts=1, pool_bytes=GIB // 2)
    with pytest.raises(InsufficientCapacity) as refused:
        planner.plan(request(disk=GIB), [small])
    assert refused.value.code == 533


def test_the_last_host_comes_first_even_in_a_later_cluster() -> None:
    a, b = cluster(hosts=1), cluster(hosts=1)
    plan = planner.plan(request(last_host_id=b.hosts[0].host_id), [a, b])
    assert (plan.host_id, plan.cluster_id) == (b.hosts[0].host_id, b.cluster_id)


def test_an_avoided_last_host_is_not_tried_first() -> None:
    c = cluster(hosts=2)
    last = c.hosts[1].host_id
    plan = planner.plan(request(last_host_id=last, avoid=AvoidSet().with_host(last)), [c])
    assert plan.host_id == c.hosts[0].host_id


def test_the_disable_threshold_is_cloudstacks_085_and_reaching_it_exactly_is_allowed() -> None:
    cluster_id = uuid.uuid4()
    c = ClusterSnapshot(
        cluster_id,
        "c",
        uuid.uuid4(),
        "Simulator",
        (HostSnapshot(uuid.uuid4(), "h", cluster_id, 10000, 0, 10000, 7500),),
        (PoolSnapshot(uuid.uuid4(), "p", 100 * GIB, 0),),
    )
    assert c.disable_threshold == 0.85
    assert planner.plan(request(cpu=100, mem=1000), [c])  # memory (7500 + 1000) / 10000 = 0.85
    with pytest.raises(InsufficientCapacity):
        planner.plan(request(cpu=100, mem=1001), [c])
    assert not cluster_passes_disable_threshold(c, request(cpu=8500, mem=1))
    assert cluster_passes_disable_threshold(c, request(cpu=8501, mem=1))


def test_hosts_that_are_down_do_not_count_towards_the_threshold() -> None:
    cluster_id = uuid.uuid4()
    up = HostSnapshot(uuid.uuid4(), "up", cluster_id, 8000, 0, 8192, 6000)
    down = HostSnapshot(uuid.uuid4(), "down", cluster_id, 8000, 0, 8192, 0, available=False)
    c = ClusterSnapshot(
        cluster_id,
        "c",
        uuid.uuid4(),
        "Simulator",
        (up, down),
        (PoolSnapshot(uuid.uuid4(), "p", GIB * 100, 0),),
    )
    # Counting the idle host that is down, memory would be (6000 + 1024) / 16384 = 0.43.
    assert cluster_passes_disable_threshold(c, request(mem=1024))
    only_down = replace(c, hosts=(down,))
    assert cluster_passes_disable_threshold(only_down, request())


def test_a_disabled_cluster_is_skipped() -> None:
    off, on = cluster(hosts=1), cluster(hosts=1)
    off = replace(off, enabled=False)
    assert planner.plan(request(), [off, on]).cluster_id == on.cluster_id


def test_a_host_must_carry_every_tag_the_offering_asks_for() -> None:
    plain, tagged = cluster(hosts=1), cluster(hosts=1, tags=frozenset({"ssd", "gpu"}))
    plan = planner.plan(request(host_tags=frozenset({"ssd"})), [plain, tagged])
    assert plan.cluster_id == tagged.cluster_id
    with pytest.raises(InsufficientCapacity):
        planner.plan(request(host_tags=frozenset({"ssd", "nvme"})), [plain, tagged])


def test_an_ha_host_is_not_the_last_host_of_an_ordinary_start() -> None:
    ha, ordinary = cluster(hosts=1, tags=frozenset({HA_TAG})), cluster(hosts=1)
    plan = planner.plan(request(last_host_id=ha.hosts[0].host_id), [ha, ordinary])
    assert plan.cluster_id == ordinary.cluster_id


def test_a_zone_wide_pool_serves_a_cluster_without_its_own() -> None:
    c = replace(cluster(hosts=1), pools=())
    zone_pool = PoolSnapshot(uuid.uuid4(), "zone", 100 * GIB, 0)
    with pytest.raises(InsufficientCapacity):
        planner.plan(request(), [c])
    assert planner.plan(request(), [c], [zone_pool]).pool_id == zone_pool.pool_id


def test_a_pool_counts_its_overprovisioning_and_a_disabled_pool_is_not_used() -> None:
    thin = PoolSnapshot(uuid.uuid4(), "thin", 10 * GIB, 15 * GIB, overprovisioning=2.0)
    assert thin.fits(5 * GIB) and not thin.fits(5 * GIB + 1)
    off = PoolSnapshot(uuid.uuid4(), "off", 100 * GIB, 0, enabled=False)
    assert not off.fits(1)


def test_an_avoid_set_grows_without_changing_the_one_it_came_from() -> None:
    host, cluster_id, pool = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    empty = AvoidSet()
    grown = empty.with_host(host).with_cluster(cluster_id).with_pool(pool)
    assert grown == AvoidSet(frozenset({host}), frozenset({cluster_id}), frozenset({pool}))
    assert empty == AvoidSet()


def test_a_refusal_says_what_was_asked_and_what_was_avoided() -> None:
    c = cluster(hosts=1)
    avoid = AvoidSet().with_host(c.hosts[0].host_id)
    with pytest.raises(InsufficientCapacity) as refused:
        planner.plan(request(cpu=1500, mem=2048, avoid=avoid), [c])
    assert "1500 MHz / 2048 MiB" in refused.value.message
    assert "avoiding 1 hosts" in refused.value.message


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 9000), st.integers(0, 9000)), min_size=1, max_size=8),
    st.integers(1, 4000),
    st.integers(1, 4000),
    st.floats(1.0, 4.0),
    st.floats(1.0, 2.0),
)
def test_a_planned_host_always_has_room_under_its_factors(
    used: list[tuple[int, int]], cpu: int, mem: int, cpu_factor: float, mem_factor: float
) -> None:
    cluster_id = uuid.uuid4()
    hosts = tuple(HostSnapshot(uuid.uuid4(), "h", cluster_id, 8000, c, 8192, m) for c, m in used)
    c = ClusterSnapshot(
        cluster_id,
        "c",
        uuid.uuid4(),
        "Simulator",
        hosts,
        (PoolSnapshot(uuid.uuid4(), "p", 10 * GIB, 0),),
        cpu_factor,
        mem_factor,
        1.0,
    )

    def fits(h: HostSnapshot) -> bool:
        return (
            h.cpu_used_mhz + cpu <= h.cpu_total_mhz * cpu_factor
            and h.memory_used_mib + mem <= h.memory_total_mib * mem_factor
        )

    cluster_share_ok = (sum(h.cpu_used_mhz for h in hosts) + cpu) <= 8000 * len(
        hosts
    ) * cpu_factor and (sum(h.memory_used_mib for h in hosts) + mem) <= 8192 * len(
        hosts
    ) * mem_factor
    try:
        plan = planner.plan(request(cpu=cpu, mem=mem), [c])
    except InsufficientCapacity:
        # Refused only when no host fits, or the cluster would pass its threshold (1.0 here).
        assert not (cluster_share_ok and any(fits(h) for h in hosts))
        return
    chosen = next(h for h in hosts if h.host_id == plan.host_id)
    assert fits(chosen) and cluster_share_ok
    assert chosen == next(h for h in hosts if fits(h)), "first fit, in order"
