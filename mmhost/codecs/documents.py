"""JSON documents in request bodies: parsed once, the same way, with a clear 400 on failure."""

from __future__ import annotations

import json
from typing import Any

from mmhost.errors import ValidationError


def parse_json(data: bytes | str, what: str) -> Any:
    """``data`` as JSON; ``what`` names it in the error ("the body", "line 3")."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply") from None
