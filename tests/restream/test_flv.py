"""restream.flv: real sources (ffmpeg CLI: FLV with AVCC/raw AAC, MPEG-TS with Annex
B/ADTS), demuxed as ingest does, muxed as one connection's FLV, checked with ffmpeg."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from ingest.formats import flv
from ingest.media import AudioParams, SessionStart, SourcePacket, VideoParams
from restream.flv import (
    FlvMuxer,
    FlvTag,
    UnsupportedCodec,
    aac_config,
    aac_config_from_adts,
    adts_frames,
    annexb_to_avcc,
    avc_decoder_configuration,
    parameter_sets,
)
from restream.slate import Slate
from tests.support.restreams import (
    FPS,
    SECONDS,
    Source,
    demux,
    encode,
    ffmpeg_errors,
    ffprobe_video_frames,
    remux,
    write_flv,
)

FRAMES = FPS * SECONDS
AAC_FRAME_MS = 1024 * 1000 / 48000


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same kind of stream as FLV and as MPEG-TS (High profile, 2 B-frames), and
    the MPEG-TS remuxed to FLV by ffmpeg (its avcC, its AVCC packets)."""
    root = tmp_path_factory.mktemp("flv")
    video = ("-c:v", "libx264", "-preset", "veryfast", "-g", str(FPS), "-bf", "2")
    files = {
        "flv": encode(root / "src.flv", *video),
        "ts": encode(root / "src.ts", *video),
        "baseline_ts": encode(
            root / "base.ts", "-c:v", "libx264", "-preset", "ultrafast", size="160x90", seconds=0.2
        ),
    }
    files["remux_flv"] = remux(files["ts"], root / "remux.flv")
    files["baseline_flv"] = remux(files["baseline_ts"], root / "base.flv")
    return files


def mux(muxer: FlvMuxer, source: Source, *, video_extradata: bool = True) -> list[FlvTag]:
    tags = muxer.session_start(
        source.start, source.video_extradata if video_extradata else None, source.audio_extradata
    )
    for packet in source.packets:
        tags += muxer.packet(packet)
    return tags


def media_tags(tags: list[FlvTag]) -> list[FlvTag]:
    return [tag for tag in tags if tag.kind != flv.TAG_SCRIPT and not tag.is_config]


def presentation_ms(tag: FlvTag) -> int:
    return tag.timestamp_ms + int.from_bytes(tag.payload[2:5], "big", signed=True)


def assert_starts_aligned(tags: list[FlvTag]) -> None:
    """Audio and video of a run of tags start within one AAC frame of each other."""
    media = media_tags(tags)
    video = next(tag for tag in media if tag.kind == flv.TAG_VIDEO)
    audio = next(tag for tag in media if tag.kind == flv.TAG_AUDIO)
    assert abs(presentation_ms(video) - audio.timestamp_ms) <= AAC_FRAME_MS + 1


# -- a connection: two sessions with a slate between them -------------------------------


@pytest.mark.parametrize("order", [("flv", "ts"), ("ts", "flv")])
def test_two_sessions_and_a_slate_make_one_clean_flv(
    media: dict[str, Path], tmp_path: Path, order: tuple[str, str]
) -> None:
    """FLV (AVCC, avcC and ASC in the extradata) and MPEG-TS (Annex B and ADTS, passed
    without extradata) sessions, either way round, a 2 s slate between them."""
    muxer = FlvMuxer()
    first = mux(muxer, demux(media[order[0]], 0), video_extradata=order[0] == "flv")
    slate = Slate(width=320, height=180, frame_rate=Fraction(FPS), sample_rate=48000, channels=2)
    slate_at = muxer.next_ms
    slate_tags = muxer.session_start(slate.session_start(-1), None, slate.extradata())
    for packet in slate.packets(-1, 0, 2.0):
        slate_tags += muxer.packet(packet)
    back_at = muxer.next_ms
    second = mux(muxer, demux(media[order[1]], 1), video_extradata=order[1] == "flv")
    tags = first + slate_tags + second
    out = write_flv(tmp_path / "out.flv", tags)

    assert ffmpeg_errors(out) == ""
    frames = ffprobe_video_frames(out)
    assert len(frames) == FRAMES + 2 * FPS + FRAMES  # every frame of each, B-frames too
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    # the first tag sent is a keyframe, after the metadata and the sequence headers only
    opening = next(i for i, t in enumerate(tags) if t.kind != flv.TAG_SCRIPT and not t.is_config)
    assert tags[opening].kind == flv.TAG_VIDEO and tags[opening].keyframe
    assert tags[opening].timestamp_ms == 0
    assert tags[0].kind == flv.TAG_SCRIPT
    assert any(t.kind == flv.TAG_VIDEO for t in tags[1:opening])  # the AVC sequence header
    # the AAC config comes first with the extradata, else (ADTS) before the first frame
    first_audio = next(i for i, t in enumerate(tags) if t.kind == flv.TAG_AUDIO)
    assert tags[first_audio].is_config
    # continuous and monotonic per kind across the sessions
    for kind in (flv.TAG_VIDEO, flv.TAG_AUDIO):
        times = [tag.timestamp_ms for tag in media_tags(tags) if tag.kind == kind]
        assert times == sorted(times)
    video_dts = [t.timestamp_ms for t in media_tags(tags) if t.kind == flv.TAG_VIDEO]
    assert len(set(video_dts)) == len(video_dts)
    assert min(t.timestamp_ms for t in media_tags(slate_tags)) == slate_at
    assert min(t.timestamp_ms for t in media_tags(second)) == back_at
    assert slate_at - max(map(presentation_ms, media_tags(first))) <= 1000 / FPS + 1
    assert back_at - slate_at == pytest.approx(2000, abs=1000 / FPS + 1)
    for run in (first, slate_tags, second):
        assert_starts_aligned(run)
    # each session's codec configuration was sent again (the slate's differs)
    assert sum(t.is_config and t.kind == flv.TAG_VIDEO for t in tags) == 3
    assert sum(t.is_config and t.kind == flv.TAG_AUDIO for t in tags) >= 2
    assert muxer.tags_emitted == len(tags)


def test_b_frames_keep_their_presentation_times(media: dict[str, Path], tmp_path: Path) -> None:
    for name in ("flv", "ts"):
        source = demux(media[name], 0)
        tags = mux(FlvMuxer(), source, video_extradata=name == "flv")
        video = [p for p in source.packets if p.kind == "video"]
        assert any(p.pts != p.dts for p in video)
        assert video[0].pts is not None and video[0].dts is not None
        origin = video[0].dts
        expected = [round((p.pts - origin) / 90) for p in video if p.pts is not None]
        sent = [presentation_ms(t) for t in media_tags(tags) if t.kind == flv.TAG_VIDEO]
        assert sent == expected
        out = write_flv(tmp_path / f"{name}.flv", tags)
        assert ffprobe_video_frames(out) == pytest.approx(sorted(e / 1000 for e in expected))


def test_a_session_joined_mid_gop_starts_at_its_next_keyframe(media: dict[str, Path]) -> None:
    source = demux(media["ts"], 0)
    late = source.packets[10:]  # the first keyframe and the audio with it are lost
    skipped_video = next(i for i, p in enumerate(late) if p.kind == "video" and p.keyframe)
    muxer = FlvMuxer()
    tags = muxer.session_start(source.start, None, None)
    for packet in late:
        tags += muxer.packet(packet)
    first = media_tags(tags)[0]
    assert first.kind == flv.TAG_VIDEO and first.keyframe and first.timestamp_ms == 0
    assert muxer.skipped >= skipped_video
    assert all(t.timestamp_ms >= 0 for t in tags)


def test_the_same_session_again_sends_no_new_sequence_headers(media: dict[str, Path]) -> None:
    muxer = FlvMuxer()
    mux(muxer, demux(media["flv"], 0))
    again = mux(muxer, demux(media["flv"], 1))
    assert not any(tag.is_config or tag.kind == flv.TAG_SCRIPT for tag in again)
    assert media_tags(again)[0].keyframe


def test_advance_to_moves_the_next_session_on_never_back(media: dict[str, Path]) -> None:
    muxer = FlvMuxer()
    mux(muxer, demux(media["flv"], 0))
    end = muxer.next_ms
    assert end == pytest.approx(SECONDS * 1000, abs=100)
    muxer.advance_to(end - 500)
    assert muxer.next_ms == end
    muxer.advance_to(end + 1500)
    assert muxer.next_ms == end + 1500
    second = media_tags(mux(muxer, demux(media["ts"], 1)))
    assert min(tag.timestamp_ms for tag in second) == end + 1500


def test_timestamps_never_go_backwards_within_a_session(media: dict[str, Path]) -> None:
    source = demux(media["flv"], 0)
    muxer = FlvMuxer()
    tags = muxer.session_start(source.start, source.video_extradata, source.audio_extradata)
    for packet in source.packets[:40]:
        tags += muxer.packet(packet)
    last_video = max(t.timestamp_ms for t in media_tags(tags) if t.kind == flv.TAG_VIDEO)
    video = [p for p in source.packets if p.kind == "video"]
    replayed = muxer.packet(video[1])  # an earlier decode time: clamped after the last
    assert [t.timestamp_ms for t in replayed] == [last_video + 1]
    audio = next(p for p in source.packets if p.kind == "audio")
    skipped = muxer.skipped
    assert muxer.packet(audio) == []  # earlier audio: left out, not played late
    assert muxer.skipped == skipped + 1


def test_only_h264_and_aac_go_into_flv() -> None:
    video = VideoParams("hevc", 320, 180, Fraction(30), Fraction(1, 1000))
    audio = AudioParams("opus", 48000, 2, Fraction(1, 1000))
    h264 = VideoParams("h264", 320, 180, Fraction(30), Fraction(1, 1000))
    with pytest.raises(UnsupportedCodec, match="hevc"):
        FlvMuxer().session_start(SessionStart(0, video, None), None, None)
    with pytest.raises(UnsupportedCodec, match="opus"):
        FlvMuxer().session_start(SessionStart(0, h264, audio), None, None)


def test_packets_of_another_session_are_left_out(media: dict[str, Path]) -> None:
    source = demux(media["flv"], 0)
    muxer = FlvMuxer()
    assert muxer.packet(source.packets[0]) == []  # before any session
    muxer.session_start(source.start, source.video_extradata, source.audio_extradata)
    stale = SourcePacket(7, "video", "h264", source.packets[0].data, 0, 0, True)
    assert muxer.packet(stale) == []
    assert muxer.skipped == 2


# -- the pure conversions, against what ffmpeg writes --------------------------------


def test_annexb_becomes_avcc() -> None:
    aud, sps, pps = b"\x09\xf0", b"\x67\x42\xc0\x0d\xaa", b"\x68\xce\x3c\x80"
    sei, idr = b"\x06\x05\x01\x02\x80", b"\x65\x88\x84\x00\x00\x03\x01"
    long, short = b"\x00\x00\x00\x01", b"\x00\x00\x01"
    data = long + aud + short + sps + short + pps + long + sei + short + idr
    assert parameter_sets(data) == ([sps], [pps])
    assert annexb_to_avcc(data, drop=(9, 7, 8)) == b"".join(
        len(nal).to_bytes(4, "big") + nal for nal in (sei, idr)
    )
    assert annexb_to_avcc(data, drop=()).count(b"\x00\x00\x00\x05\x67") == 1


def test_annexb_keyframes_become_the_avcc_ffmpeg_writes(media: dict[str, Path]) -> None:
    """The MPEG-TS keyframes, converted, are the packets ffmpeg's FLV muxer writes."""
    with av.open(str(media["ts"])) as ts, av.open(str(media["remux_flv"])) as remuxed:
        annexb = [bytes(p) for p in ts.demux(ts.streams.video[0]) if p.size]
        avcc = [bytes(p) for p in remuxed.demux(remuxed.streams.video[0]) if p.size]
    assert len(annexb) == len(avcc) == FRAMES
    assert [annexb_to_avcc(data, drop=()) for data in annexb] == avcc


@pytest.mark.parametrize(("ts", "remuxed"), [("ts", "remux_flv"), ("baseline_ts", "baseline_flv")])
def test_the_avcc_record_is_the_one_ffmpeg_writes(
    media: dict[str, Path], ts: str, remuxed: str
) -> None:
    """From a keyframe's SPS/PPS, byte for byte the avcC of ffmpeg's FLV muxer (High
    profile: with its chroma/bit-depth fields; Constrained Baseline: without)."""
    with av.open(str(media[ts])) as container:
        keyframe = next(bytes(p) for p in container.demux(video=0) if p.is_keyframe)
    with av.open(str(media[remuxed])) as container:
        expected = bytes(container.streams.video[0].codec_context.extradata or b"")
    record = avc_decoder_configuration(*parameter_sets(keyframe))
    assert record == expected
    assert record[1] == (100 if ts == "ts" else 66)


def test_adts_headers_are_stripped_and_their_config_kept(media: dict[str, Path]) -> None:
    ts, native = demux(media["ts"], 0), demux(media["flv"], 0)
    first = next(p.data for p in ts.packets if p.kind == "audio")
    frames = adts_frames(first)
    assert frames is not None and len(frames) == 1
    header, raw = frames[0]
    assert len(header) == 7 and len(raw) == len(first) - 7
    assert aac_config_from_adts(header) == aac_config(48000, 2) == bytes([0x11, 0x90])
    assert native.audio_extradata is not None and native.audio_extradata[:2] == bytes([0x11, 0x90])
    assert adts_frames(next(p.data for p in native.packets if p.kind == "audio")) is None
    # with a CRC (protection_absent = 0), the two bytes after the header go too
    with_crc = bytearray(header[:1] + bytes([header[1] & 0xFE]) + header[2:])
    size = 9 + len(raw)
    with_crc[3] = (with_crc[3] & 0xFC) | (size >> 11)
    with_crc[4], with_crc[5] = (size >> 3) & 0xFF, ((size & 7) << 5) | (with_crc[5] & 0x1F)
    assert adts_frames(bytes(with_crc) + b"\xab\xcd" + raw) == [(bytes(with_crc), raw)]
