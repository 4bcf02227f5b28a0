"""``mmhost fleet haproxy-config``: the configuration it writes, checked by HAProxy itself
(``haproxy -c``) where it is installed, and its refusals of bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mmhost.cli import main
from mmhost.fleet import Address, FleetSpec, Ring, haproxy_config, parse_addresses, up

HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
THREE = parse_addresses("127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083")


def haproxy_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    assert HAPROXY is not None
    return subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)


def test_addresses_parse() -> None:
    assert Address.parse("10.0.0.1:8080") == Address("10.0.0.1", 8080)
    assert Address.parse("[::1]:9000") == Address("::1", 9000)
    assert str(Address("::1", 9000)) == "[::1]:9000"
    assert Address.parse("mmhost-0.mmhost:8080").literal is False
    assert Address.parse("127.0.0.1:1").literal is True


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("localhost", "not HOST:PORT"),
        ("localhost:", "not HOST:PORT"),
        (":8080", "not HOST:PORT"),
        ("h:0", "1 to 65535"),
        ("h:70000", "1 to 65535"),
        ("a b:80", "spaces"),
        ("a#b:80", "'#'"),
    ],
)
def test_bad_addresses_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Address.parse(text)


def test_replica_lists_need_one_and_none_twice() -> None:
    with pytest.raises(ValueError, match="no replicas"):
        parse_addresses(" , ")
    with pytest.raises(ValueError, match="twice"):
        parse_addresses("127.0.0.1:1,127.0.0.1:1")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"balance_factor": 100}, "101 to 65535"),
        ({"balance_factor": 70000}, "101 to 65535"),
        ({"fall": 0}, "fall must be at least 1"),
        ({"check_interval_ms": 0}, "check_interval_ms"),
        ({"retries": -1}, "retries"),
    ],
)
def test_bad_ring_settings_are_refused(kwargs: dict[str, int], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Ring(**kwargs)


def test_the_configuration_has_each_part() -> None:
    text = haproxy_config(THREE, Address("0.0.0.0", 8080))
    lines = [line.strip() for line in text.splitlines()]
    assert "bind 0.0.0.0:8080" in lines
    assert "balance hdr(X-Amzn-SageMaker-Target-Model)" in lines
    assert "balance hash var(txn.model)" in lines
    assert lines.count("hash-type consistent") == 2
    assert lines.count("hash-balance-factor 150") == 2
    assert "http-check send meth GET uri /ping" in lines
    assert "http-check send meth GET uri /v2/health/ready" in lines
    assert "retry-on conn-failure empty-response 503" in lines
    assert "option redispatch 1" in lines
    assert "http-reuse safe" in lines
    for i in (1, 2, 3):  # the ring is built from the ids: the same in both backends
        assert f"server r{i} 127.0.0.1:808{i} id {i}" in lines
        assert f"server r{i} 127.0.0.1:808{i} id {i} track sagemaker/r{i}" in lines
    assert "resolvers dns" not in lines  # IP addresses need no DNS
    assert "hash-balance-factor" not in haproxy_config(THREE, THREE[0], Ring(balance_factor=0))


@needs_haproxy
@pytest.mark.parametrize(
    ("replicas", "ring", "stats"),
    [
        ("127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083", Ring(), None),
        ("127.0.0.1:8081", Ring(balance_factor=0, fall=1, rise=1), Address("127.0.0.1", 9101)),
        ("[::1]:8081,[::1]:8082", Ring(check_interval_ms=200), None),
        # a StatefulSet's pods by name: resolved at run time, so a pod not there yet is no error
        ("mmhost-0.mmhost:8080,mmhost-1.mmhost:8080", Ring(), Address("0.0.0.0", 9101)),
    ],
)
def test_haproxy_accepts_the_configuration(
    replicas: str, ring: Ring, stats: Address | None, tmp_path: Path
) -> None:
    text = haproxy_config(parse_addresses(replicas), Address("127.0.0.1", 8080), ring, stats)
    if "mmhost-0" in replicas:
        assert "resolvers dns" in text and "init-addr last,libc,none" in text
    checked = haproxy_check(text, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "Configuration file is valid" in checked.stdout + checked.stderr


@needs_haproxy
def test_the_shipped_example_is_what_the_command_prints(tmp_path: Path, capsys) -> None:
    shipped = Path(__file__).resolve().parent.parent / "deploy" / "haproxy" / "haproxy.cfg"
    args = ["--replicas", "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083", "--bind", "0.0.0.0:8080"]
    assert main(["fleet", "haproxy-config", *args, "--stats", "0.0.0.0:8404"]) == 0
    printed = capsys.readouterr().out
    assert printed == shipped.read_text()
    assert haproxy_check(printed, tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["fleet", "haproxy-config", "--replicas", "nope"], "not HOST:PORT"),
        (["fleet", "haproxy-config", "--replicas", "h:1", "--balance-factor", "50"], "101"),
        (["fleet", "up", "--replicas", "0", "--store", "s"], "at least 1"),
        (["fleet", "up", "--replicas", "2", "--store", "s", "--haproxy-port", "65535"], "65536"),
    ],
)
def test_the_commands_refuse_bad_flags(argv: list[str], words: str, capsys) -> None:
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_fleet_up_says_how_to_install_haproxy(tmp_path: Path, capsys) -> None:
    spec = FleetSpec(replicas=1, serve_args=("--store", str(tmp_path)), haproxy="no-such-haproxy")
    assert up(spec) == 2
    assert "apt-get install haproxy" in capsys.readouterr().err


@needs_haproxy
def test_fleet_up_stops_when_a_replica_cannot_start(tmp_path: Path, capsys) -> None:
    spec = FleetSpec(
        replicas=1,
        serve_args=("--store", str(tmp_path / "missing")),
        bind=Address("127.0.0.1", 1),  # never reached: the replica fails first
        base_port=18931,
    )
    assert up(spec) == 2
    assert "replica r1 exited with 2 at start" in capsys.readouterr().err
