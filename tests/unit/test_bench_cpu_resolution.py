"""/proc counts a process's CPU in whole clock ticks (1/CLK_TCK s, 10 ms here): a phase that
cost the cluster less than a tick reads 0, and "cluster 0.00 µs per record" would be a wrong
figure. Such a phase's cluster CPU is unknown (None, shown as '-'), as for a cluster elsewhere."""

from __future__ import annotations

import os

import pytest

from bench import report, stats


def test_no_tick_counted_is_unknown_not_zero() -> None:
    assert stats.cpu_between(1.23, 1.23) is None


def test_ticks_counted_are_the_difference() -> None:
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert stats.cpu_between(1.0, 1.0 + 3 * tick) == pytest.approx(3 * tick)


def test_a_reading_that_went_back_is_unknown() -> None:
    """A node restarted during the phase: its new process counts from 0."""
    assert stats.cpu_between(2.0, 0.5) is None


def test_unknown_cluster_cpu_shows_a_dash_per_record() -> None:
    assert stats.us_per_record(stats.cpu_between(0.5, 0.5), 1000) is None
    assert report._fmt(None) == "-"
