"""The one text type: what a read model, a JSON document and a terminal can all take."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, ValidationError

from domain.errors import InvalidParameter
from domain.text import TEXT_PATTERN, FilterText, Label, Message, Name, check_storable


class Named(BaseModel):
    name: Name
    label: Label | None = None
    message: Message = ""
    filter: FilterText | None = None


@pytest.mark.parametrize(
    "value",
    [
        "\x00",
        "a\x00b",
        "tab\there",
        "line\nbreak",
        "\r",
        "\x1b[31m",
        "\x7f",
        "\x85",
        "\x9f",
        "\u2028",
        "\u2029",
        "\ufdd0",
        "\ufffe",
        "\uffff",
        "lone \ud800 surrogate",
    ],
)
def test_a_name_with_a_character_no_read_model_stores_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Named(name=value)
    (error,) = refused.value.errors()
    assert error["loc"] == ("name",)
    assert "U+" in error["msg"] or error["type"] == "string_unicode"


@pytest.mark.parametrize(
    "value", ["web-1", "Ünïcødé ✓", "名前", "emoji 😀", "a b", "quote\"s and 'apostrophes'"]
)
def test_ordinary_names_of_any_script_are_kept_as_given(value: str) -> None:
    assert Named(name=value).name == value


def test_every_text_type_is_bounded() -> None:
    Named(name="x" * 255, label="y" * 64, message="z" * 500, filter="f" * 100)
    for field, length in (("name", 256), ("label", 65), ("message", 501), ("filter", 101)):
        with pytest.raises(ValidationError) as refused:
            Named(**{"name": "n", field: "x" * length})
        assert refused.value.errors()[0]["type"] == "string_too_long"
    with pytest.raises(ValidationError):
        Named(name="")


def test_the_documented_pattern_is_the_rule_the_validator_applies() -> None:
    schema = Named.model_json_schema()["properties"]["name"]
    assert schema["pattern"] == TEXT_PATTERN and schema["maxLength"] == 255
    documented = re.compile(TEXT_PATTERN.replace("$", r"\Z"))
    for code in range(0x0, 0x3000):
        character = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue  # not in the pattern (JSON Schema tools cannot hold them); refused above
        accepted = True
        try:
            Named(name=character)
        except ValidationError:
            accepted = False
        assert accepted == bool(documented.match(character)), hex(code)


def test_the_domain_guard_names_the_field() -> None:
    with pytest.raises(InvalidParameter) as refused:
        check_storable("pool\x00", "name")
    assert refused.value.field == "name"
    check_storable("pool-1", "name")
