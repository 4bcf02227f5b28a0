"""JSON documents in request bodies: parsed once, the same way, with a clear 400 on failure."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from mmhost.errors import ValidationError

# a \uD800-\uDFFF escape: JSON may spell half of a UTF-16 pair alone, which no UTF-8 response
# (an error message, a model name listed back) can carry
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(data: bytes | str, what: str) -> Any:
    """``data`` as JSON; ``what`` names it in the error ("the body", "line 3")."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from None
    except ValueError:  # Python's guard against quadratic int parsing, not a JSON error
        raise ValidationError(
            f"{what} holds an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply") from None
    escaped = (
        _SURROGATE_ESCAPE_BYTES.search(data)
        if isinstance(data, bytes)
        else _SURROGATE_ESCAPE.search(data)
    )
    if escaped and _holds_a_lone_surrogate(doc):
        raise ValidationError(f"{what} holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
    return doc


def _holds_a_lone_surrogate(doc: Any) -> bool:
    """Whether any string (key or value) in ``doc`` holds a code point in U+D800-U+DFFF (a
    well-formed pair was joined into one code point by the parser)."""
    stack = [doc]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return True
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
    return False
