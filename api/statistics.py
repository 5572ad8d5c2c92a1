"""The stages' statistics records as the API shows them, and as a job keeps its last
input statistics in the database.

The records are the stages' own: `ingest.stats.SourceStatistics` (the publisher's
stream), `encoder.statistics.RenditionStatistics` (each rendition, as encoded) and
`packager.hls.PublishedRendition` (each rendition, as published); the response models
(`api.models`) give them the API's names.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from encoder.statistics import RenditionStatistics
from ingest.session import TransportStatistics
from ingest.stats import SourceStatistics
from packager.hls import PublishedRendition

from .models import InputFigures, RenditionFigures, Statistics, TransportFigures

if TYPE_CHECKING:
    from .pipeline import JobPipeline  # the pipeline imports this module


@dataclass(frozen=True)
class OutputStatistics:
    """One rendition of a running pipeline: as encoded, and as published (None before
    its writer knows it)."""

    encoded: RenditionStatistics
    published: PublishedRendition | None


def source_view(statistics: SourceStatistics) -> Statistics:
    """The reference's `statistics` object."""
    return Statistics(**dataclasses.asdict(statistics))


def input_views(pipeline: JobPipeline | None) -> dict[str, Any]:
    """`stats`' `inputs`, `fill` and `fillFrames` of a running live (none without one)."""
    if pipeline is None:
        return {}
    inputs = []
    for state in pipeline.input_states():
        source = pipeline.inputs[state.name].decoder.stats()
        inputs.append(
            InputFigures(
                name=state.name,
                active=state.active,
                connected=state.connected,
                sending=state.sending,
                last_media_seconds_ago=state.last_media_seconds_ago,
                width=source.width,
                height=source.height,
                framerate=source.framerate,
            )
        )
    return {
        "inputs": inputs,
        "fill": pipeline.program.filling,
        "fill_frames": pipeline.program.fill_frames,
    }


def transport_view(transport: TransportStatistics | None) -> TransportFigures | None:
    """An SRT connection's own figures, as `stats` shows them."""
    return None if transport is None else TransportFigures(**dataclasses.asdict(transport))


def output_view(output: OutputStatistics) -> RenditionFigures:
    """A rendition's row in `stats` and in the events socket's `outputs`."""
    published = dataclasses.asdict(output.published) if output.published else {}
    return RenditionFigures(**dataclasses.asdict(output.encoded), **published)


def to_record(statistics: SourceStatistics) -> str:
    """The job's `statistics` column: the record's fields, as JSON."""
    return json.dumps(dataclasses.asdict(statistics))


def from_record(text: str | None) -> SourceStatistics:
    """The job's last recorded input statistics (all zeros before any media). Rows
    written before the records were typed hold the API's names: both are read."""
    if not text:
        return SourceStatistics()
    stored = json.loads(text)
    values = {}
    for name, field in Statistics.model_fields.items():
        for key in (name, field.alias):
            if key in stored:
                values[name] = stored[key]
                break
    return SourceStatistics(**values)
