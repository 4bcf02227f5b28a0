"""Density: 1,000,000 resident linear models (houses schema: 10 encoded inputs, the D=16 slab).

One coroutine on the engine loop places a million composed models with ``ModelCache._place``
(the call every load ends in): each gets its own slot and its own weights (rows of one
(N, 1, 10) array, so creating them costs little), and all share one encoder, as models with
the same columns do. Recorded: arena bytes per model (used and reserved), process RSS before
and after and per model, placements per second, and a check that 1,000 of the models answer
``predict_many`` correctly.

The fill runs with the stock ``LRUPolicy``, which answers "no victims" without a scan while the
device tier has room, so a placement's cost does not grow with the models already resident:
``place_s_at_1m`` times a few more placements with the million resident, to compare with the
fill's average (``place_s_per_model``) and with the family's slot writes alone
(``family_place_s_per_model``).

Targets (from the issue): < 200 B/model in the arena, < 2 GiB process RSS.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import torch
from fleet import describe, rss_bytes

from mmhost import Host
from mmhost.families.arena import size_class
from mmhost.families.linear import LinearFamily, LinearModel
from mmhost.tools.houses import houses

N = 1_000_000
GROUP = "density: 1,000,000 resident models"
P_FILL = "ModelCache._place x 1M"
PROBES = 1000  # placements timed after the fill, a million models resident
CHECKED = 1000


def test_density_one_million_models(benchmark, fleet, tmp_path):
    template = fleet.models[0]
    enc = template.encoder
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((N + PROBES, 1, enc.width), dtype=np.float32)  # (N,K,E)
    bias = rng.standard_normal((N + PROBES, 1), dtype=np.float32) * 1e3  # (N, K)

    def model(i: int) -> LinearModel:
        return LinearModel(template.task, None, enc, weight[i], bias[i])

    h = Host(store=str(tmp_path), revalidate_seconds=1e9)  # resident models are never checked
    try:
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
        (slab,) = h.families.by_name["linear"].slabs.values()
        assert slab.used == N and (slab.k, slab.d) == (1, size_class(enc.width))

        # a sample of the million answers from its own slot
        picks = rng.choice(N, CHECKED, replace=False)
        X, _ = houses(CHECKED, seed=7)
        outs = h.predict_many([(f"m{i:07d}", [X[j].tolist()]) for j, i in enumerate(picks)])
        x = enc.encode(X)  # (CHECKED, E)
        want = np.einsum("ne,ne->n", weight[picks, 0], x) + bias[picks, 0]
        np.testing.assert_allclose(np.concatenate(outs), want, rtol=1e-4, atol=1e-2)

        # what one placement costs with a million models resident
        async def probe_places() -> float:
            t0 = time.perf_counter()
            for i in range(N, N + PROBES):
                await place(f"m{i:07d}", model(i), "v0")
            return (time.perf_counter() - t0) / PROBES

        probe_s = h._run(probe_places())
        assert h.stats()["evictions"]["device"] == 0  # all with room: the no-scan path

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
            place_s_at_1m=probe_s,
            family_place_s_per_model=family_s,
            targets=[
                {"kind": "extra_max", "key": "arena_bytes_per_model", "max": 200},
                {"kind": "extra_max", "key": "arena_reserved_bytes_per_model", "max": 200},
                {"kind": "extra_max", "key": "rss_after_gib", "max": 2.0},
            ],
        )
    finally:
        h.close()
