"""Ladder planning: pure, no media."""

from __future__ import annotations

import dataclasses

import pytest

from encoder.ladder import plan_ladder, scaled_width
from encoder.templates import get_template


def names_sizes(width: int, height: int, template_id: int = 1) -> list[tuple[str, int, int]]:
    return [
        (p.name, p.width, p.height) for p in plan_ladder(get_template(template_id), width, height)
    ]


def test_1080p_source_gets_the_whole_ladder() -> None:
    assert names_sizes(1920, 1080) == [
        ("1080p", 1920, 1080),
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]


def test_never_upscales() -> None:
    assert names_sizes(640, 360) == [("360p", 640, 360)]
    assert names_sizes(1280, 720) == [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]
    assert names_sizes(1280, 720, template_id=2)[0] == ("720p", 1280, 720)
    assert [n for n, _, _ in names_sizes(1000, 500)] == ["480p", "360p"]


def test_the_small_ladder_makes_two_rungs_of_the_small_test_source() -> None:
    # What the end-to-end tests that are not about the ladder publish (tests/support/media.py).
    assert names_sizes(320, 180, template_id=4) == [("180p", 320, 180), ("144p", 256, 144)]
    assert names_sizes(1920, 1080, template_id=4) == [("180p", 320, 180), ("144p", 256, 144)]


def test_source_below_every_rung_keeps_the_smallest_at_source_height() -> None:
    assert names_sizes(320, 180) == [("360p", 320, 180)]
    assert names_sizes(321, 181) == [("360p", 320, 180)]  # even dimensions


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1440, 1080, [(1440, 1080), (960, 720), (640, 480), (480, 360)]),  # 4:3
        (1080, 1920, [(608, 1080), (406, 720), (270, 480), (202, 360)]),  # portrait
        (1920, 800, [(1728, 720), (1152, 480), (864, 360)]),  # 2.4:1
    ],
)
def test_keeps_aspect_ratio_with_even_dimensions(
    width: int, height: int, expected: list[tuple[int, int]]
) -> None:
    sizes = [(w, h) for _, w, h in names_sizes(width, height)]
    assert sizes == expected
    for w, h in sizes:
        assert w % 2 == 0 and h % 2 == 0
        assert abs(w / h - width / height) < 0.01


def test_rate_control_is_capped_vbr() -> None:
    plans = plan_ladder(get_template(1), 1920, 1080)
    template = get_template(1)
    for plan, spec in zip(plans, template.renditions, strict=True):
        assert plan.video_bitrate_bps == spec.video_bitrate_bps
        assert plan.maxrate_bps == round(spec.video_bitrate_bps * 1.1)  # type: ignore[operator]
        assert plan.bufsize_bits == 2 * spec.video_bitrate_bps  # type: ignore[operator]
        assert plan.profile == spec.profile
        assert plan.preset == "veryfast"


def test_passthrough_is_one_source_rendition() -> None:
    (plan,) = plan_ladder(get_template(3), 1280, 720)
    assert (plan.name, plan.width, plan.height, plan.passthrough) == ("source", 1280, 720, True)
    assert plan.describe() == "source 1280x720 copy"


def test_bad_sizes_and_templates_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_ladder(get_template(1), 0, 0)
    unsized = dataclasses.replace(get_template(1), renditions=())
    with pytest.raises(ValueError):
        plan_ladder(unsized, 1920, 1080)


def test_scaled_width_rounds_to_even() -> None:
    assert scaled_width(1920, 1080, 480) == 854
    assert scaled_width(1920, 1080, 360) == 640
