"""What the output shows while no input is there: copies of a picture, a slate, silence.

Pure picture and sound making (PyAV and Pillow, no threads): `encoder.program` calls
it when the active input is lost, for the frames it puts on the output timeline in the
input's place.

- `copy_picture`: a picture of its own (each output frame carries its own timestamp,
  and the renditions read it after the dispatcher moved on, so one picture is never
  shared by two slots);
- `slate_picture`: the slate at the program's size, a configured image fitted inside
  it (letterboxed, never stretched), or a plain dark frame with the job's name;
- `silence`: planar-float zeros in the program's audio format.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

SLATE_BACKGROUND = (24, 26, 32)
SLATE_TEXT = (232, 232, 232)
SLATE_SUBTITLE = "The live will resume shortly"
_LAYOUTS = {1: "mono", 2: "stereo"}


def copy_picture(frame: av.VideoFrame) -> av.VideoFrame:
    """A copy of `frame`'s picture in a frame of its own (yuv420p), with no timestamp."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
    # Any other format: converting makes the copy.
    return frame.reformat(
        width=frame.width + frame.width % 2,
        height=frame.height + frame.height % 2,
        format="yuv420p",
    )


def slate_picture(width: int, height: int, title: str, image: Path | None = None) -> av.VideoFrame:
    """The slate at `width`x`height` (yuv420p): `image` fitted inside the frame on the
    slate's background, or, without one (or when it cannot be read), the background
    with `title` and a line saying the live will resume."""
    width, height = max(2, width + width % 2), max(2, height + height % 2)
    canvas = Image.new("RGB", (width, height), SLATE_BACKGROUND)
    picture = _image(image) if image is not None else None
    if picture is not None:
        picture.thumbnail((width, height), Image.Resampling.LANCZOS)
        if picture.width < width and picture.height < height:  # small: scale it up
            scale = min(width / picture.width, height / picture.height)
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.Resampling.LANCZOS)
        canvas.paste(picture, ((width - picture.width) // 2, (height - picture.height) // 2))
    else:
        _write_title(canvas, title)
    return av.VideoFrame.from_image(canvas).reformat(format="yuv420p")


def _image(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError) as exc:
        log.warning("slate image %s cannot be read (%s): the plain slate is used", path, exc)
        return None


def _write_title(canvas: Image.Image, title: str) -> None:
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    big = ImageFont.load_default(size=max(10, height // 14))
    small = ImageFont.load_default(size=max(8, height // 28))
    title = title if len(title) <= 80 else title[:79] + "…"
    lines = [(title, big), (SLATE_SUBTITLE, small)]
    sizes = [draw.textbbox((0, 0), text, font=font) for text, font in lines]
    gap = height // 30
    total = sum(box[3] - box[1] for box in sizes) + gap
    y = (height - total) // 2
    for (text, font), box in zip(lines, sizes, strict=True):
        text_width = box[2] - box[0]
        draw.text(
            ((width - text_width) // 2 - box[0], y - box[1]), text, font=font, fill=SLATE_TEXT
        )
        y += box[3] - box[1] + gap


def silence(sample_rate: int, channels: int, samples: int, pts: int | None = None) -> av.AudioFrame:
    """`samples` of silence (planar float) at `sample_rate`; `pts` in samples."""
    layout = _LAYOUTS.get(channels, "stereo")
    planes = 1 if layout == "mono" else 2
    frame = av.AudioFrame.from_ndarray(
        np.zeros((planes, samples), dtype=np.float32), format="fltp", layout=layout
    )
    frame.sample_rate = sample_rate
    frame.time_base = Fraction(1, sample_rate)
    frame.pts = pts
    return frame
