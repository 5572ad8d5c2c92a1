"""Source statistics: measured values win, declared ones fill in, nothing is invented."""

from __future__ import annotations

from ingest.stats import SourceStatistics, SourceStats

DECLARED = {
    "width": 1920.0,
    "height": 1080.0,
    "framerate": 60.0,
    "videodatarate": 6000.0,
    "audiodatarate": 160.0,
    "videocodecid": 7.0,
    "audiocodecid": 10.0,
    "audiosamplerate": 44100.0,
    "audiosamplesize": 16.0,
    "stereo": True,
    "encoder": "obs-output module (libobs version 30.0.0)",
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_before_media_everything_is_zero() -> None:
    snapshot = SourceStats().snapshot()
    assert snapshot == SourceStatistics(
        width=0,
        height=0,
        framerate=0,
        video_data_rate=0,
        audio_data_rate=0,
        video_codec_id=0,
        audio_codec_id=0,
        audio_sample_rate=0,
        audio_sample_size=0,
        audio_channels=0,
        stereo=False,
        encoder="",
    )
    assert not snapshot.media_seen


def test_declared_values_fill_in_while_nothing_is_measured() -> None:
    stats = SourceStats()
    stats.on_metadata(DECLARED)
    assert stats.snapshot() == SourceStatistics(
        width=1920,
        height=1080,
        framerate=60,
        video_data_rate=6000,
        audio_data_rate=160,
        video_codec_id=7,
        audio_codec_id=10,
        audio_sample_rate=44100,
        audio_sample_size=16,
        audio_channels=0,
        stereo=True,
        encoder="obs-output module (libobs version 30.0.0)",
    )


def test_measured_values_win() -> None:
    clock = Clock()
    stats = SourceStats(clock=clock)
    stats.on_metadata(DECLARED)
    stats.on_media(9, 0, b"\x1c\x00" + bytes(20))  # legacy HEVC config
    stats.on_media(8, 0, b"\xaf\x00\x12\x08")  # AAC 44.1 kHz mono
    for i in range(61):  # 25 fps
        clock.now += 0.04
        stats.on_media(9, i * 40, b"\x1c\x01" + bytes(498))
    stats.on_video_size(1280, 720)
    snapshot = stats.snapshot()
    assert snapshot.video_codec_id == 12
    assert snapshot.framerate == 25
    assert (snapshot.width, snapshot.height) == (1280, 720)
    assert snapshot.audio_sample_rate == 44100
    assert snapshot.audio_channels == 1
    assert snapshot.stereo is False  # measured mono beats declared stereo
    stats.on_audio_format(48000, 2)  # the decoder has the last word
    assert stats.snapshot().audio_sample_rate == 48000
    assert stats.snapshot().stereo is True


def test_framerate_rounds_29_97_and_restarts_on_a_new_session() -> None:
    stats = SourceStats()
    for i in range(100):
        stats.on_media(9, round(i * 1001 / 30), b"\x27\x01\x00\x00\x00")
    assert stats.snapshot().framerate == 30
    stats.new_session()
    assert stats.snapshot().framerate == 0
    stats.on_media(9, 0, b"\x27\x01\x00\x00\x00")
    stats.on_media(9, 100, b"\x27\x01\x00\x00\x00")
    assert stats.snapshot().framerate == 10


def test_sequence_headers_do_not_count_as_frames() -> None:
    stats = SourceStats()
    for i in range(10):
        stats.on_media(9, i * 40, b"\x17\x00\x00\x00\x00")
    assert stats.snapshot().framerate == 0


def test_data_rates_over_a_sliding_window_of_arrival() -> None:
    clock = Clock()
    stats = SourceStats(clock=clock)
    for i in range(500):  # 5 s: 100 video tags of 1000 bytes and 50 audio of 100 per second
        clock.now += 0.01
        stats.on_media(9, i * 10, b"\x27\x01" + bytes(998))
        if i % 2:
            stats.on_media(8, i * 10, b"\xaf\x01" + bytes(98))
    snapshot = stats.snapshot()
    assert snapshot.video_data_rate == 800
    assert snapshot.audio_data_rate == 40
    clock.now += 10  # silence: the window empties
    assert stats.snapshot().video_data_rate == 0


def test_enhanced_fourcc_codec_ids() -> None:
    for fourcc, codec_id in ((b"hvc1", 12), (b"av01", 13), (b"vp09", 14)):
        stats = SourceStats()
        stats.on_media(9, 0, b"\x91" + fourcc + bytes(4))
        assert stats.snapshot().video_codec_id == codec_id
