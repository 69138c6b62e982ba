"""The form parser (web/forms.py) is parse_qsl with strict parsing, only faster: same pairs, same errors."""

import random
from urllib.parse import parse_qsl

import pytest

from flask_oauth_hsm.errors import InvalidRequestError
from flask_oauth_hsm.web.forms import MAX_FIELDS, parse_form_pairs, parse_params

FRAGMENTS = ["a", "b", "=", "&", "%", "+", "%20", "%2", "%zz", "%C3%A9", "%FF", "%e9", "é", " ", "", ".", "~", "%00", "\x00"]


def _outcome(parse, text):
    try:
        return parse(text)
    except ValueError:  # UnicodeDecodeError included
        return "ValueError"


def _reference(text):
    return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict", max_num_fields=MAX_FIELDS)


def test_same_result_as_strict_parse_qsl_on_random_hostile_bodies():
    rnd = random.Random(1)
    for _ in range(20_000):
        text = "".join(rnd.choice(FRAGMENTS) for _ in range(rnd.randint(0, 12)))
        assert _outcome(parse_form_pairs, text) == _outcome(_reference, text), text


@pytest.mark.parametrize("fields", [MAX_FIELDS, MAX_FIELDS + 1])
def test_the_field_limit_is_parse_qsl_s(fields):
    text = "&".join(f"f{i}=v" for i in range(fields))
    assert _outcome(parse_form_pairs, text) == _outcome(_reference, text)


@pytest.mark.parametrize("text", ["a", "a=1&&b=2", "a=%FF", "a=1&a=2", "&", "=" * 3 + "&b"])
def test_malformed_or_repeated_parameters_are_invalid_requests(text):
    with pytest.raises(InvalidRequestError):
        parse_params(text)


def test_plus_and_escapes_decode_like_a_form():
    assert parse_params("scope=a+b%20c&x=%C3%A9&empty=") == {"scope": "a b c", "x": "é"}
