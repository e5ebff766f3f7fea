import pytest

from lanepaint.data.vocab import (
    CaptionError,
    LaneAttributes,
    parse_caption,
    validate_filter_value,
)


def test_caption_round_trip():
    attrs = LaneAttributes("double", "yellow", "solid")
    assert attrs.caption == "road with double yellow solid lane markings"
    assert parse_caption(attrs.caption) == attrs
    assert parse_caption("Road with single white dashed lane markings.") == LaneAttributes(
        "single", "white", "dashed"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "road with lane markings",
        "road with triple white solid lane markings",
        "road with single purple solid lane markings",
        "a road with single white solid lane markings and a car",
    ],
)
def test_parse_caption_rejects(text):
    with pytest.raises(CaptionError):
        parse_caption(text)


def test_invalid_attribute_value():
    with pytest.raises(ValueError, match="color"):
        LaneAttributes("single", "green", "solid")


def test_combine_sides():
    yellow_solid = LaneAttributes("single", "yellow", "solid")
    white_dashed = LaneAttributes("single", "white", "dashed")
    both = LaneAttributes.combine(yellow_solid, white_dashed)
    assert both.caption == "road with single mixed mixed lane markings"
    assert LaneAttributes.combine(white_dashed, white_dashed) == white_dashed
    double = LaneAttributes("double", "yellow", "solid")
    assert LaneAttributes.combine(double, white_dashed).count == "double"
    assert LaneAttributes.combine(LaneAttributes(), white_dashed).count == "unknown"


def test_matches_and_clear():
    attrs = LaneAttributes("single", "white", "unknown")
    assert attrs.matches(color="white")
    assert not attrs.matches(count="double")
    assert not attrs.is_clear
    assert validate_filter_value("count", " ANY ") == "any"
    with pytest.raises(ValueError, match="--pattern"):
        validate_filter_value("pattern", "zigzag")
