"""/metrics and /stats under a scripted sequence (loads, hits, evictions under a tiny budget, a
failing load, a 4xx), read with prometheus-client's own parser; request ids; JSON logs."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from conftest import house_pipeline
from prometheus_client.parser import text_string_to_metric_families

from mmhost.convert import from_sklearn
from mmhost.families.arena import size_class, slot_bytes
from mmhost.logs import JsonFormatter
from mmhost.metrics import HISTOGRAMS
from mmhost.tools.houses import COLUMNS

ROW = "1992,1531,6,3.0,0.68,1,y,n"
SLOT = slot_bytes(1, size_class(10))  # one houses model on the device


@pytest.fixture
def fleet(store):
    for i in range(3):
        from_sklearn(house_pipeline(i, 1.0 + i), COLUMNS).save(store / f"m{i}.tar.gz")
    (store / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    return store


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value} over every sample."""
    reply = httpx.get(url + "/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def invoke(url: str, model: str, body: str = ROW) -> httpx.Response:
    return httpx.post(
        url + "/invocations",
        content=body,
        headers={"content-type": "text/csv", "X-Amzn-SageMaker-Target-Model": model},
    )


def test_every_metric_moves_as_it_should(serve, fleet):
    server = serve(store=str(fleet), device_budget=2 * SLOT, host_budget=0)
    url = server.url
    before = scrape(url)
    assert one(before, "mmhost_invocations_total") == 0
    assert one(before, "mmhost_loaded_models", tier="device") == 0
    # miss, miss, hit, miss (m1, the least recently used, is evicted)
    for model in ("m0.tar.gz", "m1.tar.gz", "m0.tar.gz", "m2.tar.gz"):
        assert invoke(url, model).status_code == 200
    assert invoke(url, "broken.tar.gz").status_code == 424  # a failing load
    assert invoke(url, "m0.tar.gz", "not,enough").status_code == 400  # a 4xx
    m = scrape(url)
    assert one(m, "mmhost_invocations_total") == 6
    assert one(m, "mmhost_rows_total") == 6
    assert one(m, "mmhost_cache_hits_total", tier="device") == 1 + 1  # the 4xx hit m0 too
    assert one(m, "mmhost_cache_misses_total") == 3
    assert one(m, "mmhost_model_loads_total") == 3
    assert one(m, "mmhost_model_load_failures_total") == 1
    assert one(m, "mmhost_evictions_total", tier="device") == 1
    assert one(m, "mmhost_loaded_models", tier="device") == 2
    assert one(m, "mmhost_tier_bytes", tier="device") == 2 * SLOT
    assert one(m, "mmhost_tier_budget_bytes", tier="device") == 2 * SLOT
    assert one(m, "mmhost_tier_utilization", tier="device") == 1.0
    assert one(m, "mmhost_family_models", family="linear") == 2
    assert one(m, "mmhost_family_models", family="trees") == 0
    assert one(m, "mmhost_arena_reserved_bytes", family="linear") >= 2 * SLOT
    assert one(m, "mmhost_arena_reserved_bytes", family="trees") == 0
    assert one(m, "mmhost_errors_total", status="400", code="ValidationError") == 1
    assert one(m, "mmhost_errors_total", status="424", code="ModelError") == 1
    count = {name: one(m, f"mmhost_{name}_count") for name in HISTOGRAMS}
    assert count["model_latency_seconds"] == 4  # the successful invocations
    assert count["overhead_latency_seconds"] == 4
    assert count["model_loading_wait_seconds"] == 4  # m0, m1, m2 and broken found no model
    assert count["model_downloading_seconds"] == 3  # the loads that succeeded
    assert count["model_loading_seconds"] == 3
    assert count["model_unloading_seconds"] == 1  # the eviction
    assert count["batch_rows"] == 4
    assert one(m, "mmhost_batch_models_bucket", le="1.0") == 4
    assert one(m, "mmhost_model_latency_seconds_bucket", le="+Inf") == 4
    assert one(m, "mmhost_model_latency_seconds_sum") > 0
    assert not any("model" in dict(k) for samples in m.values() for k in samples)


def test_stats_has_the_same_numbers_and_the_hottest_models(serve, fleet):
    server = serve(store=str(fleet))
    for model, times in (("m0.tar.gz", 3), ("m1.tar.gz", 1), ("m2.tar.gz", 2)):
        for _ in range(times):
            assert invoke(server.url, model).status_code == 200
    stats = httpx.get(server.url + "/stats", params={"top": 2}).json()
    assert stats["invocations"] == 6 and stats["misses"] == 3
    assert stats["tiers"]["device"]["models"] == 3
    families = stats["tiers"]["device"]["families"]
    assert families["linear"]["models"] == 3 and families["linear"]["slabs"] == 1
    assert families["trees"] == {"models": 0, "slabs": 0, "reserved_bytes": 0}
    assert stats["hottest"] == [
        {"model": "m0.tar.gz", "requests": 3, "version": stats["hottest"][0]["version"]},
        {"model": "m2.tar.gz", "requests": 2, "version": stats["hottest"][1]["version"]},
    ]
    latency = stats["histograms"]["model_latency_seconds"]
    assert latency["count"] == 6 and latency["p50_le"] <= latency["p99_le"]
    assert httpx.get(server.url + "/stats", params={"top": "lots"}).status_code == 400


def test_per_model_metrics_are_opt_in(serve, fleet):
    server = serve(store=str(fleet), per_model_metrics=True)
    for _ in range(2):
        invoke(server.url, "m1.tar.gz")
    m = scrape(server.url)
    assert one(m, "mmhost_model_invocations_total", model="m1.tar.gz") == 2


def test_each_reply_carries_a_request_id(serve, fleet):
    server = serve(store=str(fleet))
    ids = {invoke(server.url, "m0.tar.gz").headers["x-amzn-RequestId"] for _ in range(3)}
    ids.add(invoke(server.url, "nope.tar.gz").headers["x-amzn-RequestId"])  # errors too
    ids.add(httpx.get(server.url + "/ping").headers["x-amzn-RequestId"])
    assert len(ids) == 5


def test_debug_logs_one_json_line_per_request_with_its_id(serve, fleet, caplog):
    server = serve(store=str(fleet))
    with caplog.at_level(logging.DEBUG, logger="mmhost.requests"):
        rid = invoke(server.url, "m0.tar.gz").headers["x-amzn-RequestId"]
        # the line is written once the answer is sent: the client may see the answer first
        deadline = time.monotonic() + 5
        while not [r for r in caplog.records if r.name == "mmhost.requests"]:
            assert time.monotonic() < deadline, "no request log line"
            time.sleep(0.01)
    (record,) = [r for r in caplog.records if r.name == "mmhost.requests"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == rid and line["status"] == 200
    assert line["target_model"] == "m0.tar.gz" and line["level"] == "debug"
    assert line["path"] == "/invocations" and line["ms"] > 0


def test_loads_and_evictions_are_logged_at_info(host_factory, fleet, caplog):
    h = host_factory(store=str(fleet), device_budget=SLOT, host_budget=0)
    with caplog.at_level(logging.INFO, logger="mmhost.cache"):
        h.load("m0.tar.gz")
        h.load("m1.tar.gz")
    events = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert [(e["event"], e["model"]) for e in events] == [
        ("load", "m0.tar.gz"),
        ("evict", "m0.tar.gz"),
        ("load", "m1.tar.gz"),
    ]
    assert events[0]["from"] == "store" and events[0]["fetch_ms"] >= 0
