"""The stages' statistics records as the API shows them, and as a job keeps them."""

from __future__ import annotations

import json

from api.statistics import OutputStatistics, from_record, output_view, source_view, to_record
from encoder.statistics import RenditionStatistics
from ingest.stats import SourceStatistics
from packager.hls import PublishedRendition

MEASURED = SourceStatistics(
    width=1280,
    height=720,
    framerate=30,
    video_data_rate=2500,
    audio_data_rate=128,
    video_codec_id=7,
    audio_codec_id=10,
    audio_sample_rate=48000,
    audio_sample_size=16,
    audio_channels=2,
    stereo=True,
    encoder="obs-output module (libobs version 30.0.0)",
)


def test_source_body_has_the_references_keys_and_values() -> None:
    assert source_view(MEASURED).model_dump(by_alias=True) == {
        "width": 1280,
        "height": 720,
        "framerate": 30,
        "videoDataRate": 2500,
        "videoCodecId": 7,
        "audioDataRate": 128,
        "audioSampleRate": 48000,
        "audioSampleSize": 16,
        "audioCodecId": 10,
        "audioChannels": 2,
        "stereo": True,
        "encoder": "obs-output module (libobs version 30.0.0)",
    }


def test_a_recorded_statistics_row_reads_back() -> None:
    assert from_record(to_record(MEASURED)) == MEASURED
    assert from_record(None) == SourceStatistics()
    # Rows recorded before the records were typed hold the API's names.
    assert from_record(json.dumps(source_view(MEASURED).model_dump(by_alias=True))) == MEASURED


def test_output_body_joins_what_was_encoded_and_published() -> None:
    encoded = RenditionStatistics("720p", 1280, 720, 2_700_000, 30.0, 900, 3)
    published = PublishedRendition(15, 30.0, 3_100_000, 2_800_000, 1)
    body = output_view(OutputStatistics(encoded, published)).model_dump(by_alias=True)
    assert body == {
        "name": "720p",
        "width": 1280,
        "height": 720,
        "bitrateBps": 2_700_000,
        "fps": 30.0,
        "framesEncoded": 900,
        "droppedFrames": 3,
        "segments": 15,
        "seconds": 30.0,
        "peakBandwidth": 3_100_000,
        "averageBandwidth": 2_800_000,
        "pendingUploads": 1,
    }
    # Before the writer knows the rendition: what was encoded, nulls for the rest.
    early = output_view(OutputStatistics(encoded, None)).model_dump(by_alias=True)
    assert early == body | dict.fromkeys(
        ("segments", "seconds", "peakBandwidth", "averageBandwidth", "pendingUploads")
    )
