"""What a body may declare: rows and values, checked against the limits and against the bytes
really present *before* anything is allocated or iterated.

A declared shape or count is a claim; ``[4611686018427387904, 0]`` holds no values yet a loop
over its rows never ends. Every codec asks here first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmhost.errors import ValidationError
from mmhost.settings import Settings


@dataclass(frozen=True)
class DecodeLimits:
    """The request limits a codec enforces (``Settings.max_rows_per_request`` and
    ``Settings.max_request_values``; defaults as there)."""

    max_rows: int = 100_000
    max_values: int = 50_000_000

    @classmethod
    def of(cls, settings: Settings) -> DecodeLimits:
        return cls(settings.max_rows_per_request, settings.max_request_values)

    def rows(self, n: int, what: str = "the request") -> None:
        """Refuse ``n`` rows past the row limit."""
        if n > self.max_rows:
            raise ValidationError(f"{n} rows in {what}; the limit is {self.max_rows}")

    def shape(self, shape: list[int] | tuple[int, ...], what: str, have: int, per: int) -> int:
        """The value count of a declared ``shape``, refused when its rows, any dimension or its
        values pass the limits, or when its values cannot fit in the ``have`` bytes present at
        at least ``per`` bytes a value. Zero-sized shapes are checked too: a dimension is never
        trusted because another one is 0."""
        if shape:
            self.rows(shape[0], f"{what} (shape {_shown(shape)})")
        for d in shape:
            if d > self.max_values:
                raise ValidationError(
                    f"{what}: shape {_shown(shape)} has a dimension of {d}; the limit is "
                    f"{self.max_values} values"
                )
        n = math.prod(shape)
        if n > self.max_values:
            raise ValidationError(
                f"{what}: shape {_shown(shape)} is {n} values; the limit is {self.max_values}"
            )
        if n * per > have:
            raise ValidationError(
                f"{what}: shape {_shown(shape)} needs at least {n * per} bytes; the body holds "
                f"{have}"
            )
        return n


def _shown(shape: list[int] | tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


DEFAULT = DecodeLimits()
