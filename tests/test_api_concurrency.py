"""64 concurrent clients over 200 models: every answer is the right model's, for the right rows."""

from __future__ import annotations

import asyncio
import random

import httpx
import numpy as np
from sklearn.linear_model import LinearRegression

from mmhost.convert import from_sklearn

MODELS = 200
CLIENTS = 64
REQUESTS_PER_CLIENT = 15


def test_concurrent_clients_get_unmixed_answers(serve, store):
    rng = np.random.default_rng(0)
    coefs = {}
    for m in range(MODELS):  # distinct per-model weights, so a mixed-up answer shows
        X = rng.normal(size=(20, 4))
        reg = LinearRegression().fit(X, X @ rng.normal(size=4) + m)
        coefs[f"m{m:03d}/model.tar.gz"] = reg
        from_sklearn(reg).save(store / f"m{m:03d}" / "model.tar.gz")
    server = serve(store=str(store), device_budget=120 * 37)  # 120 slots of 37 B: churn

    async def client(seed: int) -> list[tuple[str, np.ndarray, list[float]]]:
        pick = random.Random(seed)
        seen = []
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            for _ in range(REQUESTS_PER_CLIENT):
                name = pick.choice(list(coefs))
                rows = np.round(
                    np.array(
                        [[pick.uniform(-3, 3) for _ in range(4)] for _ in range(pick.randint(1, 4))]
                    ),
                    3,
                )
                body = "\n".join(",".join(map(str, r)) for r in rows)
                r = await c.post(
                    "/endpoints/mmhost/invocations",
                    content=body,
                    headers={"content-type": "text/csv", "x-amzn-sagemaker-target-model": name},
                )
                assert r.status_code == 200, r.text
                seen.append((name, rows, [p["score"] for p in r.json()["predictions"]]))
        return seen

    async def everyone():
        return await asyncio.gather(*(client(i) for i in range(CLIENTS)))

    answers = [a for per_client in asyncio.run(everyone()) for a in per_client]
    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
    for name, rows, got in answers:
        np.testing.assert_allclose(got, coefs[name].predict(rows), rtol=1e-5, atol=1e-4)
    stats = server.host.stats()
    assert stats["batches"]["requests"] >= len(answers)
    assert stats["evictions"]["device"] > 0  # the budget made models move while serving
