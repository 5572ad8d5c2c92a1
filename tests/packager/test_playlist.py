"""Playlists rendered byte for byte, and parsed back with `m3u8` as a player would."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import m3u8
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.segments import VariantInfo
from packager.bandwidth import BandwidthMeter
from packager.playlist import (
    ListedSegment,
    VariantStream,
    dvr_playlist,
    event_playlist,
    live_playlist,
    master_playlist,
    target_duration_seconds,
)


def history(
    count: int, duration: float = 2.0, discontinuities: tuple[int, ...] = ()
) -> list[ListedSegment]:
    return [ListedSegment(i, duration, i in discontinuities) for i in range(count)]


def entries(first: int, last: int, duration: str = "2.000") -> str:
    return "".join(f"#EXTINF:{duration},\nseg_{i:06d}.ts\n" for i in range(first, last + 1))


def test_live_playlist_before_the_window_is_full_starts_at_zero() -> None:
    text = live_playlist(history(3))
    assert text == "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n" + entries(0, 2)
    parsed = m3u8.loads(text)
    assert [s.media_sequence for s in parsed.segments] == [0, 1, 2]
    assert parsed.playlist_type is None and not parsed.is_endlist


def test_live_playlist_slides_and_sets_media_sequence() -> None:
    text = live_playlist(history(9), window_segments=6)
    assert text == (
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
        + entries(3, 8)
    )
    parsed = m3u8.loads(text)
    assert parsed.media_sequence == 3
    assert parsed.segments.uri == [f"seg_{i:06d}.ts" for i in range(3, 9)]


@pytest.mark.parametrize("window", [1, 3, 6, 10])
def test_window_size_is_respected(window: int) -> None:
    parsed = m3u8.loads(live_playlist(history(12), window_segments=window))
    assert len(parsed.segments) == window
    assert parsed.segments[0].media_sequence == 12 - window
    assert parsed.segments[-1].uri == "seg_000011.ts"


def test_discontinuity_tag_and_sequence_after_sliding() -> None:
    segments = history(13, discontinuities=(3, 6))
    # Listed 4..9: the discontinuity of 3 slid out, the one of 6 is listed.
    text = live_playlist(segments[:10])
    assert text == (
        "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"
        "#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
        + entries(4, 5)
        + "#EXT-X-DISCONTINUITY\n"
        + entries(6, 9)
    )
    # 6 first in the window: its tag stays, nothing more slid out.
    parsed = m3u8.loads(live_playlist(segments[:12]))
    assert parsed.discontinuity_sequence == 1
    assert [s.discontinuity for s in parsed.segments] == [True] + [False] * 5
    # 6 slid out: the discontinuity sequence counts it.
    parsed = m3u8.loads(live_playlist(segments[:13]))
    assert parsed.discontinuity_sequence == 2
    assert not any(s.discontinuity for s in parsed.segments)


@pytest.mark.parametrize(
    ("duration", "target"),
    [(2.0, 2), (2.4, 2), (2.6, 3), (2.5, 3), (2.4996, 3), (2.4994, 2), (0.3, 1), (6.02, 6)],
)
def test_target_duration_is_the_rounded_written_extinf(duration: float, target: int) -> None:
    text = live_playlist([ListedSegment(0, duration)])
    assert f"#EXT-X-TARGETDURATION:{target}\n" in text
    assert m3u8.loads(text).target_duration == target


def test_target_duration_never_decreases_when_the_long_segment_slides_out() -> None:
    segments = [ListedSegment(0, 2.6)] + [ListedSegment(i, 2.0) for i in range(1, 10)]
    parsed = m3u8.loads(live_playlist(segments, window_segments=3))
    assert [s.duration for s in parsed.segments] == [2.0, 2.0, 2.0]
    assert parsed.target_duration == 3


def test_target_duration_floor_from_the_configured_segment_length() -> None:
    assert target_duration_seconds(history(2, 1.5), min_target_seconds=4) == 4
    assert "#EXT-X-TARGETDURATION:4\n" in live_playlist(history(2, 1.5), min_target_seconds=4)


def test_extinf_has_millisecond_precision() -> None:
    text = live_playlist([ListedSegment(0, 2.0213333), ListedSegment(1, 1.9996)])
    assert "#EXTINF:2.021,\nseg_000000.ts\n#EXTINF:2.000,\nseg_000001.ts\n" in text


def test_live_playlist_ended_has_endlist() -> None:
    text = live_playlist(history(8), ended=True)
    assert text.endswith("seg_000007.ts\n#EXT-X-ENDLIST\n")
    assert m3u8.loads(text).is_endlist


def test_event_playlist_lists_everything_from_zero() -> None:
    segments = history(8, discontinuities=(5,))
    text = event_playlist(segments)
    assert text == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:EVENT\n"
        + entries(0, 4)
        + "#EXT-X-DISCONTINUITY\n"
        + entries(5, 7)
    )
    parsed = m3u8.loads(text)
    assert parsed.playlist_type == "event" and not parsed.is_endlist
    assert [s.media_sequence for s in parsed.segments] == list(range(8))


def test_event_playlist_ended_keeps_event_type_and_adds_endlist() -> None:
    text = event_playlist(history(3), ended=True)
    assert text == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:EVENT\n"
        + entries(0, 2)
        + "#EXT-X-ENDLIST\n"
    )


def test_media_playlists_need_a_segment() -> None:
    with pytest.raises(ValueError):
        live_playlist([])
    with pytest.raises(ValueError):
        event_playlist([])
    with pytest.raises(ValueError):
        live_playlist(history(1), window_segments=0)


LADDER = [
    VariantInfo("360p", 640, 360, 30.0, "avc1.64001e,mp4a.40.2", 900_000),
    VariantInfo("1080p", 1920, 1080, 29.97002997, "avc1.640028,mp4a.40.2", 5_128_000),
    VariantInfo("720p", 1280, 720, 23.976, "avc1.64001f,mp4a.40.2", 2_628_000),
]


def test_master_playlist_bytes_highest_first() -> None:
    text = master_playlist(
        [
            VariantStream(LADDER[0], 1_000_123, 850_000),
            VariantStream(LADDER[1], 5_900_000, 4_900_001),
            VariantStream(LADDER[2], 2_700_000, 2_500_000),
        ]
    )
    assert text == (
        "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=5900000,AVERAGE-BANDWIDTH=4900001,RESOLUTION=1920x1080,"
        'FRAME-RATE=29.97,CODECS="avc1.640028,mp4a.40.2"\n1080p/index.m3u8\n'
        "#EXT-X-STREAM-INF:BANDWIDTH=2700000,AVERAGE-BANDWIDTH=2500000,RESOLUTION=1280x720,"
        'FRAME-RATE=23.976,CODECS="avc1.64001f,mp4a.40.2"\n720p/index.m3u8\n'
        "#EXT-X-STREAM-INF:BANDWIDTH=1000123,AVERAGE-BANDWIDTH=850000,RESOLUTION=640x360,"
        'FRAME-RATE=30,CODECS="avc1.64001e,mp4a.40.2"\n360p/index.m3u8\n'
    )


def test_master_playlist_parses_back() -> None:
    parsed = m3u8.loads(master_playlist([VariantStream(v, 1_000, 900) for v in LADDER]))
    assert parsed.is_variant and parsed.is_independent_segments
    assert [p.uri for p in parsed.playlists] == [
        "1080p/index.m3u8",
        "720p/index.m3u8",
        "360p/index.m3u8",
    ]
    info = parsed.playlists[0].stream_info
    assert (info.bandwidth, info.average_bandwidth) == (1_000, 900)
    assert info.resolution == (1920, 1080)
    assert info.frame_rate == 29.97
    assert info.codecs == "avc1.640028,mp4a.40.2"


def test_master_uses_template_bitrate_before_measurement() -> None:
    text = master_playlist([VariantStream(LADDER[2])])
    assert "#EXT-X-STREAM-INF:BANDWIDTH=2628000,RESOLUTION=1280x720," in text
    assert "AVERAGE-BANDWIDTH" not in text


def test_master_omits_unknown_frame_rate_and_resolution() -> None:
    audio = VariantInfo("audio", 0, 0, None, "mp4a.40.2", 128_000)
    text = master_playlist([VariantStream(audio, 130_000, 128_500)])
    assert '#EXT-X-STREAM-INF:BANDWIDTH=130000,AVERAGE-BANDWIDTH=128500,CODECS="mp4a.40.2"\n' in (
        text
    )


def test_bandwidth_meter_peak_and_average() -> None:
    meter = BandwidthMeter(segment_seconds=2.0)
    assert meter.peak_bps is None and meter.average_bps is None
    meter.add(250_000, 2.0)  # 1 Mb/s
    meter.add(375_000, 2.0)  # 1.5 Mb/s
    meter.add(50_000, 0.2)  # 2 Mb/s but a short tail segment: not a peak
    assert meter.peak_bps == 1_500_000
    assert meter.average_bps == math.ceil(675_000 * 8 / 4.2)
    assert (meter.segments, meter.size_bytes) == (3, 675_000)


def test_bandwidth_meter_short_segments_only() -> None:
    meter = BandwidthMeter(segment_seconds=4.0)
    meter.add(100_000, 1.0)
    assert meter.peak_bps == 800_000 == meter.average_bps


@given(
    durations=st.lists(st.floats(min_value=0.1, max_value=12.0), min_size=1, max_size=40),
    flags=st.lists(st.booleans(), min_size=40, max_size=40),
    window=st.integers(min_value=1, max_value=8),
)
def test_live_playlist_invariants(durations: list[float], flags: list[bool], window: int) -> None:
    segments = [ListedSegment(i, d, flags[i]) for i, d in enumerate(durations)]
    parsed = m3u8.loads(live_playlist(segments, window_segments=window))
    listed = segments[-window:]
    assert [s.media_sequence for s in parsed.segments] == [s.sequence for s in listed]
    assert parsed.segments.uri == [s.uri for s in listed]
    slid = segments[: len(segments) - len(listed)]
    assert (parsed.discontinuity_sequence or 0) == sum(s.discontinuity for s in slid)
    assert [s.discontinuity for s in parsed.segments] == [s.discontinuity for s in listed]
    for seg in parsed.segments:
        assert math.floor(seg.duration + 0.5) <= parsed.target_duration
    assert parsed.target_duration == max(1, *(math.floor(round(d, 3) + 0.5) for d in durations))


def test_dvr_playlist_keeps_what_fits_in_its_window() -> None:
    segments = history(20, discontinuities=(3, 15))  # 40 s of 2 s segments
    parsed = m3u8.loads(dvr_playlist(segments, window_seconds=10))
    assert parsed.segments.uri == [f"seg_{i:06d}.ts" for i in range(15, 20)]
    assert parsed.media_sequence == 15 and parsed.discontinuity_sequence == 1
    assert parsed.playlist_type is None and not parsed.is_endlist
    whole = m3u8.loads(dvr_playlist(segments, window_seconds=7200, ended=True))
    assert len(whole.segments) == 20 and whole.is_endlist
    # a window shorter than a segment still lists the latest one
    assert len(m3u8.loads(dvr_playlist(segments, window_seconds=0.5)).segments) == 1


def test_master_can_lead_to_another_media_playlist() -> None:
    parsed = m3u8.loads(master_playlist([VariantStream(v) for v in LADDER], "event.m3u8"))
    assert parsed.playlists[0].uri == "1080p/event.m3u8"


def test_bandwidth_is_the_larger_of_ceiling_and_peak() -> None:
    assert VariantStream(LADDER[0], 1_000_000, 900_000, 1_200_000).bandwidth_bps == 1_200_000
    assert VariantStream(LADDER[0], 1_300_000, 900_000, 1_200_000).bandwidth_bps == 1_300_000
    assert VariantStream(LADDER[0], None, None, 1_200_000).bandwidth_bps == 1_200_000
    assert VariantStream(LADDER[0]).bandwidth_bps == LADDER[0].target_bitrate_bps


# -- EXT-X-PROGRAM-DATE-TIME -----------------------------------------------------------

START = datetime(2026, 11, 23, 18, 0, 0, 250_000, tzinfo=UTC)


def dated(count: int, discontinuities: tuple[int, ...] = ()) -> list[ListedSegment]:
    return [
        ListedSegment(i, 2.0, i in discontinuities, START + timedelta(seconds=2 * i + 0.5 * i))
        for i in range(count)
    ]


def dates_written(text: str) -> list[int]:
    """The media sequence numbers of the segments with EXT-X-PROGRAM-DATE-TIME."""
    parsed = m3u8.loads(text)
    return [s.media_sequence for s in parsed.segments if s.program_date_time is not None]


def test_program_date_time_on_the_first_segment_and_after_each_discontinuity() -> None:
    segments = dated(20, discontinuities=(8, 15))
    text = event_playlist(segments)
    assert dates_written(text) == [0, 8, 15]
    parsed = m3u8.loads(text)
    for segment, listed in zip(parsed.segments, segments, strict=True):
        if segment.program_date_time is not None:
            assert segment.program_date_time == listed.program_date_time
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-11-23T18:00:00.250+00:00\n#EXTINF:2.000," in text
    # The tag follows EXT-X-DISCONTINUITY, before the segment's EXTINF.
    assert "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-11-23T18:00:20.250+00:00\n" in (
        text
    )
    # Sliding windows: their own first segment, wherever it is, and the discontinuities.
    assert dates_written(live_playlist(segments[:12])) == [6, 8]
    assert dates_written(live_playlist(segments)) == [14, 15]
    assert dates_written(dvr_playlist(segments, window_seconds=9)) == [16]
    assert dates_written(dvr_playlist(segments, window_seconds=40)) == [0, 8, 15]


def test_segments_without_an_instant_write_no_date() -> None:
    text = event_playlist(history(4, discontinuities=(2,)))
    assert "PROGRAM-DATE-TIME" not in text


def _m3u8_rendering(
    listed: list[ListedSegment], target: int, playlist_type: str | None, ended: bool
) -> str:
    """The same playlist as `m3u8` renders it: the reference for our own renderer."""
    playlist = m3u8.M3U8()
    playlist.version = 3
    playlist.target_duration = target
    playlist.media_sequence = listed[0].sequence
    playlist.discontinuity_sequence = 0
    playlist.playlist_type = playlist_type
    playlist.is_endlist = ended
    for index, segment in enumerate(listed):
        dated_here = index == 0 or segment.discontinuity
        playlist.add_segment(
            m3u8.Segment(
                uri=segment.uri,
                duration=segment.duration_seconds,
                discontinuity=segment.discontinuity,
                program_date_time=segment.program_date_time if dated_here else None,
            )
        )
    text: str = playlist.dumps(infspec="milliseconds")
    return text


@given(
    durations=st.lists(st.floats(min_value=0.04, max_value=12.0), min_size=1, max_size=30),
    flags=st.lists(st.booleans(), min_size=30, max_size=30),
    first=st.integers(min_value=0, max_value=10**6 - 40),
    with_dates=st.booleans(),
    ended=st.booleans(),
)
def test_media_playlists_are_written_exactly_as_m3u8_writes_them(
    durations: list[float], flags: list[bool], first: int, with_dates: bool, ended: bool
) -> None:
    listed = [
        ListedSegment(
            first + i,
            d,
            flags[i],
            START + timedelta(seconds=sum(durations[:i])) if with_dates else None,
        )
        for i, d in enumerate(durations)
    ]
    target = target_duration_seconds(listed)
    assert event_playlist(listed, ended=ended) == _m3u8_rendering(listed, target, "event", ended)
