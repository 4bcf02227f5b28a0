from __future__ import annotations

import pytest

from mmhost.codecs import media
from mmhost.errors import NotAcceptable, UnsupportedMediaType


@pytest.mark.parametrize(
    "content_type,expected",
    [
        ("text/csv", media.CSV),
        ("application/json", media.JSON),
        ("application/jsonlines", media.JSONLINES),
        ("application/x-npy", media.NPY),
        ("TEXT/CSV", media.CSV),
    ],
)
def test_request_type_for_each_supported_type(content_type, expected):
    assert media.request_type(content_type, b"") == expected


@pytest.mark.parametrize(
    "content_type,expected",
    [
        ("text/csv; charset=utf-8", media.CSV),
        ("text/csv;label_size=0", media.CSV),
        ("application/json; verbose=true", media.JSON),
    ],
)
def test_request_type_ignores_parameters(content_type, expected):
    assert media.request_type(content_type, b"") == expected


@pytest.mark.parametrize(
    "alias,expected",
    [
        ("application/x-jsonlines", media.JSONLINES),
        ("application/jsonl", media.JSONLINES),
        ("application/x-ndjson", media.JSONLINES),
        ("application/ndjson", media.JSONLINES),
        ("application/csv", media.CSV),
        ("text/x-csv", media.CSV),
        ("application/npy", media.NPY),
        ("application/x-jsonlines; charset=utf-8", media.JSONLINES),
    ],
)
def test_request_type_resolves_aliases(alias, expected):
    assert media.request_type(alias, b"") == expected


@pytest.mark.parametrize(
    "body,expected",
    [
        (b'{"instances": [[1, 2]]}', media.JSON),
        (b"[[1, 2]]", media.JSON),
        (b"  \n\t[1, 2]", media.JSON),
        (b"1,2,3\n4,5,6\n", media.CSV),
        (b"", media.CSV),
    ],
)
def test_request_type_sniffs_a_body_without_content_type(body, expected):
    assert media.request_type(None, body) == expected
    assert media.request_type("", body) == expected


@pytest.mark.parametrize("content_type", ["image/png", "application/xml", "text/plain"])
def test_request_type_refuses_unsupported_types_with_415(content_type):
    with pytest.raises(UnsupportedMediaType) as info:
        media.request_type(content_type, b"[1]")
    assert info.value.status == 415
    assert content_type in info.value.message
    assert "text/csv" in info.value.message


@pytest.mark.parametrize("accept", [None, "", "   ", "*/*", "application/*"])
def test_response_type_defaults_to_json(accept):
    assert media.response_type(accept) == media.JSON


@pytest.mark.parametrize(
    "accept,expected",
    [
        ("text/csv", media.CSV),
        ("application/jsonlines", media.JSONLINES),
        ("application/x-jsonlines", media.JSONLINES),
        ("application/json; charset=utf-8", media.JSON),
    ],
)
def test_response_type_for_each_supported_type(accept, expected):
    assert media.response_type(accept) == expected


@pytest.mark.parametrize(
    "accept,expected",
    [
        ("text/csv;q=0.5, application/jsonlines", media.JSONLINES),
        ("text/csv; q=0.9, application/json; q=0.1", media.CSV),
        ("application/json;q=0.2, text/csv;q=0.8, application/jsonlines;q=0.5", media.CSV),
        ("text/csv, application/json", media.CSV),  # equal q: the first listed wins
    ],
)
def test_response_type_orders_by_q_value(accept, expected):
    assert media.response_type(accept) == expected


def test_response_type_text_wildcard_is_csv():
    assert media.response_type("text/*") == media.CSV


def test_response_type_skips_unsupported_types_for_a_later_supported_one():
    assert media.response_type("application/xml, text/csv;q=0.1") == media.CSV
    assert media.response_type("image/png, */*;q=0.1") == media.JSON


def test_response_type_skips_a_type_with_q_zero():
    assert media.response_type("text/csv;q=0, application/jsonlines;q=0.1") == media.JSONLINES


def test_response_type_treats_a_bad_q_value_as_zero():
    assert media.response_type("text/csv;q=abc, application/jsonlines;q=0.1") == media.JSONLINES


@pytest.mark.parametrize("accept", ["application/xml", "image/png", "text/csv;q=0", "*/*;q=0"])
def test_response_type_refuses_unacceptable_with_406(accept):
    with pytest.raises(NotAcceptable) as info:
        media.response_type(accept)
    assert info.value.status == 406
    assert accept in info.value.message
    assert "application/json" in info.value.message
