"""Declared shapes and counts against the limits and the bytes present
(``mmhost/codecs/limits.py``), before anything is allocated or iterated."""

from __future__ import annotations

import re

import pytest

from mmhost.codecs.limits import DecodeLimits
from mmhost.errors import ValidationError
from mmhost.settings import Settings

LIMITS = DecodeLimits(max_rows=10, max_values=100)


def test_a_shape_within_the_limits_is_its_value_count():
    assert LIMITS.shape([10, 10], "x", have=100, per=1) == 100
    assert LIMITS.shape([0, 5], "x", have=0, per=4) == 0


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ([11, 1], "11 rows in x (shape [11, 1]); the limit is 10"),
        ([2**62, 0], f"{2**62} rows"),  # zero-sized, yet listing its rows would never end
        ([0, 2**62], f"has a dimension of {2**62}"),
        ([1, 101], "has a dimension of 101"),
        ([10, 11], "is 110 values; the limit is 100"),
    ],
)
def test_shapes_past_the_limits_are_refused(shape, why):
    with pytest.raises(ValidationError, match=re.escape(why)):
        LIMITS.shape(shape, "x", have=10**9, per=1)


def test_a_shape_the_body_cannot_hold_is_refused():
    with pytest.raises(ValidationError, match=r"needs at least 40 bytes; the body holds 39"):
        LIMITS.shape([10], "x", have=39, per=4)


def test_the_limits_are_the_settings_ones():
    s = Settings(max_rows_per_request=7, max_request_values=70)
    assert DecodeLimits.of(s) == DecodeLimits(7, 70)
