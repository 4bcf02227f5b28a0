"""Collection, machine info and the session's fleet (see ``fleet.py`` for the workload).

Run: ``python -m pytest benchmarks -o python_files='bench_*.py' --benchmark-json=out.json``,
then ``python benchmarks/report.py out.json``.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import psutil
import pytest
import torch
from fleet import Fleet, build_fleet

from mmhost.kernels import _native


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench_*.py`` when ``python_files`` was not overridden on the command line
    (plain ``pytest benchmarks``); when it was, pytest's own collector takes them."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest collects it itself
    if any(fnmatch.fnmatch(file_path.name, p) for p in parent.config.getini("python_files")):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda"] = torch.cuda.is_available()
    machine_info["mmhost_C"] = _native.available()
    machine_info["usable_cores"] = len(os.sched_getaffinity(0))
    machine_info["ram_gib"] = round(psutil.virtual_memory().total / 1024**3, 1)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """1,000 fitted pipelines, saved as artifacts in a folder store (built once: ~8 s)."""
    return build_fleet(tmp_path_factory.mktemp("store"))
