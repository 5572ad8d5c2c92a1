"""The segment upload latency histogram behind `onair_job_upload_seconds`."""

from __future__ import annotations

import pytest

from packager.hls.uploads import LatencyHistogram


def test_buckets_are_cumulative_and_the_sum_adds_up() -> None:
    histogram = LatencyHistogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(seconds)
    buckets, total = histogram.snapshot()
    assert buckets == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]  # an upper bound is inclusive
    assert total == pytest.approx(3.65)
