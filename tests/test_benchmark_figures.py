"""The figures of benchmarks/capacity.py are what they say (the benchmark itself runs in
benchmarks/run, not here): percentiles by nearest rank, late notifications, the load the
held-session section deploys."""
from __future__ import annotations

import pytest

from benchmarks import capacity


def test_percentiles_are_nearest_rank_over_all_samples():
    values = [float(v) for v in range(1, 101)]
    assert capacity._p(values, 0.5) == 50.0
    assert capacity._p(values, 0.99) == 99.0  # not the largest of 100
    assert capacity._p(values[:10], 0.99) == 10.0
    assert capacity._p([7.0], 0.99) == 7.0
    assert capacity._p([], 0.5) is None


def test_a_notification_is_timed_from_smtps_250_to_the_exists_that_counts_it():
    sent = [("a", 10.0), ("a", 11.0), ("b", 12.0)]
    arrivals = {"a": [(10.5, 3), (13.5, 4)], "b": []}
    latencies, missing = capacity.notification_ms(sent, arrivals, {"a": 2, "b": 0})
    assert latencies == [500.0, 2500.0] and missing == 1
    late = missing + sum(1 for ms in latencies if ms > capacity.LATE_MS)
    assert late == 2


def test_the_held_session_section_sizes_the_node_beyond_the_default_load():
    assert capacity.load({"capacity_sessions": 300}) == {}
    assert capacity.load({"capacity_sessions": 10_000}) == {"max_imap_sessions": 10_200}
    # the daemons' open files cannot carry the default SMTP and web loads beside 7,000 sessions
    # under a hard limit of 20,000: they shrink to rupost sizing's minimums
    assert capacity.load({"capacity_sessions": 7000, "capacity_open_files": 20_000}) == {
        "max_imap_sessions": 7140, "max_smtp_sessions": 20, "max_web_sessions": 50}
    with pytest.raises(RuntimeError, match="10000 held sessions need limits.open_files = .* this machine grants "
                                           "20000"):
        capacity.load({"capacity_sessions": 10_000, "capacity_open_files": 20_000})
    assert capacity.load({"capacity_sessions": 1000, "capacity_per_process": 10}) == {
        "imap_sessions_per_process": 10}
