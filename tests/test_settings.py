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
