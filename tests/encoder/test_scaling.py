"""The cascade of a ladder's pictures: each made once, from the next larger one."""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from encoder.scaling import Pictures, Size, cascade

LADDER = [(1920, 1080), (1280, 720), (854, 480), (640, 360)]


def source_frame(width: int = 1920, height: int = 1080) -> av.VideoFrame:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame.pts = 3000
    frame.time_base = Fraction(1, 90_000)
    return frame


def psnr(a: av.VideoFrame, b: av.VideoFrame) -> float:
    x, y = (f.to_ndarray(format="yuv420p").astype(float) for f in (a, b))
    return float(10 * np.log10(255**2 / np.mean((x - y) ** 2)))


def test_each_size_scales_from_the_next_larger_one() -> None:
    assert cascade(LADDER) == {
        (640, 360): (854, 480),
        (854, 480): (1280, 720),
        (1280, 720): (1920, 1080),
        (1920, 1080): None,
    }
    # A size that does not fit inside a larger one goes to the frame.
    assert cascade([(1280, 720), (960, 1080)]) == {(1280, 720): None, (960, 1080): None}


def test_every_picture_is_made_once_whoever_asks_first() -> None:
    frame = source_frame()
    pictures = Pictures(frame, cascade(LADDER))
    made: list[Size] = []

    class Counting:
        def __init__(self) -> None:
            self._reformatter = VideoReformatter()

        def reformat(
            self, base: av.VideoFrame, width: int, height: int, *args: Any, **kwargs: Any
        ) -> av.VideoFrame:
            made.append((width, height))
            return self._reformatter.reformat(base, width, height, *args, **kwargs)

    workers: dict[Size, dict[Size, Any]] = {
        size: {s: Counting() for s in LADDER} for size in LADDER
    }
    got: dict[Size, av.VideoFrame] = {}
    # The smallest asks first: it makes the larger ones it cascades from.
    for size in reversed(LADDER):
        got[size] = pictures.at(size, workers[size], "BICUBIC", 1)
    assert sorted(made) == sorted(LADDER[1:])  # each once; 1080p is the frame itself
    assert got[(1920, 1080)] is frame
    for size, picture in got.items():
        assert (picture.width, picture.height, picture.format.name) == (*size, "yuv420p")
        assert (picture.pts, picture.time_base) == (3000, Fraction(1, 90_000))
    # Within a hair of scaling the frame directly (noise, the hardest case for it).
    direct = frame.reformat(640, 360, "yuv420p", interpolation="BICUBIC")
    assert psnr(got[(640, 360)], direct) > 30


def test_threads_asking_at_once_share_one_picture() -> None:
    pictures = Pictures(source_frame(), cascade(LADDER))
    barrier = threading.Barrier(len(LADDER))
    got: dict[Size, list[av.VideoFrame]] = {}

    def worker(size: Size) -> None:
        reformatters: dict[Size, VideoReformatter] = {}
        barrier.wait()
        got[size] = [pictures.at(s, reformatters, "BICUBIC", 1) for s in LADDER]

    threads = [threading.Thread(target=worker, args=(size,)) for size in LADDER]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    first = got[LADDER[0]]
    assert all(all(a is b for a, b in zip(first, g, strict=True)) for g in got.values())


def test_a_smaller_source_than_the_ladder_is_never_scaled_up_and_down() -> None:
    # A later session at 640x360 on a ladder planned at 1080p: 480p is not made from an
    # upscaled 720p picture, but from the frame.
    frame = source_frame(640, 360)
    pictures = Pictures(frame, cascade(LADDER))
    reformatters: dict[Size, VideoReformatter] = {}
    picture = pictures.at((854, 480), reformatters, "BICUBIC", 1)
    assert set(reformatters) == {(854, 480)}
    assert (picture.width, picture.height) == (854, 480)
    assert pictures.at((640, 360), reformatters, "BICUBIC", 1) is frame


def test_a_picture_is_dropped_once_its_rendition_and_the_smaller_ones_are_done() -> None:
    pictures = Pictures(source_frame(), cascade(LADDER))
    reformatters: dict[Size, VideoReformatter] = {}
    sd = pictures.at((854, 480), reformatters, "BICUBIC", 1)  # makes 720p on the way
    pictures.done((854, 480))
    # 480p: taken, but 360p is still to be made from it; 720p: its rendition is behind.
    assert pictures.at((854, 480), reformatters, "BICUBIC", 1) is sd
    hd = pictures.at((1280, 720), reformatters, "BICUBIC", 1)
    pictures.done((1280, 720))  # every picture made from it is made: dropped
    assert pictures.at((1280, 720), {}, "BICUBIC", 1) is not hd
    pictures.at((640, 360), reformatters, "BICUBIC", 1)
    pictures.done((640, 360))
    assert pictures.at((854, 480), {}, "BICUBIC", 1) is not sd  # dropped, made again
