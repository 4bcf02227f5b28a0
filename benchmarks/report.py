"""Markdown report of a ``--benchmark-json`` file: per group, each provider's median time, its
throughput (rows/s, loads/s, models/s) and its speed-up over every baseline of the group; the
breakdown of a total into measured parts; the issue's targets, met or not.

    python benchmarks/report.py bench.json > benchmarks/results/<machine>.md

Reads the labels that ``benchmarks/fleet.py``'s ``describe`` writes into ``extra_info``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any

# extra_info keys that label a benchmark rather than report a number
_LABELS = {"provider", "unit", "count", "baseline", "part_of", "targets", "in_loop_p50_s", "bytes"}


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_rate(per_s: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= scale:
            return f"{per_s / scale:.2f} {prefix} {unit}/s"
    return f"{per_s:.1f} {unit}/s"


def fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:,.0f}×"
    return f"{r:.2f}×" if r >= 1 else f"{r:.2g}×"


def fmt_value(key: str, v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if key.endswith("_s") or "_s_" in key:
        return fmt_time(v)
    if key.endswith("_h"):
        return f"{v:,.1f} h"
    if "bytes" in key:
        return f"{v:,.1f} B"
    if key.endswith("_gib"):
        return f"{v:.3f} GiB"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}"


class Bench:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.name: str = raw["name"]
        self.group: str = raw.get("group") or raw["name"]
        info = raw.get("extra_info", {})
        self.info = info
        self.provider: str = info.get("provider", self.name)
        self.unit: str = info.get("unit", "rows")
        self.count: int = info.get("count", 1)
        self.baseline: bool = bool(info.get("baseline"))
        self.part_of: str | None = info.get("part_of")
        self.targets: list[dict[str, Any]] = info.get("targets", [])
        self.median: float = raw["stats"]["median"]
        self.rounds: int = raw["stats"]["rounds"]

    @property
    def rate(self) -> float:
        return self.count / self.median

    def details(self) -> dict[str, Any]:
        return {k: v for k, v in self.info.items() if k not in _LABELS}


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def group_section(group: str, benches: list[Bench]) -> list[str]:
    baselines = [b for b in benches if b.baseline]
    in_loop = any("in_loop_p50_s" in b.info for b in benches)
    gbps = any("bytes" in b.info for b in benches)
    header = ["provider", "median", "throughput", "rounds"]
    header += ["GB/s (least traffic)"] if gbps else []
    header += ["p50 on the engine loop"] if in_loop else []
    header += [f"× vs {b.provider}" for b in baselines]
    rows = []
    for b in benches:
        row = [b.provider, fmt_time(b.median), fmt_rate(b.rate, b.unit), str(b.rounds)]
        if gbps:
            nbytes = b.info.get("bytes")
            row.append("" if nbytes is None else f"{nbytes / b.median / 1e9:.2f}")
        if in_loop:
            v = b.info.get("in_loop_p50_s")
            row.append("" if v is None else fmt_time(v))
        row += [fmt_ratio(base.median / b.median) for base in baselines]
        rows.append(row)
    lines = [f"## {group}", "", *table(header, rows), ""]

    by_provider = {b.provider: b for b in benches}
    totals: dict[str, list[Bench]] = {}
    for b in benches:
        if b.part_of in by_provider:
            totals.setdefault(b.part_of, []).append(b)
    for total_name, parts in totals.items():
        total = by_provider[total_name]
        rest = total.median - sum(p.median for p in parts)
        prow = [[p.provider, fmt_time(p.median), f"{p.median / total.median:.0%}"] for p in parts]
        prow.append(
            ["rest, derived (acquire, batching, engine loop, split, thread hop)", fmt_time(rest)]
            + [f"{rest / total.median:.0%}"]
        )
        lines += [f"Where the time of **{total_name}** ({fmt_time(total.median)}) goes:", ""]
        lines += table(["part", "median", "share"], prow) + [""]

    for b in benches:
        d = b.details()
        if d:
            items = ", ".join(f"{k} = {fmt_value(k, v)}" for k, v in d.items())
            lines.append(f"- {b.provider}: {items}")
    if any(b.details() for b in benches):
        lines.append("")
    return lines


def check_targets(groups: dict[str, list[Bench]]) -> list[str]:
    rows = []
    for group, benches in groups.items():
        by_provider = {b.provider: b for b in benches}
        for b in benches:
            for t in b.targets:
                kind = t["kind"]
                if kind == "speedup":
                    of, vs = by_provider.get(t.get("of", b.provider)), by_provider.get(t["vs"])
                    if of is None or vs is None:
                        rows.append([group, f"{t.get('of', b.provider)} vs {t['vs']}", "n/a"])
                        continue
                    got = vs.median / of.median
                    what, goal = f"{of.provider} over {vs.provider}", f"≥ {t['min']}×"
                    rows.append([group, what, fmt_ratio(got), goal, _met(got >= t["min"])])
                elif kind == "max_median_s":
                    got = b.median
                    goal = f"≤ {fmt_time(t['max'])}"
                    rows.append([group, f"{b.provider}, p50", fmt_time(got), goal])
                    rows[-1].append(_met(got <= t["max"]))
                elif kind == "extra_max":
                    key = t["key"]
                    got = b.info.get(key)
                    if got is None:
                        rows.append([group, f"{b.provider}: {key}", "n/a", "", ""])
                        continue
                    goal = f"≤ {fmt_value(key, t['max'])}"
                    rows.append([group, f"{b.provider}: {key}", fmt_value(key, got), goal])
                    rows[-1].append(_met(got <= t["max"]))
    rows = [r + [""] * (5 - len(r)) for r in rows]
    return ["## Targets", "", *table(["group", "target", "measured", "goal", "met"], rows), ""]


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def machine_lines(data: dict[str, Any]) -> list[str]:
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {})
    commit = data.get("commit_info", {})
    gpu = "CUDA available" if m.get("cuda") else "no GPU"
    cores = m.get("usable_cores", cpu.get("count", "?"))
    return [
        f"- date: {data.get('datetime', '?')}",
        f"- machine: {cpu.get('brand_raw', m.get('processor', '?'))}, {cores} usable cores, "
        f"{m.get('ram_gib', '?')} GiB RAM, {gpu}",
        f"- python {m.get('python_version', '?')}, torch {m.get('torch', '?')} "
        f"({m.get('torch_threads', '?')} threads), mmhost._C built: {m.get('mmhost_C', '?')}",
        f"- commit: {str(commit.get('id', '?'))[:12]}"
        + (" (with uncommitted changes)" if commit.get("dirty") else ""),
        "- each ratio is a baseline's median over the provider's, measured in the same run "
        "(the machine is shared: compare ratios, not absolute times across runs)",
    ]


def render(data: dict[str, Any], title: str) -> str:
    groups: dict[str, list[Bench]] = {}
    for raw in data["benchmarks"]:
        b = Bench(raw)
        groups.setdefault(b.group, []).append(b)
    lines = [f"# {title}", "", *machine_lines(data), ""]
    for group, benches in groups.items():
        lines += group_section(group, benches)
    lines += check_targets(groups)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="the file written by pytest --benchmark-json")
    ap.add_argument("--title", default="mmhost benchmarks")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        print(render(json.load(f), args.title))


if __name__ == "__main__":
    main()
