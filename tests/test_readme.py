"""The README can't rot: every Python block runs as written (those that talk to a server, against
the server ``make serve`` starts after ``make demo``), its curl lines answer, the security
example's config and Prometheus scrape config work against an auth-enabled server, and every
setting is documented as a flag."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mmhost.settings import Settings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
ADDRESS = "127.0.0.1:8080"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_every_setting_is_a_documented_flag():
    for f in dataclasses.fields(Settings):
        assert f"`--{f.name.replace('_', '-')}`" in README, f.name


def test_make_serve_is_what_the_readme_says():
    makefile = (ROOT / "Makefile").read_text()
    (command,) = re.findall(r"^SERVE := \$\(BIN\)/(mmhost serve .*)$", makefile, flags=re.M)
    assert f"# = .venv/bin/{command}" in README
    assert command == (
        "mmhost serve --store demo-store/models --preprocessor demo-store/preprocessor.tar.gz"
    )


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Path:
    """What ``make demo`` leaves in demo-store/ (its models and the shared preprocessor)."""
    from mmhost.tools.demo import _fit

    root = tmp_path_factory.mktemp("demo-store")
    _fit(root)
    return root


@pytest.fixture
def address(serve, demo_store) -> str:
    """The server of ``make serve``: the demo's models behind its preprocessor."""
    server = serve(
        store=str(demo_store / "models"), preprocessor=str(demo_store / "preprocessor.tar.gz")
    )
    return server.url.removeprefix("http://")


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


def test_every_python_block_runs_as_written(address, tmp_path, monkeypatch, capsys):
    """Each block in a namespace of its own (no names from another block), in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("python")
    assert len(blocks) >= 4
    for code in blocks:
        exec(compile(code.replace(ADDRESS, address), "README.md", "exec"), {})
        printed = capsys.readouterr().out
        assert "score" in printed or re.search(r"\d{5,}|0\.\d+", printed), (code, printed)


def test_the_security_example_and_its_prometheus_scrape_config(serve, demo_store, tmp_path):
    (config,) = (b for b in _blocks("json") if '"principals"' in b)
    (auth,) = [p for p in _blocks("yaml") if "scrape_configs" in p]
    path = tmp_path / "auth.json"
    path.write_text(config)
    server = serve(
        store=str(demo_store / "models"),
        preprocessor=str(demo_store / "preprocessor.tar.gz"),
        auth_config=str(path),
    )
    (job,) = yaml.safe_load(auth)["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    assert target == ADDRESS
    url = server.url + job["metrics_path"]
    token = job["authorization"]["credentials"]
    assert job["authorization"]["type"] == "Bearer"
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert scraped.status_code == 200
    names = {f.name for f in text_string_to_metric_families(scraped.text)}
    assert "mmhost_invocations" in names or "mmhost_invocations_total" in names
    invoker = json.loads(config)["principals"][0]["api_keys"][0]
    denied = httpx.get(url, headers={"Authorization": f"Bearer {invoker}"})
    assert denied.status_code == 403 and "mmhost:GetMetrics" in denied.text
    assert httpx.get(url).status_code == 403  # no credentials
    for action in ("InvokeEndpoint", "LoadModel", "UnloadModel", "ListModels", "DescribeModel"):
        assert action in README
    assert "`mmhost:GetMetrics`" in README.split("### Security")[1].split("**Hardening.**")[0]
