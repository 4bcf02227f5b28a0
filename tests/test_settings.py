from __future__ import annotations

import pytest

from mmhost.settings import Settings, parse_bytes


@pytest.mark.parametrize(
    "text,value",
    [("512MiB", 512 * 2**20), ("2GB", 2 * 10**9), ("1048576", 2**20), ("1.5KiB", 1536), (7, 7)],
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_parse_bytes_rejects_nonsense():
    with pytest.raises(ValueError, match="byte size"):
        parse_bytes("lots")


def test_env_then_overrides():
    env = {
        "MMHOST_DEVICE_BUDGET": "1MiB",
        "MMHOST_MAX_BATCH_ROWS": "99",
        "MMHOST_REVALIDATE_SECONDS": "0.5",
        "MMHOST_STORE": "/models",
    }
    s = Settings.from_env(env, store="/other")
    assert (s.device_budget, s.max_batch_rows, s.revalidate_seconds, s.store) == (
        2**20,
        99,
        0.5,
        "/other",
    )


def test_bad_device_is_refused():
    with pytest.raises(ValueError, match="device"):
        Settings(device="tpu")


def test_cuda_needs_triton_which_is_the_cuda_extra(monkeypatch, caplog):
    import importlib.util

    import torch

    real = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a)
    )
    with caplog.at_level("WARNING", logger="mmhost"):
        assert Settings(device="auto").resolved_device() == "cpu"
    assert "pip install 'mmhost[cuda]'" in caplog.text
    with pytest.raises(
        ValueError, match=r"needs Triton for its kernels: pip install 'mmhost\[cuda\]'"
    ):
        Settings(device="cuda").resolved_device()
    monkeypatch.setattr(importlib.util, "find_spec", real)
    assert Settings(device="auto").resolved_device() == "cuda"  # both there: the GPU


def test_the_previous_names_still_work_with_a_warning(capsys):
    from mmhost.cli import _parser

    with pytest.warns(DeprecationWarning, match="load_timeout is deprecated.*load_timeout_seconds"):
        assert Settings.from_env({}, load_timeout=3.0).load_timeout_seconds == 3.0
    with pytest.warns(DeprecationWarning, match="MMHOST_HOST is deprecated.*MMHOST_BIND_ADDRESS"):
        assert Settings.from_env({"MMHOST_HOST": "0.0.0.0"}).bind_address == "0.0.0.0"
    new = Settings.from_env({"MMHOST_BIND_ADDRESS": "::1", "MMHOST_HOST": "0.0.0.0"})
    assert new.bind_address == "::1"  # the new name wins (and the old one is not read)
    args = vars(_parser().parse_args(["serve", "--host", "0.0.0.0", "--header-timeout", "2"]))
    assert args["bind_address"] == "0.0.0.0" and args["header_timeout_seconds"] == "2"
    assert (
        "--host is deprecated (mmhost 0.2 removes it): use --bind-address"
        in capsys.readouterr().err
    )
