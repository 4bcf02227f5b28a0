"""The README can't rot: every Python block runs as written (those that talk to a server, against
the server ``make serve`` starts after ``make demo``), its curl lines answer, the security
example's config and Prometheus scrape config work against an auth-enabled server, and every
setting is documented as a flag."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import time
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
    (auth,) = [p for p in _blocks("yaml") if "scrape_configs" in p and "authorization" in p]
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


def test_the_fleet_scrape_config_and_queries_name_real_series(serve, city_store, tmp_path):
    """The fleet's scrape targets are ``mmhost fleet up``'s default ports, and every series the
    PromQL table names is one a replica (or HAProxy's exporter) really serves."""
    fleet = README.split("### A fleet behind HAProxy")[1].split("### Flags")[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", fleet, flags=re.S)
    mmhost_job, haproxy_job = yaml.safe_load(block)["scrape_configs"]
    targets = mmhost_job["static_configs"][0]["targets"]
    assert targets == [f"127.0.0.1:{8081 + i}" for i in range(3)]  # --haproxy-port 8080 + 1..
    queries = " ".join(re.findall(r"^\| [^|]+ \| `(.*)` .*\|$", fleet, flags=re.M))
    wanted = set(re.findall(r"\b((?:mmhost|haproxy)_[a-z_]+)", queries))
    assert {"mmhost_loaded_models", "haproxy_server_status"} <= wanted
    server = serve(store=str(city_store))
    httpx.post(
        server.url + "/endpoints/mmhost/invocations",
        headers={"X-Amzn-SageMaker-Target-Model": "Chicago_IL/Chicago_IL.tar.gz",
                 "Content-Type": "text/csv"},
        content=b"1992,1531,6,3.0,0.68,1,y,n",
    ).raise_for_status()  # fmt: skip
    served = {
        s.name
        for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)
        for s in f.samples
    }
    assert {w for w in wanted if w.startswith("mmhost_")} <= served
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed: its exporter's series are not checked")
    from mmhost.fleet import Address, haproxy_config

    port = server.url.rsplit(":", 1)[1]
    stats = Address.parse(haproxy_job["static_configs"][0]["targets"][0])
    cfg = tmp_path / "haproxy.cfg"
    with socket.socket() as s:  # a free port for HAProxy's own (unused) frontend
        s.bind(("127.0.0.1", 0))
        front = s.getsockname()[1]
    cfg.write_text(haproxy_config([Address("127.0.0.1", int(port))], Address("127.0.0.1", front),
                                  stats=Address("127.0.0.1", stats.port)))  # fmt: skip
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                text = httpx.get(f"http://127.0.0.1:{stats.port}/metrics").text
                break
            except httpx.TransportError:
                time.sleep(0.05)
        names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
        assert {w for w in wanted if w.startswith("haproxy_")} <= names
    finally:
        proxy.terminate()
        proxy.wait(10)
