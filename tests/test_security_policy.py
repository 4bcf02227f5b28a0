"""IAM policy evaluation: the StringLike matcher against a reference, Deny over Allow over random
statement sets, conditions, and refusing what can't be evaluated faithfully."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmhost.security.policy import Decision, Policy, PolicyError, evaluate, string_like

ENDPOINT = "arn:aws:sagemaker:us-east-1:111122223333:endpoint/mmhost"
INVOKE = "sagemaker:InvokeEndpoint"
ALPHABET = "ab/_.*?"  # small, so patterns and values collide often
PROPERTY = settings(max_examples=400, deadline=None, derandomize=True)


def reference_like(value: str, pattern: str) -> bool:
    """fnmatch-style with only ``*`` (any run, ``/`` included) and ``?`` (one character):
    a plain dynamic program, no regular expressions."""
    n, m = len(value), len(pattern)
    hit = [[False] * (n + 1) for _ in range(m + 1)]  # hit[i][j]: pattern[:i] matches value[:j]
    hit[0][0] = True
    for i in range(1, m + 1):
        p = pattern[i - 1]
        for j in range(n + 1):
            if p == "*":
                hit[i][j] = hit[i - 1][j] or (j > 0 and hit[i][j - 1])
            elif j > 0 and (p == "?" or p == value[j - 1]):
                hit[i][j] = hit[i - 1][j - 1]
    return hit[m][n]


@PROPERTY
@given(st.text(ALPHABET, max_size=12), st.text(ALPHABET, max_size=8))
def test_string_like_agrees_with_the_reference(value, pattern):
    assert string_like(value, pattern) == reference_like(value, pattern)


@pytest.mark.parametrize(
    "value, pattern, want",
    [
        ("NewYork_NY/NewYork_NY.tar.gz", "NewYork_NY/*", True),
        ("Chicago_IL/Chicago_IL.tar.gz", "NewYork_NY/*", False),
        ("company_a/x/y.tar.gz", "company_a/*", True),  # * crosses /
        ("newyork_ny/a.tar.gz", "NewYork_NY/*", False),  # case-sensitive
        ("m1.tar.gz", "m?.tar.gz", True),
        ("m10.tar.gz", "m?.tar.gz", False),
        ("a+b(c)[d].tar.gz", "a+b(c)[d]*", True),  # regex characters are literals
        ("x\ny", "x*y", True),
    ],
)
def test_string_like_examples(value, pattern, want):
    assert string_like(value, pattern) is want


def _statement(effect: str, pattern: str) -> dict:
    return {
        "Effect": effect,
        "Action": INVOKE,
        "Resource": "*",
        "Condition": {"StringLike": {"sagemaker:TargetModel": pattern}},
    }


@PROPERTY
@given(
    st.lists(st.tuples(st.sampled_from(["Allow", "Deny"]), st.text(ALPHABET, max_size=6))),
    st.text(ALPHABET, max_size=8),
)
def test_explicit_deny_wins_and_nothing_matching_is_a_deny(statements, target):
    policy = Policy.parse({"Statement": [_statement(e, p) for e, p in statements]})
    got = evaluate((policy,), INVOKE, ENDPOINT, {"sagemaker:targetmodel": target})
    matching = {e for e, p in statements if reference_like(target, p)}
    if "Deny" in matching:
        assert got is Decision.EXPLICIT_DENY
    elif "Allow" in matching:
        assert got is Decision.ALLOW
    else:
        assert got is Decision.IMPLICIT_DENY


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(["Allow", "Deny"]), st.text(ALPHABET, max_size=6)), max_size=4
    ),
    st.text(ALPHABET, max_size=8),
)
def test_policies_split_across_documents_evaluate_as_one(statements, target):
    together = Policy.parse({"Statement": [_statement(e, p) for e, p in statements]})
    apart = tuple(Policy.parse({"Statement": _statement(e, p)}) for e, p in statements)
    context = {"sagemaker:targetmodel": target}
    assert evaluate(apart, INVOKE, ENDPOINT, context) is evaluate(
        (together,), INVOKE, ENDPOINT, context
    )


def _decide(statement: dict, target: str | None = "a/m.tar.gz", action: str = INVOKE) -> Decision:
    context = {} if target is None else {"sagemaker:targetmodel": target}
    return evaluate((Policy.parse({"Statement": [statement]}),), action, ENDPOINT, context)


def test_actions_match_case_insensitively_with_wildcards():
    allow = {"Effect": "Allow", "Action": ["sagemaker:invoke*"], "Resource": "*"}
    assert _decide(allow) is Decision.ALLOW
    assert _decide(allow, action="mmhost:LoadModel") is Decision.IMPLICIT_DENY
    everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    assert _decide(everything, action="mmhost:UnloadModel") is Decision.ALLOW


def test_resources_match_endpoint_arn_patterns():
    mine = {"Effect": "Allow", "Action": INVOKE, "Resource": "arn:aws:sagemaker:*:*:endpoint/mm*"}
    other = {"Effect": "Allow", "Action": INVOKE, "Resource": ENDPOINT.replace("mmhost", "other")}
    assert _decide(mine) is Decision.ALLOW
    assert _decide(other) is Decision.IMPLICIT_DENY


def test_not_action_and_not_resource():
    not_load = {"Effect": "Allow", "NotAction": "mmhost:*", "Resource": "*"}
    assert _decide(not_load) is Decision.ALLOW
    assert _decide(not_load, action="mmhost:LoadModel") is Decision.IMPLICIT_DENY
    elsewhere = {"Effect": "Deny", "Action": "*", "NotResource": ENDPOINT}
    assert _decide(elsewhere) is Decision.IMPLICIT_DENY  # this endpoint is the exception


def test_condition_operators():
    def with_condition(cond: dict) -> dict:
        return {"Effect": "Allow", "Action": INVOKE, "Resource": "*", "Condition": cond}

    key = "sagemaker:TargetModel"
    assert _decide(with_condition({"StringEquals": {key: "a/m.tar.gz"}})) is Decision.ALLOW
    assert _decide(with_condition({"StringEquals": {key: "a/*"}})) is Decision.IMPLICIT_DENY
    assert _decide(with_condition({"StringNotEquals": {key: "b"}})) is Decision.ALLOW
    assert _decide(with_condition({"StringNotLike": {key: ["a/*", "b/*"]}})) is (
        Decision.IMPLICIT_DENY
    )
    # several values: any; several keys or operators: all
    both = {"StringLike": {key: ["x/*", "a/*"]}, "StringNotLike": {key: "*.tar"}}
    assert _decide(with_condition(both)) is Decision.ALLOW
    # the condition key is case-insensitive, its values are not
    assert _decide(with_condition({"StringLike": {"SageMaker:targetModel": "a/*"}})) is (
        Decision.ALLOW
    )
    # a key absent from the request (a listing has no target): false, negations true
    assert _decide(with_condition({"StringLike": {key: "*"}}), None) is Decision.IMPLICIT_DENY
    assert _decide(with_condition({"StringNotLike": {key: "a/*"}}), None) is Decision.ALLOW
    assert _decide(with_condition({"StringLikeIfExists": {key: "a/*"}}), None) is Decision.ALLOW


@pytest.mark.parametrize(
    "doc, message",
    [
        ([], "JSON object"),
        ({"Version": "2012-10-17"}, "no Statement"),
        ({"Statement": [{"Effect": "allow", "Action": "*", "Resource": "*"}]}, "Effect"),
        ({"Statement": [{"Effect": "Allow", "Resource": "*"}]}, "exactly one of Action"),
        (
            {"Statement": [{"Effect": "Allow", "Action": "*", "NotAction": "x", "Resource": "*"}]},
            "exactly one of Action",
        ),
        ({"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}, "non-empty list"),
        (
            {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}]},
            "unsupported key(s) ['Principal']",
        ),
        (
            {
                "Statement": {
                    "Effect": "Allow",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
                }
            },
            "operator 'IpAddress' is not supported",
        ),
    ],
)
def test_policies_mmhost_cannot_evaluate_are_refused_with_the_place(doc, message):
    with pytest.raises(PolicyError) as info:
        Policy.parse(doc, "p")
    assert message in str(info.value)
    assert str(info.value).startswith("p")
