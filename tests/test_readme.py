"""The README can't rot: its curl and Python examples run against a real server, and every
setting is documented as a flag."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mmhost.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()
ADDRESS = "127.0.0.1:8080"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_every_setting_is_a_documented_flag():
    for f in dataclasses.fields(Settings):
        assert f"`--{f.name.replace('_', '-')}`" in README, f.name


@pytest.fixture
def address(serve, city_store) -> str:
    return serve(store=str(city_store)).url.removeprefix("http://")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_examples_run(address):
    lines = [ln for b in _blocks("sh") for ln in b.splitlines() if ln.startswith("curl ")]
    assert len(lines) >= 4
    for line in lines:
        out = subprocess.run(
            line.replace(ADDRESS, address), shell=True, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, f"{line}\n{out.stdout}{out.stderr}"
        assert out.stdout.strip(), line


def test_python_examples_run(address, capsys):
    examples = [b for b in _blocks("python") if ADDRESS in b]
    assert len(examples) >= 2
    for code in examples:
        exec(compile(code.replace(ADDRESS, address), "README.md", "exec"), {})
        printed = capsys.readouterr().out
        assert "score" in printed or re.search(r"\d{5,}", printed), printed
