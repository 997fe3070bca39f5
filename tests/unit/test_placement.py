"""The FirstFit planner: last host first, overprovisioning, disable threshold, avoid set."""

from __future__ import annotations

import uuid
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
)

GIB = 1024**3


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
    **host_kwargs: object,
) -> ClusterSnapshot:
    cluster_id = uuid.uuid4()
    return ClusterSnapshot(
        cluster_id=cluster_id,
        name="c",
        pod_id=uuid.uuid4(),
        hypervisor=hypervisor,
        hosts=tuple(host(cluster_id, **host_kwargs) for _ in range(hosts)),  # type: ignore[arg-type]
        pools=(PoolSnapshot(uuid.uuid4(), "p", pool_bytes, 0),),
        cpu_overprovisioning=cpu_factor,
        memory_overprovisioning=mem_factor,
        disable_threshold=threshold,
    )


def request(
    cpu: int = 1000, mem: int = 1024, disk: int = GIB, **kwargs: object
) -> DeploymentRequest:
    return DeploymentRequest(
        cpu_mhz=cpu, memory_mib=mem, root_disk_bytes=disk, hypervisor="Simulator", **kwargs
    )  # type: ignore[arg-type]


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
