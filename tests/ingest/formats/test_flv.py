"""FLV writing and tag inspection, byte for byte."""

from __future__ import annotations

import pytest

from ingest.formats import amf0, flv


def test_file_header() -> None:
    assert flv.file_header() == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    assert flv.file_header(video=False)[4] == 4
    assert flv.file_header(audio=False)[4] == 1


def test_tag_bytes_with_extended_timestamp_byte() -> None:
    expected = b"\x09\x00\x00\x03\x02\x03\x04\x01\x00\x00\x00abc\x00\x00\x00\x0e"
    assert flv.tag(9, 0x01020304, b"abc") == expected


def test_parse_round_trip() -> None:
    data = flv.file_header() + flv.tag(8, 5, b"a") + flv.tag(9, 17_000_000, b"vv")
    flags, tags = flv.parse(data)
    assert flags == 5
    assert tags == [flv.Tag(8, 5, b"a"), flv.Tag(9, 17_000_000, b"vv")]
    with pytest.raises(ValueError, match="truncated"):
        flv.parse(data[:-1])


def test_metadata_payload_keeps_scalars() -> None:
    payload = flv.metadata_payload({"width": 640.0, "encoder": "x", "nested": {"a": 1}, "ok": True})
    assert amf0.decode_all(payload) == ["onMetaData", {"width": 640.0, "encoder": "x", "ok": True}]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x17\x00\x00\x00\x00\x01", flv.VideoTagInfo(7, True, True, False, False)),
        (b"\x17\x01\x00\x00\x00", flv.VideoTagInfo(7, True, False, True, False)),
        (b"\x27\x01\x00\x00\x00", flv.VideoTagInfo(7, False, False, True, False)),
        (b"\x27\x02", flv.VideoTagInfo(7, False, False, False, False)),
        (b"\x1c\x01", flv.VideoTagInfo(12, True, False, True, False)),
        (b"\x22", flv.VideoTagInfo(2, False, False, True, False)),  # Sorenson
        (b"\x90hvc1\x01", flv.VideoTagInfo(12, True, True, False, True)),
        (b"\x91hvc1", flv.VideoTagInfo(12, True, False, True, True)),
        (b"\xa3av01", flv.VideoTagInfo(13, False, False, True, True)),
        (b"\x91vp09", flv.VideoTagInfo(14, True, False, True, True)),
        (b"\xd4hvc1", flv.VideoTagInfo(12, False, False, False, True)),  # metadata packet
        (b"\x91xxxx", flv.VideoTagInfo(0, True, False, True, True)),
    ],
)
def test_video_info(payload: bytes, expected: flv.VideoTagInfo) -> None:
    assert flv.video_info(payload) == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\xaf\x00\x11\x90", flv.AudioTagInfo(10, 48000, 16, 2, True)),
        (b"\xaf\x00\x12\x08", flv.AudioTagInfo(10, 44100, 16, 1, True)),
        (b"\xaf\x01\x21\x00", flv.AudioTagInfo(10, 0, 16, 0, False)),
        (b"\x2e\xff", flv.AudioTagInfo(2, 44100, 16, 1, False)),
        (b"\x2b\xff", flv.AudioTagInfo(2, 22050, 16, 2, False)),
        (b"\x2d\xff", flv.AudioTagInfo(2, 44100, 8, 2, False)),
        (b"\x90mp4a", flv.AudioTagInfo(10, 0, 0, 0, True)),
        (b"\x91Opus", flv.AudioTagInfo(9, 0, 0, 0, False)),
    ],
)
def test_audio_info(payload: bytes, expected: flv.AudioTagInfo) -> None:
    assert flv.audio_info(payload) == expected


def test_empty_payloads() -> None:
    assert flv.video_info(b"") is None
    assert flv.audio_info(b"") is None
    assert flv.aac_config(b"\x11") == (0, 0)


def test_codec_ids_from_metadata() -> None:
    assert flv.video_codec_from_metadata(7.0) == 7
    assert flv.video_codec_from_metadata("hvc1") == 12
    assert flv.video_codec_from_metadata("av01") == 13
    assert flv.video_codec_from_metadata("junk") == 0
    assert flv.video_codec_from_metadata(True) == 0
    assert flv.audio_codec_from_metadata("mp4a") == 10
    assert flv.audio_codec_from_metadata(2.0) == 2
    assert flv.audio_codec_from_metadata(None) == 0


def test_live_tag_dropper_decisions() -> None:
    """Pure: which tags a live stream loses when they do not fit (no buffer here)."""
    avc_config = b"\x17\x00\x00\x00\x00" + bytes(30)
    key, inter, audio = b"\x17\x01\x00\x00\x00", b"\x27\x01\x00\x00\x00", b"\xaf\x01"
    dropper = flv.LiveTagDropper()
    decisions = [
        dropper.keep(kind, payload, fits)
        for kind, payload, fits in [
            (9, key, True),
            (9, inter, False),  # lost: does not fit
            (9, inter, True),  # lost: its reference is gone
            (9, avc_config, False),  # a decoder configuration is never lost
            (8, audio, False),  # audio: one by one
            (8, audio, True),
            (9, inter, True),  # still waiting for a keyframe
            (9, key, True),
            (9, inter, True),
        ]
    ]
    assert decisions == [True, False, False, True, False, True, False, True, True]
    big_config = b"\x17\x00\x00\x00\x00" + bytes(flv.MAX_ESSENTIAL_TAG_BYTES)
    assert not flv.LiveTagDropper().keep(9, big_config, False)  # too big to be essential
    assert flv.is_decoder_config(8, b"\xaf\x00\x11\x90")
    assert not flv.is_decoder_config(8, audio)
