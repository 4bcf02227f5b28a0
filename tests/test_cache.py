"""The tiered cache: exact budgets, LRU demotion, identical params after a round trip,
single-flight loads, and pinned models never evicted."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import RTOL_PRICE, house_pipeline

from mmhost.artifacts import read_artifact
from mmhost.convert import from_sklearn
from mmhost.errors import InsufficientCapacity
from mmhost.families.arena import size_class, slot_bytes
from mmhost.families.linear import compile_linear
from mmhost.tools.houses import COLUMNS, houses

SLOT = slot_bytes(1, size_class(10))  # a houses model: 10 encoded inputs, 1 output


@pytest.fixture
def many(store):
    names = []
    for i in range(6):
        name = f"m{i}.tar.gz"
        from_sklearn(house_pipeline(i, 1.0 + i / 10, n=60), COLUMNS).save(store / name)
        names.append(name)
    return names


def on_engine(h, coro):
    return h._run(coro)


def test_device_budget_holds_exactly_and_lru_demotes_to_host(store, many, host_factory):
    h = host_factory(store=str(store), device_budget=3 * SLOT)
    for name in many[:3]:
        h.load(name)
    h.load(many[0])  # touch m0: m1 is now the least recently used
    h.load(many[3])
    s = h.stats()["tiers"]
    assert s["device"]["bytes"] == 3 * SLOT == s["device"]["budget"]
    assert h.list_models() == {
        many[0]: "device",
        many[2]: "device",
        many[3]: "device",
        many[1]: "host",
    }
    assert s["host"]["bytes"] == 4 * 10 + 4  # float32 (1, 10) weights + (1,) bias
    for name in many:
        h.load(name)
        assert h.stats()["tiers"]["device"]["bytes"] <= 3 * SLOT


def test_host_budget_pushes_models_out_of_memory(store, many, host_factory):
    h = host_factory(store=str(store), device_budget=SLOT, host_budget=2 * 44)
    for name in many:
        h.load(name)
    st = h.stats()
    assert st["tiers"]["host"]["models"] == 2 and st["tiers"]["host"]["bytes"] == 88
    assert st["evictions"]["host"] == 3 and st["evictions"]["device"] == 5
    assert set(h.list_models().values()) == {"device", "host"}


def test_demotion_then_promotion_returns_identical_params(store, many, host_factory):
    h = host_factory(store=str(store), device_budget=SLOT)
    composed = compile_linear(read_artifact(store / many[0]))
    h.load(many[0])
    h.load(many[1])  # demotes m0 to the host tier
    demoted = h.cache.host_model(many[0])
    assert np.array_equal(demoted.weight, composed.weight)
    assert np.array_equal(demoted.bias, composed.bias)
    h.load(many[0])  # promoted back from host, not re-read from the store
    st = h.stats()
    assert st["hits"]["host"] == 1 and st["loads"] == 2
    r = h.cache.resident[many[0]]
    assert np.array_equal(r.slab.weight[r.slot, :, :10].numpy(), composed.weight)
    assert not r.slab.weight[r.slot, :, 10:].any()
    X, _ = houses(4)
    np.testing.assert_allclose(
        h.predict(many[0], X.tolist()), house_pipeline(0, 1.0, n=60).predict(X), rtol=RTOL_PRICE
    )


def test_single_flight_under_200_concurrent_cold_requests(store, many, host_factory):
    h = host_factory(store=str(store))
    X, _ = houses(1)

    async def burst():
        return await asyncio.gather(*[h.apredict(many[i % 4], X.tolist()) for i in range(200)])

    outs = asyncio.run(burst())
    st = h.stats()
    assert st["loads"] == 4 and st["misses"] == 4
    for i, out in enumerate(outs):
        want = house_pipeline(i % 4, 1.0 + (i % 4) / 10, n=60).predict(X)
        np.testing.assert_allclose(out, want, rtol=RTOL_PRICE)


def test_a_pinned_model_is_never_evicted(store, many, host_factory):
    h = host_factory(store=str(store), device_budget=SLOT, capacity_wait_seconds=0.05)
    pinned = on_engine(h, h.cache.acquire(many[0]))
    with pytest.raises(InsufficientCapacity, match="in use"):
        h.load(many[1])
    assert h.list_models() == {many[0]: "device"}
    on_engine(h, h._call(h.cache.release, pinned))
    h.load(many[1])
    assert h.list_models() == {many[1]: "device", many[0]: "host"}


def test_loads_wait_for_in_flight_batches_instead_of_failing(store, many, host_factory):
    """More distinct models in one burst than the device holds: every request is answered."""
    h = host_factory(store=str(store), device_budget=2 * SLOT)
    X, _ = houses(2)

    async def burst():
        return await asyncio.gather(*[h.apredict(many[i % 6], X.tolist()) for i in range(60)])

    outs = asyncio.run(burst())
    for i, out in enumerate(outs):
        want = house_pipeline(i % 6, 1.0 + (i % 6) / 10, n=60).predict(X)
        np.testing.assert_allclose(out, want, rtol=RTOL_PRICE)
    assert h.stats()["tiers"]["device"]["bytes"] <= 2 * SLOT


def test_a_model_bigger_than_the_budget_fails_clearly(store, many, host_factory):
    h = host_factory(store=str(store), device_budget=SLOT - 1)
    with pytest.raises(InsufficientCapacity, match=f"needs {SLOT} bytes"):
        h.load(many[0])


def test_disk_tier_keeps_downloads_and_drops_stale_ones(store, many, tmp_path, host_factory):
    h = host_factory(
        store=str(store),
        disk_dir=str(tmp_path / "disk"),
        device_budget=SLOT,
        host_budget=0,
        revalidate_seconds=1e-6,
    )
    h.load(many[0])
    h.load(many[1])  # m0: device -> (host budget 0) -> disk
    h.load(many[0])
    st = h.stats()
    assert st["hits"]["disk"] == 1 and st["misses"] == 2
    assert st["tiers"]["disk"]["models"] == 2
    assert st["tiers"]["disk"]["bytes"] == sum((store / n).stat().st_size for n in many[:2])
    from_sklearn(house_pipeline(5, 9.0, n=60), COLUMNS).save(store / many[1])
    h.load(many[1])  # changed in the store: the disk copy is not used
    assert h.stats()["misses"] == 3
    X, _ = houses(3)
    np.testing.assert_allclose(
        h.predict(many[1], X.tolist()), house_pipeline(5, 9.0, n=60).predict(X), rtol=RTOL_PRICE
    )


def test_disk_budget_evicts_oldest_files(store, many, tmp_path, host_factory):
    size = (store / many[0]).stat().st_size
    h = host_factory(store=str(store), disk_dir=str(tmp_path / "disk"), disk_budget=int(2.5 * size))
    for name in many:
        h.load(name)
    st = h.stats()
    assert st["tiers"]["disk"]["models"] == 2
    assert st["tiers"]["disk"]["bytes"] <= int(2.5 * size)
    assert len(list((tmp_path / "disk").glob("*.artifact"))) == 2  # each with its .json record


def test_promotion_with_a_full_host_tier_swaps_the_two_models(store, many, host_factory):
    h = host_factory(store=str(store), device_budget=SLOT, host_budget=44)  # one model each
    h.load(many[0])
    h.load(many[1])  # m0 -> host
    h.load(many[0])  # m0 back to the device, m1 down to the (just freed) host tier
    assert h.list_models() == {many[0]: "device", many[1]: "host"}
    assert h.stats()["hits"]["host"] == 1 and h.stats()["loads"] == 2


def test_many_resident_models_share_one_metadata_object(store, many, host_factory):
    h = host_factory(store=str(store))
    for name in many:
        h.load(name)
    metas = {id(r.meta) for r in h.cache.resident.values()}
    assert len(metas) == 1


def test_disk_tier_starts_clean_of_files_it_cannot_account_for(store, many, tmp_path, host_factory):
    disk = tmp_path / "disk"
    disk.mkdir()
    (disk / ("0" * 64 + ".artifact")).write_bytes(b"old run")
    (disk / "half.tmp123").write_bytes(b"partial")
    (disk / "keep.txt").write_text("not ours")
    h = host_factory(store=str(store), disk_dir=str(disk))
    assert sorted(p.name for p in disk.iterdir()) == ["keep.txt"]
    h.load(many[0])
    assert h.stats()["tiers"]["disk"]["models"] == 1


def test_load_time_is_split_into_fetch_decode_and_place(store, many, host_factory):
    h = host_factory(store=str(store))
    for name in many[:3]:
        h.load(name)
    t = h.stats()["load_seconds"]
    assert t["count"] == 3
    parts = [t["fetch_sum"], t["decode_sum"], t["place_sum"]]
    assert all(p > 0 for p in parts)
    assert sum(parts) <= t["sum"]
    h.load(many[0])  # a device hit is not a load: nothing moves
    assert h.stats()["load_seconds"] == t


def test_unloading_every_model_of_a_slab_gives_its_memory_back(store, many, host_factory):
    h = host_factory(store=str(store))
    for name in many[:5]:
        h.load(name)
    assert h.stats()["tiers"]["device"]["reserved_bytes"] > 0
    for name in many[:5]:
        h.unload(name)
    assert h.stats()["tiers"]["device"]["reserved_bytes"] == 0
    assert h.families.by_name["linear"].slabs == {}
    h.predict(many[0], houses(2, seed=1)[0].tolist())  # a new slab when needed again
