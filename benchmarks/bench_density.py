"""Density: 1,000,000 resident linear models (houses schema: 10 encoded inputs, the D=16 slab).

One coroutine on the engine loop places a million composed models with ``ModelCache._place``
(the call every load ends in): each gets its own slot and its own weights (rows of one
(N, 1, 10) array, so creating them costs little), and all share one encoder, as models with
the same columns do. Recorded: arena bytes per model (used and reserved), process RSS before
and after and per model, placements per second, and a check that 1,000 of the models answer
``predict_many`` correctly.

The stock ``LRUPolicy`` scans the whole device tier on every placement (O(n), so O(n^2) for
the fill: days for a million), so the fill runs with ``FreeSpaceFirstLRU``; the stock cost
per placement with a million resident is measured afterwards and recorded.

Targets (from the issue): < 200 B/model in the arena, < 2 GiB process RSS.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import torch
from fleet import FreeSpaceFirstLRU, describe, rss_bytes

from mmhost import Host
from mmhost.cache.policy import LRUPolicy
from mmhost.families.arena import size_class
from mmhost.families.linear import LinearFamily, LinearModel
from mmhost.houses import houses

N = 1_000_000
GROUP = "density: 1,000,000 resident models"
P_FILL = "ModelCache._place x 1M (free-space-first LRU)"
STOCK_PROBES = 3  # placements timed with the stock policy at 1M resident (~1 s each)
CHECKED = 1000


def test_density_one_million_models(benchmark, fleet, tmp_path):
    template = fleet.models[0]
    enc = template.encoder
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((N + STOCK_PROBES, 1, enc.width), dtype=np.float32)  # (N,K,E)
    bias = rng.standard_normal((N + STOCK_PROBES, 1), dtype=np.float32) * 1e3  # (N, K)

    def model(i: int) -> LinearModel:
        return LinearModel(template.task, None, enc, weight[i], bias[i])

    h = Host(store=str(tmp_path), revalidate_seconds=1e9)  # resident models are never checked
    try:
        h.cache.policy = FreeSpaceFirstLRU()
        place = h.cache._place

        async def fill() -> None:
            for i in range(N):
                await place(f"m{i:07d}", model(i), "v0")

        gc.collect()
        rss_before = rss_bytes()
        describe(benchmark, GROUP, P_FILL, N, unit="models")
        benchmark.pedantic(lambda: h._run(fill()), rounds=1, iterations=1)
        gc.collect()
        rss_after = rss_bytes()

        st = h.stats()["tiers"]["device"]
        assert st["models"] == N
        (slab,) = h.family.slabs.values()
        assert slab.used == N and (slab.k, slab.d) == (1, size_class(enc.width))

        # a sample of the million answers from its own slot
        picks = rng.choice(N, CHECKED, replace=False)
        X, _ = houses(CHECKED, seed=7)
        outs = h.predict_many([(f"m{i:07d}", [X[j].tolist()]) for j, i in enumerate(picks)])
        x = enc.encode(X)  # (CHECKED, E)
        want = np.einsum("ne,ne->n", weight[picks, 0], x) + bias[picks, 0]
        np.testing.assert_allclose(np.concatenate(outs), want, rtol=1e-4, atol=1e-2)

        # what one placement costs with the stock policy, a million models resident
        h.cache.policy = LRUPolicy()

        async def stock_places() -> float:
            t0 = time.perf_counter()
            for i in range(N, N + STOCK_PROBES):
                await place(f"m{i:07d}", model(i), "v0")
            return (time.perf_counter() - t0) / STOCK_PROBES

        stock_s = h._run(stock_places())

        # what one placement costs without the cache around it: the family's slot writes
        family = LinearFamily(torch.device("cpu"))
        t0 = time.perf_counter()
        for i in range(20_000):
            family.place(model(i))
        family_s = (time.perf_counter() - t0) / 20_000

        fill_s = benchmark.stats.stats.median
        benchmark.extra_info.update(
            arena_bytes_per_model=st["bytes"] / N,
            arena_reserved_bytes_per_model=st["reserved_bytes"] / N,
            rss_before_gib=rss_before / 1024**3,
            rss_after_gib=rss_after / 1024**3,
            rss_bytes_per_model=(rss_after - rss_before) / N,
            place_s_per_model=fill_s / N,
            family_place_s_per_model=family_s,
            stock_policy_place_s_at_1m=stock_s,
            # the fill with the stock policy: each placement scans the models placed before it
            stock_policy_fill_estimate_h=stock_s * N / 2 / 3600,
            targets=[
                {"kind": "extra_max", "key": "arena_bytes_per_model", "max": 200},
                {"kind": "extra_max", "key": "arena_reserved_bytes_per_model", "max": 200},
                {"kind": "extra_max", "key": "rss_after_gib", "max": 2.0},
            ],
        )
    finally:
        h.close()
