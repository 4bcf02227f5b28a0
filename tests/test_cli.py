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
        ["--store", str(city_store), "--auth-config", str(config), "--reject-replays"],
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


# --- issue 17: conventions, start-up, shutdown, logs ---------------------------------------
def test_version_and_python_dash_m():
    import mmhost

    for argv in (["-m", "mmhost", "--version"], ["-m", "mmhost.cli", "--version"]):
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == f"mmhost {mmhost.__version__}"


def test_booleans_are_switches():
    from mmhost.cli import _parser

    def parsed(*argv: str) -> dict:
        return vars(_parser().parse_args(["serve", *argv]))

    assert parsed("--per-model-metrics")["per_model_metrics"] is True
    assert parsed("--no-per-model-metrics")["per_model_metrics"] is False
    assert parsed("--reject-replays", "yes")["reject_replays"] is True
    assert parsed("--store-check", "false")["store_check"] is False
    assert parsed()["store_check"] is None  # unset: the environment or the default decides
    assert parsed("--load-model", "a.tar.gz", "--load-model", "b/c.tar.gz")["load_model"] == [
        "a.tar.gz",
        "b/c.tar.gz",
    ]
    with pytest.raises(SystemExit):
        parsed("--per-model-metrics", "maybe")


def test_help_shows_sizes_with_units(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--host-budget BYTES" in text and "MMHOST_HOST_BUDGET; default 1GiB]" in text
    assert "MMHOST_MAX_BODY_BYTES; default 6MiB]" in text
    assert "--per-model-metrics [true|false], --no-per-model-metrics" in text


@pytest.mark.parametrize(
    "argv, module, extra",
    [(["demo"], "sklearn", "demo"), (["experiment", "cache", "--out", "x"], "sklearn", "demo")],
)
def test_a_command_without_its_extra_says_which_to_install(
    argv, module, extra, monkeypatch, capsys
):
    for name in list(sys.modules):
        if (
            name == module
            or name.startswith(module + ".")
            or name in ("mmhost.tools.demo", "mmhost.tools.plot")
        ):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"pip install 'mmhost[{extra}]'" in err and "Traceback" not in err


class Serving:
    """``mmhost serve`` in a subprocess, its output read line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mmhost", "serve", *args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the output:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def test_port_0_logs_the_bound_port_and_json_logs_take_uvicorns_lines(city_store):
    import json

    server = Serving(
        ["--store", str(city_store), "--port", "0", "--log-format", "json", "--log-level", "info"]
    )
    try:
        line = json.loads(server.wait_for("listening on http://127.0.0.1:"))
        url = line["message"].removeprefix("listening on ")
        assert httpx.get(url + "/ping").status_code == 200
    finally:
        assert server.stop() == 0
    records = [json.loads(ln) for ln in server.lines if ln.strip()]  # every line is JSON
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert any("Application startup complete" in r["message"] for r in records)


def _moto(port: int):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    httpx.post(f"http://127.0.0.1:{port}/moto-api/reset")
    return server


NO_CREDENTIALS = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
}
CREDENTIALS = {**NO_CREDENTIALS, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "x"}


def _serve_fails(args: list[str], env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run(
        [sys.executable, "-m", "mmhost", "serve", "--port", str(_free_port()), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    return out.stderr


def test_an_s3_store_that_cannot_be_listed_stops_start_up_saying_why():
    port = _free_port()
    closed = ["--s3-endpoint-url", f"http://127.0.0.1:{port}", "--s3-max-attempts", "1"]
    err = _serve_fails(["--store", "s3://models/", *closed], CREDENTIALS)
    assert "the store check failed" in err and "s3://models/ is unavailable" in err
    assert "--store-check false skips this check" in err
    moto = _moto(port)
    try:
        boto3_env = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}
        import boto3

        boto3.client(
            "s3", aws_access_key_id="testing", aws_secret_access_key="x", **boto3_env
        ).create_bucket(Bucket="models")
        err = _serve_fails(["--store", "s3://models/", *closed], NO_CREDENTIALS)
        assert "Unable to locate credentials" in err
        err = _serve_fails(["--store", "s3://absent/", *closed], CREDENTIALS)
        assert "the bucket 'absent' does not exist" in err
        # skipped on request: the server starts, and a cold load says what the check would have
        server = Serving(
            ["--store", "s3://absent/", *closed, "--port", "0", "--store-check", "false"],
            env=CREDENTIALS,
        )
        try:
            url = server.wait_for("listening on").split("listening on ")[1]
            r = httpx.post(
                url + "/invocations",
                content=ROW,
                headers={"content-type": "text/csv", "x-amzn-sagemaker-target-model": "a.tar.gz"},
            )
            assert r.status_code == 400 and "not found in s3://absent/" in r.text
        finally:
            assert server.stop() == 0
    finally:
        moto.stop()


def test_load_model_flags_preload_before_the_port_opens(city_store, tmp_path):
    listing = tmp_path / "models.txt"
    listing.write_text("# warm at start\n\nHouston_TX/Houston_TX.tar.gz\n")
    args = ["--store", str(city_store), "--port", "0", "--load-models-from", str(listing)]
    server = Serving([*args, "--load-model", "Chicago_IL/Chicago_IL.tar.gz"])
    try:
        url = server.wait_for("listening on").split("listening on ")[1]
        index = httpx.post(url + "/v2/repository/index", json={"ready": True}).json()
        assert {m["name"] for m in index} == {
            "Chicago_IL/Chicago_IL.tar.gz",
            "Houston_TX/Houston_TX.tar.gz",
        }
        assert "loaded 2 model(s) before serving" in server.output
    finally:
        assert server.stop() == 0
    err = _serve_fails(["--store", str(city_store), "--load-model", "Nowhere/x.tar.gz"], {})
    assert "loading 'Nowhere/x.tar.gz' (--load-model) failed" in err and "not found" in err
    err = _serve_fails(["--store", str(city_store), "--load-models-from", str(tmp_path / "no")], {})
    assert "--load-models-from" in err


def test_sigterm_drains_then_finishes_in_flight_requests_and_closes_keep_alive(city_store):
    key = "Chicago_IL/Chicago_IL.tar.gz"
    server = Serving(
        [
            "--store",
            str(city_store),
            "--port",
            "0",
            "--drain-seconds",
            "2",
            "--graceful-timeout-seconds",
            "20",
        ]
    )
    try:
        url = server.wait_for("listening on").split("listening on ")[1]
        host, port = url.removeprefix("http://").split(":")
        idle = socket.create_connection((host, int(port)))  # a keep-alive client, between calls
        idle.sendall(f"GET /ping HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        headers = {"content-type": "text/csv", "x-amzn-sagemaker-target-model": key}
        assert httpx.post(url + "/invocations", content=ROW, headers=headers).status_code == 200

        started = threading.Event()
        result: dict[str, httpx.Response] = {}

        def slow_body():
            yield ROW[:10].encode()
            started.set()
            time.sleep(3.0)  # past the drain: the server stops accepting while this is in flight
            yield ROW[10:].encode()

        sender = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(url + "/invocations", content=slow_body(), headers=headers, timeout=30)
            )
        )
        sender.start()
        assert started.wait(10)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        ready = httpx.get(url + "/v2/health/ready")  # draining: still answering, not ready
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        assert httpx.get(url + "/v2/health/live").status_code == 200
        sender.join(30)
        assert result["r"].status_code == 200 and "score" in result["r"].text
        idle.settimeout(30)
        assert idle.recv(4096) == b""  # closed cleanly by the server, not reset
        idle.close()
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
    assert "draining: readiness is false" in server.output and "Traceback" not in server.output


def test_a_store_that_is_down_is_one_warning_a_model_naming_it():
    closed = ["--s3-endpoint-url", f"http://127.0.0.1:{_free_port()}", "--s3-max-attempts", "1"]
    server = Serving(
        ["--store", "s3://models/", *closed, "--port", "0", "--no-store-check"], env=CREDENTIALS
    )
    try:
        url = server.wait_for("listening on").split("listening on ")[1]
        for _ in range(3):
            r = httpx.post(
                url + "/invocations",
                content=ROW,
                headers={"content-type": "text/csv", "x-amzn-sagemaker-target-model": "a.tar.gz"},
            )
            assert r.status_code == 503 and "s3://models/ is unavailable" in r.text
        line = server.wait_for("model a.tar.gz failed to load (503)")
        assert "WARNING" in line and "is unavailable" in line
    finally:
        assert server.stop() == 0
    assert server.output.count("failed to load") == 1  # rate-limited per model
