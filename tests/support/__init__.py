"""Shared test support: waiting, publishers, fakes, clocks, services (one contract each).

Every piece of code more than one test module uses lives here; a test module imports
`tests.support...` only, never another test module or a conftest, and conftest.py
files hold fixtures built on these modules (tests/test_architecture.py checks it).

- `waiting`: `wait_until` / `async_wait_until`, one contract: raise, saying what for;
- `ports`: free ports and SeaweedFS port blocks, safe across pytest-xdist workers;
- `media`: test sources (the small one: `SMALL_SIZE`, `SMALL_TEMPLATE`), feeding a
  MediaQueue as ingest does, ffprobe, the packager's ready-made ladder;
- `publishers`: the ffmpeg CLI, GStreamer and PyAV (`pyav_publisher.py`) as publishers;
- `rtmp_client`: a raw RTMP client for protocol and hostile tests;
- `fakes`: storage doubles, a collecting segment sink, an admission harness;
- `clocks`: `FakeClock`, a clock tests step;
- `service`: settings, projects, the API, the whole service, `onair run`;
- `live_rig`, `players`, `mpegts`: the players tier's live, players and TS reader;
- `fuzzing`: how many cases the property tests try.
"""
