"""IAM identity policies, as users write them, and their evaluation.

A policy is a document ``{"Version": ..., "Statement": [...]}`` (one statement may stand alone,
not in a list). A statement has ``Effect`` (Allow/Deny), ``Action`` or ``NotAction``,
``Resource`` or ``NotResource`` (a string or a list; ``*`` and ``?`` wildcards) and an optional
``Condition`` ``{operator: {key: value or [values]}}``. Semantics, as IAM's:

- actions match case-insensitively, resources and condition values case-sensitively;
- in ``StringLike``/``StringNotLike``, ``*`` matches any run of characters (``/`` included) and
  ``?`` exactly one; the ``Equals`` operators compare exactly;
- several values for one key: any of them (OR); several keys or operators: all (AND);
- a key absent from the request makes a condition false, and its negation (``StringNot*``)
  true; the ``...IfExists`` forms are true when the key is absent;
- an explicit Deny in any statement wins; otherwise an Allow must match; nothing matching is a
  deny.

Anything else in a statement (``Principal``, other operators, condition keys other than
``sagemaker:TargetModel``, policy variables such as ``${aws:username}``) is refused when the
policy is read, with the place it was found, rather than silently ignored: a Deny on a key
mmhost never sets would never match, and so fail open.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

_OPERATORS = ("StringLike", "StringNotLike", "StringEquals", "StringNotEquals")
# the condition keys a request carries here (lower-cased: keys are case-insensitive)
CONDITION_KEYS = ("sagemaker:targetmodel",)
_VARIABLE = "${"
_STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}


class PolicyError(ValueError):
    """A policy document mmhost can't evaluate faithfully; the message says where and why."""


class Decision(enum.Enum):
    ALLOW = "allow"
    IMPLICIT_DENY = "implicit deny"
    EXPLICIT_DENY = "explicit deny"


@lru_cache(maxsize=4096)
def _pattern(glob: str) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters (``/`` included), ``?`` exactly one."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile("".join(parts), re.DOTALL)


def string_like(value: str, glob: str) -> bool:
    return _pattern(glob).fullmatch(value) is not None


@dataclass(frozen=True)
class Condition:
    operator: str  # one of _OPERATORS
    if_exists: bool
    key: str  # lower-cased: condition keys are case-insensitive
    values: tuple[str, ...]

    def holds(self, context: Mapping[str, str]) -> bool:
        value = context.get(self.key)
        negated = "Not" in self.operator
        if value is None:
            return self.if_exists or negated
        if self.operator.endswith("Like"):
            hit = any(string_like(value, v) for v in self.values)
        else:
            hit = value in self.values
        return not hit if negated else hit


@dataclass(frozen=True)
class Statement:
    allow: bool
    actions: tuple[str, ...]  # lower-cased globs
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[Condition, ...]

    def matches(self, action: str, resource: str, context: Mapping[str, str]) -> bool:
        action = action.lower()
        if any(string_like(action, a) for a in self.actions) == self.not_action:
            return False
        if any(string_like(resource, r) for r in self.resources) == self.not_resource:
            return False
        return all(c.holds(context) for c in self.conditions)


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    @classmethod
    def parse(cls, doc: object, where: str = "policy") -> Policy:
        if not isinstance(doc, dict):
            raise PolicyError(f"{where}: a policy is a JSON object with a Statement")
        unknown = set(doc) - {"Version", "Id", "Statement"}
        if unknown:
            raise PolicyError(f"{where}: unknown key(s) {sorted(unknown)}")
        if "Statement" not in doc:
            raise PolicyError(f"{where}: no Statement")
        raw = doc["Statement"]
        items = raw if isinstance(raw, list) else [raw]
        return cls(tuple(_statement(s, f"{where}.Statement[{i}]") for i, s in enumerate(items)))


def evaluate(
    policies: tuple[Policy, ...], action: str, resource: str, context: Mapping[str, str]
) -> Decision:
    allowed = False
    for policy in policies:
        for s in policy.statements:
            if s.matches(action, resource, context):
                if not s.allow:
                    return Decision.EXPLICIT_DENY
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def _statement(s: object, where: str) -> Statement:
    if not isinstance(s, dict):
        raise PolicyError(f"{where}: a statement is a JSON object")
    unknown = set(s) - _STATEMENT_KEYS
    if unknown:
        raise PolicyError(
            f"{where}: unsupported key(s) {sorted(unknown)} (identity policies take "
            f"{sorted(_STATEMENT_KEYS)})"
        )
    if s.get("Effect") not in ("Allow", "Deny"):
        raise PolicyError(f"{where}: Effect must be 'Allow' or 'Deny', not {s.get('Effect')!r}")
    actions, not_action = _one_of(s, "Action", "NotAction", where)
    resources, not_resource = _one_of(s, "Resource", "NotResource", where)
    _no_variables(resources, f"{where}.{'NotResource' if not_resource else 'Resource'}")
    return Statement(
        allow=s["Effect"] == "Allow",
        actions=tuple(a.lower() for a in actions),
        not_action=not_action,
        resources=resources,
        not_resource=not_resource,
        conditions=_conditions(s.get("Condition", {}), f"{where}.Condition"),
    )


def _one_of(
    s: dict[str, object], key: str, not_key: str, where: str
) -> tuple[tuple[str, ...], bool]:
    if (key in s) == (not_key in s):
        raise PolicyError(f"{where}: give exactly one of {key} and {not_key}")
    name = key if key in s else not_key
    return _strings(s[name], f"{where}.{name}"), name == not_key


def _strings(value: object, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        raise PolicyError(f"{where}: expected a string or a non-empty list of strings")
    return tuple(items)


def _conditions(doc: object, where: str) -> tuple[Condition, ...]:
    if not isinstance(doc, dict):
        raise PolicyError(f"{where}: expected an object {{operator: {{key: values}}}}")
    out = []
    for op, block in doc.items():
        base = op.removesuffix("IfExists")
        if base not in _OPERATORS:
            raise PolicyError(
                f"{where}: operator {op!r} is not supported (supported: {', '.join(_OPERATORS)}, "
                "each also with IfExists)"
            )
        if not isinstance(block, dict) or not block:
            raise PolicyError(f"{where}.{op}: expected an object {{key: value or [values]}}")
        for key, values in block.items():
            if not isinstance(key, str) or key.lower() not in CONDITION_KEYS:
                raise PolicyError(
                    f"{where}.{op}: condition key {key!r} is not one mmhost sets (supported: "
                    "sagemaker:TargetModel); a condition on it could never match"
                )
            vals = _strings(values, f"{where}.{op}.{key}")
            _no_variables(vals, f"{where}.{op}.{key}")
            out.append(Condition(base, op != base, key.lower(), vals))
    return tuple(out)


def _no_variables(values: tuple[str, ...], where: str) -> None:
    for v in values:
        if _VARIABLE in v:
            raise PolicyError(
                f"{where}: policy variables ({v!r}) are not supported; write the value out"
            )
