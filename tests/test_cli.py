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
