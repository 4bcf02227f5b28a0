"""``deploy/`` and the ``Dockerfile``: the Kubernetes manifests and the image run the same
``mmhost serve`` the tests run, with flags and variables it knows, probes on routes it serves,
memory sized from its tier budgets, and the HAProxy configuration ``mmhost fleet
haproxy-config`` writes for the StatefulSet's pods (checked by ``haproxy -c`` where installed).
The image itself is not built here (no container daemon on these machines)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmhost.cli import _parser, _typed
from mmhost.fleet import Address, haproxy_config, parse_addresses
from mmhost.settings import Settings, parse_bytes

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
FIELDS = {f"MMHOST_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def docs(name: str) -> dict[str, dict[str, Any]]:
    found = {}
    for doc in yaml.safe_load_all((K8S / name).read_text()):
        found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


@pytest.fixture(scope="module")
def replicas() -> dict[str, dict[str, Any]]:
    return docs("mmhost.yaml")


@pytest.fixture(scope="module")
def proxy() -> dict[str, dict[str, Any]]:
    return docs("haproxy.yaml")


def container(replicas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = replicas["StatefulSet/mmhost"]["spec"]["template"]["spec"]["containers"]
    return c


def settings_of(c: dict[str, Any]) -> Settings:
    """What ``mmhost serve`` makes of the container's variables and arguments."""
    env = {e["name"]: e["value"] for e in c["env"] if e["name"].startswith("MMHOST_")}
    assert set(env) <= FIELDS, set(env) - FIELDS
    args = vars(_parser().parse_args(["serve", *c["args"]]))
    flags = {k: v for k, v in args.items() if k != "command" and v is not None}
    return Settings.from_env(env, **_typed(flags))


def test_the_statefulset_has_stable_names_behind_a_headless_service(replicas) -> None:
    service, sts = replicas["Service/mmhost"], replicas["StatefulSet/mmhost"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["serviceName"] == "mmhost"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_replicas_run_mmhost_serve_with_what_it_knows(replicas) -> None:
    s = settings_of(container(replicas))
    assert (s.bind_address, s.port, s.store) == ("0.0.0.0", 8080, "s3://my-bucket/models/")
    assert s.drain_seconds > 0  # unready first, so HAProxy takes the pod out before it stops
    pod = replicas["StatefulSet/mmhost"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= s.drain_seconds + s.graceful_timeout_seconds


def test_memory_is_sized_from_the_tier_budgets(replicas) -> None:
    c = container(replicas)
    s = settings_of(c)
    need = s.resolved_device_budget("cpu") + s.host_budget + s.max_inflight_body_bytes
    request = parse_bytes(c["resources"]["requests"]["memory"].replace("i", "iB"))
    limit = parse_bytes(c["resources"]["limits"]["memory"].replace("i", "iB"))
    assert request is not None and limit is not None
    assert request >= need + 1024**3  # the process itself: torch and Python, about 1 GiB
    assert limit >= request
    disk = parse_bytes(c["resources"]["requests"]["ephemeral-storage"].replace("i", "iB"))
    assert disk is not None and disk >= s.disk_budget


def test_the_probes_are_routes_the_server_serves(replicas) -> None:
    from mmhost.api.app import create_app
    from mmhost.host import Host

    c = container(replicas)
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/ping"
    with Host(settings=Settings(store=str(ROOT), store_check=False)) as host:
        paths = {getattr(r, "path", None) for r in create_app(host).routes}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] in paths


def test_haproxy_gets_the_generated_configuration_for_the_pods(replicas, proxy) -> None:
    sts = replicas["StatefulSet/mmhost"]
    n, svc = sts["spec"]["replicas"], sts["spec"]["serviceName"]
    pods = ",".join(f"mmhost-{i}.{svc}.default.svc.cluster.local:8080" for i in range(n))
    want = haproxy_config(
        parse_addresses(pods), Address("0.0.0.0", 8080), stats=Address("0.0.0.0", 8404)
    )
    text = proxy["ConfigMap/mmhost-haproxy"]["data"]["haproxy.cfg"]
    assert text == want
    deployment = proxy["Deployment/mmhost-haproxy"]["spec"]["template"]
    assert deployment["spec"]["volumes"][0]["configMap"]["name"] == "mmhost-haproxy"
    assert proxy["Service/mmhost-endpoint"]["spec"]["selector"] == deployment["metadata"]["labels"]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_kubernetes_configuration(proxy, tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(proxy["ConfigMap/mmhost-haproxy"]["data"]["haproxy.cfg"])
    checked = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_image_runs_mmhost_serve_with_known_variables() -> None:
    text = (ROOT / "Dockerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (.*)$", text, re.M)
    assert entry and json.loads(entry.group(1)) == ["mmhost", "serve"]
    env_block = text[text.index("ENV PATH=") :].split("\nUSER")[0]
    env = dict(re.findall(r"(MMHOST_[A-Z_]+)=(\S+)", env_block))
    assert env and set(env) <= FIELDS
    s = Settings.from_env(env)
    assert f"EXPOSE {s.port}" in text and s.bind_address == "0.0.0.0"
    assert "torch==2.13.0" in text  # the same pin as make install
