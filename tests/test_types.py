"""The shared vocabulary: typed records that still read as the JSON objects they replace."""

from __future__ import annotations

import json

import numpy as np
from conftest import house_pipeline

from mmhost.convert import from_sklearn
from mmhost.host import Host
from mmhost.tools.houses import COLUMNS
from mmhost.types import BatchStats, HostStats, HotModel, ModelInfo, TierStats


def test_a_record_reads_as_its_mapping_and_equals_the_dict_it_replaces():
    b = BatchStats(calls=2, rows=30, requests=5)
    assert b["rows"] == 30 and b.rows == 30
    assert list(b) == ["calls", "rows", "requests"] and len(b) == 3
    assert b == {"calls": 2, "rows": 30, "requests": 5}
    assert b != {"calls": 2, "rows": 30}
    assert b == BatchStats(2, 30, 5) and b != BatchStats(2, 30, 6)
    assert dict(b) == {"calls": 2, "rows": 30, "requests": 5}
    try:
        b["nope"]
    except KeyError as exc:
        assert exc.args == ("nope",)
    else:
        raise AssertionError("an unknown key must be a KeyError")


def test_to_json_turns_nested_records_into_plain_json():
    info = ModelInfo("m", "linear", "regressor", None, 1, "v1", [{"name": "a"}])
    assert info.to_json()["inputs"] == [{"name": "a"}]
    tiers = {"host": TierStats(1, 10, 100)}
    assert json.loads(json.dumps({"tiers": {k: v.to_json() for k, v in tiers.items()}})) == {
        "tiers": {"host": {"models": 1, "bytes": 10, "budget": 100}}
    }


def test_host_stats_is_typed_and_its_json_is_what_stats_serves(store):
    from_sklearn(house_pipeline(0, 1.0), COLUMNS).save(store / "m.tar.gz")
    row = np.array([[1992, 1531, 6, 3.0, 0.68, 1, "y", "n"]], dtype=object)
    with Host(store=str(store), device="cpu") as h:
        h.predict("m.tar.gz", row)
        s = h.stats(top=1)
        assert isinstance(s, HostStats)
        assert s.loads == 1 and s.batches.calls == 1 and s.invocations == 1
        assert s.hottest == [HotModel("m.tar.gz", 1, s.hottest[0].version)]
        assert s.tiers["device"].models == 1
        plain = json.loads(json.dumps(s.to_json()))
        assert plain["tiers"]["device"]["families"]["linear"]["models"] == 1
        assert plain["hottest"][0]["model"] == "m.tar.gz"
        assert plain == s  # the record equals its own JSON, item by item
