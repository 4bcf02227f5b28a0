"""``mmhost experiment cache`` and ``mmhost plot``: the cache fills to its budget and stays
there, LRU keeps the models used last, and the charts are real PNGs of the promised size."""

from __future__ import annotations

import csv
import struct
import sys
from pathlib import Path

import pytest

from mmhost.cli import main
from mmhost.tools.experiment import CSV_NAME, CacheExperiment, run, schedule
from mmhost.tools.plot import CACHE_HIT_PNG, DPI, HEIGHT_IN, MEMORY_PNG, WIDTH_IN

N = 40
HALF = N // 2
CAPACITY = round(0.6 * N)  # the default budget fraction, in models


def _rows(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; the whole image must decode too."""
    from matplotlib.image import imread

    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    _length, chunk, width, height = struct.unpack(">I4sII", head[8:24])
    assert chunk == b"IHDR"
    assert imread(path).shape[:2] == (height, width)
    return width, height


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> tuple[dict, list[dict[str, float]], Path]:
    """One N=40 run shared by the tests below: (summary, CSV rows, out folder)."""
    out = tmp_path_factory.mktemp("experiment")
    summary = run(CacheExperiment(models=N, out=str(out), progress=False))
    return summary, _rows(out / CSV_NAME), out


def test_invocations_follow_the_three_phases(experiment):
    _, rows, _ = experiment
    assert [(int(r["phase"]), int(r["model"])) for r in rows] == schedule(N)
    assert [int(r["invocation"]) for r in rows] == list(range(1, 2 * N + 1))
    assert [sum(r["phase"] == p for r in rows) for p in (1, 2, 3)] == [HALF, HALF, N]


def test_loaded_model_count_levels_off_at_the_budget(experiment):
    summary, rows, _ = experiment
    counts = [int(r["LoadedModelCount"]) for r in rows]
    assert summary["capacity"] == CAPACITY
    assert summary["device_budget"] == CAPACITY * summary["model_bytes"]
    assert max(counts) == CAPACITY and counts[-1] == CAPACITY
    assert counts == sorted(counts)  # nothing is ever unloaded, only replaced
    assert counts[HALF - 1] == HALF  # phase 1 loads N/2 models, one per invocation
    first_full = counts.index(CAPACITY)
    assert all(c == CAPACITY for c in counts[first_full:])
    assert summary["evictions"] == N - CAPACITY


def test_memory_utilization_is_device_bytes_over_budget(experiment):
    _, rows, _ = experiment
    for r in rows:
        assert 0 < r["MemoryUtilization"] <= 1
        assert r["MemoryUtilization"] == pytest.approx(r["LoadedModelCount"] / CAPACITY, rel=1e-5)
    assert rows[-1]["MemoryUtilization"] == 1.0


def test_lru_hits_exactly_the_models_still_resident(experiment):
    summary, rows, _ = experiment
    hits = {p: [int(r["hit"]) for r in rows if r["phase"] == p] for p in (1, 2, 3)}
    assert hits[1] == [0] * HALF  # a cold store: every first call loads
    assert hits[2] == [1] * HALF  # N/2 models fit: all still resident
    assert hits[3] == [1] * HALF + [0] * (N - HALF)  # the first half resident, then new models
    assert summary["hit_rate"] == {1: 0.0, 2: 1.0, 3: 0.5}
    assert summary["loads"] == N  # each model loaded once: evicted ones are never called again


def test_hit_rate_columns_are_window_and_phase_means(experiment):
    _, rows, _ = experiment
    hits = [r["hit"] for r in rows]
    for i, r in enumerate(rows):
        window = hits[max(0, i - 9) : i + 1]
        assert r["ModelCacheHit_last10"] == pytest.approx(sum(window) / len(window))
        so_far = [x["hit"] for x in rows[: i + 1] if x["phase"] == r["phase"]]
        assert r["ModelCacheHit_phase"] == pytest.approx(sum(so_far) / len(so_far), rel=1e-5)
    assert [r["ModelCacheHit_phase"] for r in rows if r["phase"] == 2][-1] == 1.0


def test_charts_are_pngs_of_the_fixed_size(experiment):
    summary, _, out = experiment
    charts = [out / MEMORY_PNG, out / CACHE_HIT_PNG]
    assert summary["paths"] == [out / CSV_NAME, *charts]
    for png in charts:
        assert _png_size(png) == (WIDTH_IN * DPI, HEIGHT_IN * DPI) == (1200, 600)


def test_plot_from_csv_draws_the_same_charts(experiment, tmp_path, capsys):
    _, _, out = experiment
    assert main(["plot", "--from-csv", str(out / CSV_NAME), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for png in (MEMORY_PNG, CACHE_HIT_PNG):
        assert _png_size(tmp_path / png) == (1200, 600)
        assert str(tmp_path / png) in printed


def test_plot_refuses_a_csv_without_a_required_column(tmp_path, capsys):
    bad = tmp_path / "scrape.csv"
    bad.write_text("invocation,LoadedModelCount,ModelCacheHit_last10\n1,1,0\n2,2,0\n")
    assert main(["plot", "--from-csv", str(bad), "--out", str(tmp_path / "charts")]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) MemoryUtilization" in err and str(bad) in err
    assert not (tmp_path / "charts").exists()


def test_plot_refuses_a_non_numeric_value(tmp_path, capsys):
    bad = tmp_path / "scrape.csv"
    bad.write_text("invocation,LoadedModelCount,MemoryUtilization,ModelCacheHit_last10\n1,x,0,0\n")
    assert main(["plot", "--from-csv", str(bad)]) == 2
    assert "line 2: column LoadedModelCount is 'x'" in capsys.readouterr().err


def test_without_matplotlib_the_commands_say_what_to_install(experiment, monkeypatch, capsys):
    _, _, out = experiment
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    assert main(["plot", "--from-csv", str(out / CSV_NAME)]) == 2
    assert "pip install 'mmhost[plots]'" in capsys.readouterr().err
    assert main(["experiment", "cache", "--models", "4", "--out", str(out / "never")]) == 2
    assert "pip install 'mmhost[plots]'" in capsys.readouterr().err
    assert not (out / "never").exists()  # refused before the run, not after it


def test_only_the_lru_policy_exists(tmp_path, capsys):
    argv = ["experiment", "cache", "--policy", "lfu", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "policy 'lfu' is not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_explicit_device_budget_wins_over_the_fraction(experiment, tmp_path, capsys):
    summary, _, _ = experiment
    budget = 6 * summary["model_bytes"]  # 6 of 10 models
    argv = ["experiment", "cache", "--models", "10", "--budget-fraction", "0.9"]
    assert main([*argv, "--device-budget", str(budget), "--out", str(tmp_path)]) == 0
    counts = [int(r["LoadedModelCount"]) for r in _rows(tmp_path / CSV_NAME)]
    assert max(counts) == counts[-1] == 6
    assert "levels off at 6 (the budget holds 6)" in capsys.readouterr().out
