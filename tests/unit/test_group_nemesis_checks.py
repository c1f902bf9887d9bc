"""The group nemesis's checks (tests/faults/group_nemesis_checks.py) find what they are for:
on a small journal of two member processes they pass, and each defect put into it -- a record
skipped, a record twice in one assignment, an assignment started above the commits or below an
acknowledged one, a committed offset going back or past the log end, a record delivered that the
final log does not hold there (a dirty read) -- is reported. In unclean mode (an unclean election
truncated a log) a record of the final log that no one got is reported, and an acknowledged
record the election lost, a member moving back at the divergence and its commit going back are
not, nor is a committed offset past the final log end that an unclean election after the commit
cut a replica holding it under -- but one no replica held, or no unclean election came after, is.
The members must deliver what was acknowledged before they are killed (the fresh member would
otherwise cover one that stopped reading)."""

from __future__ import annotations

import copy
import time

from tests.faults.group_nemesis_checks import (check_acked_commits, check_assignment_starts, check_commits,
                                               check_delivered_in_log, check_deliveries, check_final_log_delivered,
                                               check_sessions, members_behind, truncations, unclean_elections)
from tests.faults.group_nemesis import wait_members_read_the_log


def _recs(inc: str, seq: int, t: float, p: int, first: int, last: int) -> dict:
    return {"ev": "recs", "inc": inc, "seq": seq, "gen": seq, "mid": inc, "t": t,
            "recs": [[p, o, f"v{p}-{o}"] for o in range(first, last + 1)]}


def _journal() -> list[dict]:
    """a/1 reads partition 0 from 0 to 9 and commits 10 (acknowledged); b/2 takes it over at 10."""
    return [
        {"ev": "assign", "inc": "a/1", "seq": 1, "gen": 1, "mid": "a", "t": 1.0, "positions": {"t:0": None}},
        _recs("a/1", 1, 1.1, 0, 0, 9),
        {"ev": "commit-sent", "inc": "a/1", "mid": "a", "gen": 1, "t": 1.2, "offsets": {"t:0": 10}},
        {"ev": "commit", "inc": "a/1", "mid": "a", "gen": 1, "t": 1.3, "offsets": {"t:0": 10}, "ok": True},
        _recs("a/1", 1, 1.4, 0, 10, 11),  # read past its last commit: b reads them again
        {"ev": "assign", "inc": "b/2", "seq": 1, "gen": 2, "mid": "b", "t": 5.0, "positions": {"t:0": 10}},
        _recs("b/2", 1, 5.1, 0, 10, 14),
    ]


ACKED = {f"v0-{o}".encode(): (0, o) for o in range(15)}
FINAL_LOG = {(0, o): f"v0-{o}" for o in range(15)}  # (partition, offset) -> value
SAMPLES = [(1.35, {0: 10}, {0: 12}), (5.5, {0: 10}, {0: 15})]


def _all(events: list[dict], samples: list = SAMPLES, ends: dict | None = None) -> list[str]:
    violations: list[str] = []
    check_deliveries(events, ACKED, violations)
    check_sessions(events, violations)
    check_acked_commits(events, violations)
    check_assignment_starts(events, samples, violations)
    check_commits(samples, ends or {0: 15}, violations)
    check_delivered_in_log(events, FINAL_LOG, violations)
    return violations


def test_a_clean_journal_passes() -> None:
    assert _all(_journal()) == []


def test_a_record_nobody_got_is_reported() -> None:
    events = _journal()
    events[-1] = _recs("b/2", 1, 5.1, 0, 10, 13)
    assert any("never delivered" in v for v in _all(events))


def test_a_gap_or_a_repeat_within_one_assignment_is_reported() -> None:
    events = _journal()
    events[-1]["recs"].pop(2)
    assert any("a gap" in v for v in _all(events))
    events = _journal()
    events[-1]["recs"].insert(1, list(events[-1]["recs"][0]))
    assert any("going back" in v for v in _all(events))


def test_an_assignment_above_every_commit_or_below_an_acknowledged_one_is_reported() -> None:
    events = _journal()
    events[5]["positions"] = {"t:0": 12}
    events[-1] = _recs("b/2", 1, 5.1, 0, 12, 14)
    assert any("above every offset committed" in v for v in _all(events))
    events = copy.deepcopy(_journal())
    events[5]["positions"] = {"t:0": 8}
    events[-1] = _recs("b/2", 1, 5.1, 0, 8, 14)
    assert any("below the commit of 10 acknowledged" in v for v in _all(events))


def test_a_committed_offset_going_back_or_past_the_log_end_is_reported() -> None:
    assert any("went back" in v for v in _all(_journal(), samples=[*SAMPLES, (6.0, {0: 9}, {0: 15})]))
    assert any("beyond its final log end" in v for v in _all(_journal(), ends={0: 9}))


def test_a_record_delivered_that_the_final_log_does_not_hold_is_reported() -> None:
    """Dirty reads: a/1 got, at 0@11, a record the final log holds another value at (read past the
    HW, truncated by a failover, the offset written again by a write whose outcome the producer
    never learnt: not acknowledged, so the delivery checks, which start from the acknowledged
    records, do not see it; b took the partition over at 12), and, at 0@20, one past the final
    log end (truncated, its offset never written again)."""
    events = copy.deepcopy(_journal())
    events[4]["recs"][1][2] = "dirty"  # a/1's 0@11
    events[5]["positions"] = {"t:0": 12}
    events[-1] = _recs("b/2", 1, 5.1, 0, 12, 14)
    events.append({"ev": "recs", "inc": "b/2", "seq": 1, "gen": 2, "mid": "b", "t": 5.2, "recs": [[0, 20, "gone"]]})
    log = {**FINAL_LOG, (0, 11): "written-again"}
    violations: list[str] = []
    check_delivered_in_log(events, log, violations)
    assert len(violations) == 1 and "0@11" in violations[0] and "0@20" in violations[0], violations
    assert "2 records delivered" in violations[0]


UNCLEAN_AT = {0: [2.0]}  # partition -> times of its unclean elections
# the election at 2.0 truncated partition 0 at 10: v0-10 and v0-11, acknowledged, are lost, and the
# new leader wrote w0-10..w0-14 there
UNCLEAN_LOG = {**{(0, o): f"v0-{o}" for o in range(10)}, **{(0, o): f"w0-{o}" for o in range(10, 15)}}
UNCLEAN_ACKED = {f"v0-{o}".encode(): (0, o) for o in range(12)}


def _unclean_journal(after: list[list]) -> list[dict]:
    """a/1 reads 0..11 of the old log (commits 10, then 12), then, after the election, ``after``."""
    events = _journal()[:5]
    events += [{"ev": "commit", "inc": "a/1", "mid": "a", "gen": 1, "t": 1.5, "offsets": {"t:0": 12}, "ok": True},
               {"ev": "recs", "inc": "a/1", "seq": 1, "gen": 1, "mid": "a", "t": 2.5, "recs": after},
               {"ev": "commit", "inc": "a/1", "mid": "a", "gen": 1, "t": 2.6, "offsets": {"t:0": 15}, "ok": True}]
    return events


def _unclean_all(events: list[dict], unclean_at: dict = UNCLEAN_AT) -> tuple[list[str], dict]:
    violations: list[str] = []
    report = check_final_log_delivered(events, UNCLEAN_LOG, {0: 0}, UNCLEAN_ACKED, violations)
    report.update(check_sessions(events, violations, unclean_at))
    report.update(check_acked_commits(events, violations, unclean_at=unclean_at))
    samples = [(1.6, {0: 12}, {0: 12}), (2.2, {0: 10}, {0: 11}), (2.7, {0: 15}, {0: 15})]
    report.update(check_assignment_starts(events, samples, violations, unclean_at=unclean_at))
    report.update(check_commits(samples, {0: 15}, violations, unclean_at))
    return violations, report


def test_unclean_mode_passes_a_member_that_moved_back_at_the_divergence_and_counts_the_lost_records() -> None:
    moved_back = [[0, o, f"w0-{o}"] for o in range(10, 15)]  # 10 after 11: back to where the logs part
    violations, report = _unclean_all(_unclean_journal(moved_back))
    assert violations == []
    assert report["acked_lost"] == 2 and report["delivered_not_in_final_log"] == 2
    assert report["final_log_records_checked"] == 15 and report["moved_back"] == 1


def test_unclean_mode_reports_a_record_of_the_final_log_that_no_one_got() -> None:
    """a/1 goes on at 12 after the election (offsets contiguous with what it read, the values the
    new leader wrote at 10 and 11 never read): a skip only the final log shows."""
    went_on = [[0, o, f"w0-{o}"] for o in range(12, 15)]
    violations, report = _unclean_all(_unclean_journal(went_on))
    assert report["skipped"] == 2
    assert [v for v in violations if "never delivered" in v] == [
        "2 records of the final log at or above the group's start never delivered, e.g. [(0, 10, 'w0-10'), "
        "(0, 11, 'w0-11')]"], violations


def test_unclean_mode_reports_a_final_log_read_with_holes() -> None:
    """The final log's own reader skipping records would hide the group's skips of them."""
    violations: list[str] = []
    log = {k: v for k, v in UNCLEAN_LOG.items() if k != (0, 7)}
    check_final_log_delivered(_unclean_journal([[0, o, f"w0-{o}"] for o in range(10, 15)]), log, {0: 0},
                              UNCLEAN_ACKED, violations)
    assert violations == ["the final log of partition 0 as read has holes: 14 records from 0 to 14"], violations


def test_unclean_mode_still_reports_going_back_or_a_commit_going_back_without_an_unclean_election() -> None:
    moved_back = [[0, o, f"w0-{o}"] for o in range(10, 15)]
    violations, _ = _unclean_all(_unclean_journal(moved_back), unclean_at={})
    assert any("going back" in v for v in violations) and any("went back" in v for v in violations), violations
    assert not any("never delivered" in v for v in violations)


def test_unclean_elections_are_read_from_the_coordinators_log_with_their_times() -> None:
    text = ("2026-12-05 23:10:05,250 WARNING nodes.coordinator.election: my-topic-2: UNCLEAN election of broker 3 "
            "(data may be lost)\n"
            "2026-12-05 23:10:06,000 WARNING nodes.coordinator.election: __offsets-0: UNCLEAN election of broker 1 "
            "(data may be lost)\n"
            "2026-12-05 23:10:07,000 INFO nodes.coordinator.election: my-topic-1: leader 2 at epoch 4, isr [2]\n")
    got = unclean_elections(text, "my-topic")
    assert list(got) == [2] and len(got[2]) == 1
    assert abs(got[2][0] - (time.mktime(time.strptime("2026-12-05 23:10:05", "%Y-%m-%d %H:%M:%S")) + 0.25)) < 1e-6


# The scripted unclean election as the nemesis's seed 129 ran it: the old leader, alone in the ISR,
# took records up to 195 that the stale replica (log end 40) lacks; the group read and committed up
# to 180 on it (seen at 11.0), and a commit of 186 read there was in flight when the stale replica
# was elected uncleanly (12.0): its append (the offsets partition offline meanwhile) landed after
# it (seen at 17.0). The old leader came back and was cut from 195 to 40 (16.0); the member, sent
# back there, committed 50 with the new epoch, and the log grew back only to 120 before the end.
CUT_SAMPLES = [(10.0, {0: 100}, {0: 110}), (11.0, {0: 180}, {0: 190}), (17.0, {0: 186}, {0: 60}),
               (18.0, {0: 50}, {0: 65}), (30.0, {0: 118}, {0: 120})]
CUT_ENDS = {0: 120}
CUT_UNCLEAN_AT = {0: [12.0]}
CUT_TRUNCATIONS = {0: [(16.0, 195, 40), (16.1, 70, 40)]}  # partition -> (time, log end, cut to)


def test_unclean_mode_passes_a_commit_past_the_final_log_end_that_an_unclean_election_cut_under() -> None:
    violations: list[str] = []
    report = check_commits(CUT_SAMPLES, CUT_ENDS, violations, CUT_UNCLEAN_AT, cuts=CUT_TRUNCATIONS)
    assert violations == []
    assert report["commits_cut_by_an_unclean_election"] == 2  # 180 and 186
    assert report["commits_back_at_an_unclean_election"] == 1  # 186 -> 50


def test_unclean_mode_still_reports_a_commit_past_the_final_log_end_that_no_unclean_election_cut_under() -> None:
    """Past the final log end is excused only with both: an unclean election after the commit,
    and a replica that held the committed offset cut under it after that election."""
    def beyond(unclean_at: dict, cut: dict) -> list[str]:
        violations: list[str] = []
        check_commits(CUT_SAMPLES, CUT_ENDS, violations, unclean_at, cuts=cut)
        return sorted({v for v in violations if "beyond its final log end" in v})
    both = ["committed offset 180 of partition 0 beyond its final log end 120",
            "committed offset 186 of partition 0 beyond its final log end 120"]
    assert beyond({}, CUT_TRUNCATIONS) == both  # no unclean election at all
    # seen up to STALE_POSITION_S (30 s) after the election, a commit may be of a position read before it:
    # 180, seen 26 s after it, is excused; 186, seen 32 s after, is not; nor is any, 51 s after
    assert beyond({0: [-15.0]}, CUT_TRUNCATIONS) == [both[1]]
    assert beyond({0: [-40.0]}, CUT_TRUNCATIONS) == both
    assert beyond({1: [12.0]}, CUT_TRUNCATIONS) == both  # another partition's
    # no replica held 180 (the longest log ended at 170): accepted past every log end, not cut
    assert beyond(CUT_UNCLEAN_AT, {0: [(16.0, 170, 40)]}) == both
    assert beyond(CUT_UNCLEAN_AT, {0: [(16.0, 195, 150)]}) == []  # cut under 180, 186 (to 150): excused
    assert beyond(CUT_UNCLEAN_AT, {0: [(16.0, 195, 182)]}) == [both[0]]  # cut above 180: not by it
    assert beyond(CUT_UNCLEAN_AT, {0: [(8.0, 195, 40)]}) == both  # a cut before the election: not by it
    assert beyond(CUT_UNCLEAN_AT, {}) == both  # no evidence of a cut
    violations: list[str] = []
    check_commits(CUT_SAMPLES, CUT_ENDS, violations, CUT_UNCLEAN_AT)  # no cuts given: none excused
    assert sorted({v for v in violations if "beyond its final log end" in v}) == both


def test_truncations_are_read_from_a_brokers_log_with_their_times() -> None:
    text = ("2026-12-06 16:04:25,770 WARNING nodes.broker.partition_follower: my-topic-0: truncating from 5027 "
            "to 3795\n"
            "2026-12-06 16:04:25,785 WARNING nodes.broker.partition_follower: my-topic-3: truncating from 1826 "
            "to 1826\n"
            "2026-12-06 16:04:25,790 WARNING nodes.broker.partition_follower: __offsets-0: truncating from 9 to 4\n"
            "2026-12-06 16:04:25,800 WARNING nodes.broker.partition_follower: my-topic-extra-1: truncating from "
            "9 to 4\n")
    got = truncations(text, "my-topic")
    t0 = time.mktime(time.strptime("2026-12-06 16:04:25", "%Y-%m-%d %H:%M:%S"))
    assert sorted(got) == [0, 3]
    assert [(round(t - t0, 3), end, to) for t, end, to in got[0]] == [(0.77, 5027, 3795)]
    assert [(end, to) for _, end, to in got[3]] == [(1826, 1826)]


def test_members_behind_says_which_records_no_member_delivered_yet() -> None:
    want = {(0, o, f"v0-{o}") for o in range(15)}
    assert members_behind(_journal(), want, at_offset=False) == {}
    assert members_behind(_journal(), want | {(0, 15, "v0-15"), (0, 16, "v0-16")}, at_offset=True) == {0: (2, 15)}
    # by value, the normal mode; at its offset, unclean mode (the log's record there)
    moved = {(0, 3, "v0-4")}
    assert members_behind(_journal(), moved, at_offset=False) == {}
    assert members_behind(_journal(), moved, at_offset=True) == {0: (1, 3)}


def test_members_that_do_not_catch_up_are_a_violation_not_a_note() -> None:
    want = {(0, o, f"v0-{o}") for o in range(20)}  # the journal stops at 14
    violations: list[str] = []
    wait_members_read_the_log(_journal, want, False, violations, timeout_s=0.2)
    assert len(violations) == 1 and "{0: (5, 15)}" in violations[0], violations
    violations.clear()
    wait_members_read_the_log(_journal, {(0, o, f"v0-{o}") for o in range(15)}, False, violations, timeout_s=0.2)
    assert violations == []
