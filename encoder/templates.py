"""Job templates: the encoding ladders a live job can use, loaded from templates.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATES_FILE = Path(__file__).with_name("templates.json")


class TemplateNotFound(KeyError):
    """No job template has this id."""


@dataclass(frozen=True)
class RenditionSpec:
    name: str  # "720p"; "source" for passthrough
    height: int | None  # target height; None = the source's
    video_bitrate_bps: int | None  # None = passthrough
    profile: str | None  # x264 profile ("high", "main")


@dataclass(frozen=True)
class JobTemplate:
    id: int
    name: str
    template_type: str
    category: str
    description: str
    passthrough: bool
    segment_seconds: float
    gop_seconds: float
    x264_preset: str | None
    audio_bitrate_bps: int | None
    renditions: tuple[RenditionSpec, ...]
    # What a live of this template costs the host at its largest source, in
    # template-2 720p lives (CPU time measured: the 1080p ladder 2.1, rounded to 2 so
    # that one fits a 2-core host, as bench/throughput.py shows it does; the small
    # ladder fed 1080p 0.4, most of it the decode; a copy 0.05).
    capacity_units: float = 1.0


def _parse(raw: dict[str, Any]) -> JobTemplate:
    return JobTemplate(
        id=int(raw["id"]),
        name=raw["name"],
        template_type=raw["jobTemplateType"],
        category=raw["category"],
        description=raw["description"],
        passthrough=bool(raw["passthrough"]),
        segment_seconds=float(raw["segmentSeconds"]),
        gop_seconds=float(raw["gopSeconds"]),
        x264_preset=raw["x264Preset"],
        audio_bitrate_bps=raw["audioBitrate"],
        renditions=tuple(
            RenditionSpec(r["name"], r["height"], r["videoBitrate"], r["profile"])
            for r in raw["renditions"]
        ),
        capacity_units=float(raw.get("capacityUnits", 1.0)),
    )


@cache
def all_templates() -> tuple[JobTemplate, ...]:
    with TEMPLATES_FILE.open() as f:
        data = json.load(f)
    return tuple(_parse(t) for t in data["templates"])


def get_template(template_id: int) -> JobTemplate:
    for template in all_templates():
        if template.id == template_id:
            return template
    raise TemplateNotFound(template_id)
