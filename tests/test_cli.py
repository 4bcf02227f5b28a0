"""``mmhost serve`` as users run it: a subprocess, flags and MMHOST_* env, a clean SIGTERM."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from conftest import RTOL_PRICE, house_pipeline, runtime_client

from mmhost.cli import main
from mmhost.settings import Settings

ROW = "1992,1531,6,3.0,0.68,1,y,n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmhost.cli", "serve", "--port", str(port), *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/ping", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"mmhost serve did not start:\n{proc.communicate()[0]}")
        time.sleep(0.1)


def test_every_setting_is_a_flag(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(Settings):
        assert "--" + f.name.replace("_", "-") in text
        assert f"MMHOST_{f.name.upper()}" in text


@pytest.mark.parametrize(
    "args, words",
    [
        (["--device-budget", "lots"], "cannot read 'lots' as a byte size"),
        (["--port", "http"], "--port 'http'"),
        (["--device", "tpu"], "device must be auto, cpu or cuda"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(args, words, capsys, store):
    assert main(["serve", "--store", str(store), *args]) == 2
    assert words in capsys.readouterr().err


def test_a_missing_store_exits_2(tmp_path, capsys):
    assert main(["serve", "--store", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_serve_with_env_and_flags_then_sigterm_lets_in_flight_requests_finish(city_store):
    proc, url = _start(["--store", str(city_store)], env={"MMHOST_ENDPOINT_NAME": "houses"})
    try:
        client = runtime_client(url)
        reply = client.invoke_endpoint(
            EndpointName="houses",
            TargetModel="Chicago_IL/Chicago_IL.tar.gz",
            ContentType="text/csv",
            Body=ROW,
        )
        want = house_pipeline(0).predict(np.array([ROW.split(",")], dtype=object))[0]
        got = float(reply["Body"].read().decode().split('"score":')[1].rstrip("}]"))
        assert got == pytest.approx(want, rel=RTOL_PRICE)

        started = threading.Event()
        result: dict[str, httpx.Response] = {}

        def slow_body():  # the request is in flight while the server is told to stop
            yield ROW[:10].encode()
            started.set()
            time.sleep(1.0)
            yield ROW[10:].encode()

        def send() -> None:
            result["r"] = httpx.post(
                url + "/invocations",
                content=slow_body(),
                timeout=30,
                headers={
                    "content-type": "text/csv",
                    "x-amzn-sagemaker-target-model": "Chicago_IL/Chicago_IL.tar.gz",
                },
            )

        sender = threading.Thread(target=send)
        sender.start()
        assert started.wait(10)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        sender.join(30)
        assert result["r"].status_code == 200
        assert result["r"].json()["predictions"][0]["score"] == pytest.approx(want, rel=RTOL_PRICE)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    assert "Traceback" not in out


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_an_open_server_says_so_in_its_log(city_store):
    proc, _ = _start(["--store", str(city_store)])
    assert "no --auth-config: every caller that can reach 127.0.0.1" in _stop(proc)


def test_serve_with_an_auth_config_and_an_audit_file(city_store, tmp_path):
    import json

    import yaml
    from botocore.exceptions import ClientError

    config = tmp_path / "auth.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "principals": [
                    {
                        "arn": "arn:aws:iam::111122223333:user/ny",
                        "access_keys": [{"id": "AKIANY", "secret": "ny-secret"}],
                        "policies": [
                            {
                                "Statement": {
                                    "Effect": "Allow",
                                    "Action": "sagemaker:InvokeEndpoint",
                                    "Resource": "*",
                                    "Condition": {
                                        "StringLike": {"sagemaker:TargetModel": "NewYork_NY/*"}
                                    },
                                }
                            }
                        ],
                    }
                ]
            }
        )
    )
    audit = tmp_path / "audit.jsonl"
    proc, url = _start(
        ["--store", str(city_store), "--auth-config", str(config), "--reject-replays", "true"],
        env={"MMHOST_AUDIT_LOG": str(audit)},
    )
    client = runtime_client(url, key_id="AKIANY", secret="ny-secret")
    for target, allowed in (("NewYork_NY/NewYork_NY.tar.gz", True), ("Chicago_IL/x", False)):
        call = lambda t=target: client.invoke_endpoint(  # noqa: E731
            EndpointName="mmhost", TargetModel=t, ContentType="text/csv", Body=ROW
        )
        if allowed:
            assert call()["ResponseMetadata"]["HTTPStatusCode"] == 200
        else:
            with pytest.raises(ClientError, match="AccessDeniedException"):
                call()
    out = _stop(proc)
    assert "auth: 1 principal(s)" in out and "ny-secret" not in out
    (line,) = audit.read_text().splitlines()
    assert json.loads(line)["model"] == "Chicago_IL/x"
