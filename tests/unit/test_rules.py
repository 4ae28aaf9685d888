"""Pure node rules: lease expiry, worker count, idle timeout, the worker roster, and when a node
counts itself able to reach a majority."""

from dataclasses import replace

import pytest

from node.scaling.policy import (
    Limits,
    Snapshot,
    Worker,
    adaptive_idle_timeout,
    decide,
    idle_timeout_told,
)
from node.scheduling.leases import LeaseDeadline, expired_leases
from node.scheduling.roster import Roster
from node.service import ELECTING, quorum_problem


@pytest.mark.parametrize(
    "deadlines,now,expected",
    [
        ({}, 10.0, []),
        ({"a": LeaseDeadline(11.0, 1, "w")}, 10.0, []),
        ({"a": LeaseDeadline(10.0, 1, "w")}, 10.0, [("a", 1)]),
        (
            {
                "a": LeaseDeadline(9.0, 2, "w"),
                "b": LeaseDeadline(5.0, 1, "v"),
                "c": LeaseDeadline(12.0, 1, "w"),
            },
            10.0,
            [("b", 1), ("a", 2)],
        ),
    ],
)
def test_expired_leases_are_the_ones_past_their_deadline_oldest_first(deadlines, now, expected):
    assert expired_leases(deadlines, now) == expected


def snap(queued=0, backlog=0, workers=(), arrivals=(), launches=(), now=1000.0):
    return Snapshot(
        now=now,
        queued_jobs=queued,
        backlog_iterations=backlog,
        oldest_wait=0.0,
        workers=tuple(workers),
        arrivals=tuple(arrivals),
        recent_launches=tuple(launches),
    )


UP, BUSY, BOOTING = Worker(busy=False), Worker(busy=True), Worker(busy=False, booting=True)
LIM = Limits(
    min_workers=0,
    max_workers=4,
    target_drain_seconds=10,
    start_cost=1.0,
    default_speed=1000.0,
    job_overhead=0.0,  # sized by iterations alone, but in the cases on overhead below
    max_launches_per_minute=3,
)
M = 1000 * 10  # iterations one worker drains within the target


@pytest.mark.parametrize(
    "name,s,expected",
    [
        ("nothing to do", snap(), 0),
        ("one small job starts one worker", snap(queued=1, backlog=100), 1),
        ("backlog sizes the pool", snap(queued=10, backlog=3 * M), 3),
        ("never more workers than jobs", snap(queued=2, backlog=100 * M), 2),
        ("never past max_workers", snap(queued=50, backlog=50 * M, workers=[BUSY, BUSY]), 2),
        ("booting workers count", snap(queued=10, backlog=3 * M, workers=[BOOTING, BOOTING]), 1),
        ("booting workers cover it", snap(queued=10, backlog=2 * M, workers=[BOOTING, BOOTING]), 0),
        (
            "current workers drain it before a new one boots",
            snap(queued=2, backlog=500, workers=[BUSY]),
            0,
        ),
        ("launch rate limit", snap(queued=50, backlog=50 * M, launches=[990.0, 995.0]), 1),
        ("old launches do not count", snap(queued=50, backlog=50 * M, launches=[900.0]), 3),
        (
            "keeps up with the arrival rate",
            snap(queued=5, backlog=100, arrivals=[(1000.0 - i, 1500) for i in range(60)]),
            2,
        ),
    ],
)
def test_launches(name, s, expected):
    assert decide(s, LIM).start == expected, name


@pytest.mark.parametrize(
    "name,s,overhead,expected",
    [
        # 2,000 one-iteration jobs: 2 s of iterations, 20 s of overhead.
        ("tiny jobs size the pool by their overhead", snap(queued=2000, backlog=2000), 0.01, 3),
        ("blind to overhead, one worker", snap(queued=2000, backlog=2000), 0.0, 1),
        (
            "a measured overhead wins over the default",
            snap(queued=1000, backlog=1000, workers=[Worker(busy=True, overhead=0.02)]),
            0.01,
            2,  # 1 s + 20 s: 3 workers, one is up
        ),
        (
            "the default stands in while none measured",
            snap(queued=1000, backlog=1000, workers=[BUSY]),
            0.01,
            1,  # 1 s + 10 s: 2 workers, one is up
        ),
        (
            "current workers drain tiny jobs before a new one boots",
            snap(queued=100, backlog=100, workers=[Worker(busy=True, overhead=0.0001)]),
            0.01,
            0,
        ),
        (
            "arrivals of tiny jobs count their overhead",
            snap(queued=5, backlog=5, arrivals=[(1000.0 - i / 50, 1) for i in range(1000)]),
            0.05,
            3,  # 1,000 jobs in 20 s at 50 ms each: 2.5 workers busy
        ),
    ],
)
def test_launches_count_each_jobs_overhead(name, s, overhead, expected):
    assert decide(s, replace(LIM, job_overhead=overhead)).start == expected, name


def test_the_minimum_is_kept_even_without_work():
    assert decide(snap(workers=[UP]), Limits(min_workers=3, max_workers=4)).start == 2


def bursts(gap, count=6, size=20):
    """Arrivals in bursts of `size` jobs one second apart, bursts `gap` seconds apart."""
    out, t = [], 0.0
    for _ in range(count):
        out += [(t + i, 1000) for i in range(size)]
        t += size + gap
    return out


@pytest.mark.parametrize(
    "arrivals,start_cost,expected",
    [
        ([], 1.0, 5.0),  # no history: break-even, at least min_idle
        ([], 45.0, 90.0),  # expensive starts wait longer
        ([(float(i), 1000) for i in range(300)], 45.0, 90.0),  # steady: no gaps to bridge
        (bursts(60), 45.0, 90.0),  # gaps within break-even: break-even covers them
        (bursts(150), 45.0, 151 * 1.1),  # gaps longer, still cheaper than a relaunch: bridged
        (bursts(1000), 45.0, 90.0),  # gaps too long to be worth bridging
        (bursts(60), 0.5, 5.0),  # cheap local starts: not worth bridging
    ],
)
def test_adaptive_idle_timeout(arrivals, start_cost, expected):
    lim = Limits(start_cost=start_cost, min_idle=5.0, max_idle=1800.0, idle_cost_ratio=2.0)
    s = snap(arrivals=arrivals, now=arrivals[-1][0] if arrivals else 0.0)
    assert adaptive_idle_timeout(s, lim) == pytest.approx(expected)


def test_adaptive_idle_timeout_grows_with_burstiness():
    lim = Limits(start_cost=45.0)
    steady = adaptive_idle_timeout(snap(arrivals=[(float(i), 1) for i in range(600)]), lim)
    bursty = adaptive_idle_timeout(snap(arrivals=bursts(150)), lim)
    assert bursty > steady


def test_roster_forgets_workers_after_the_ttl_and_publishes_only_changes():
    r = Roster(ttl=10)
    r.touch("w1", {"pid": "1"}, now=0)
    r.touch("w2", {}, now=5)
    first = r.changes(now=6)
    assert [w[0] for w in first.workers] == ["w1", "w2"]
    assert r.changes(now=7) is None
    assert list(r.live(now=12)) == ["w2"]
    assert [w[0] for w in r.changes(now=12).workers] == ["w2"]


def test_roster_adopts_the_replicated_list_with_a_fresh_ttl():
    r = Roster(ttl=10)
    r.adopt([{"id": "w1", "last_seen": 1.0, "pid": "7"}], now=100)
    assert r.live(now=109) == {"w1": {"pid": "7"}}
    assert r.live(now=111) == {}


def test_roster_forgets_a_worker_whose_process_exited_at_once():
    r = Roster(ttl=10)
    r.touch("w1", {}, now=0)
    r.forget("w1")
    r.forget("never-seen")
    assert r.live(now=1) == {}


@pytest.mark.parametrize(
    "live,lo,expected", [(0, 0, 60.0), (2, 2, None), (1, 2, None), (3, 2, 60.0)]
)
def test_workers_at_the_minimum_are_not_asked_to_leave(live, lo, expected):
    assert idle_timeout_told(live, lo, 60.0) == expected


@pytest.mark.parametrize(
    "leader_known, is_leader, majority, hears, just_heard, expected",
    [
        # A follower hearing its leader, a leader with a majority answering.
        (True, False, False, True, True, None),
        (True, True, True, False, False, None),
        # A leader whose followers stopped answering.
        (True, True, False, False, False, "leader without a majority of answering followers"),
        # A follower whose leader went silent (cut off, or the leader died).
        (
            True,
            False,
            False,
            False,
            False,
            "no heartbeat from the leader within the election timeout",
        ),
        # No leader, none heard lately: an election after a timeout, or a node cut off.
        (False, False, False, False, False, "no leader known"),
        (False, False, False, True, False, "no leader known"),
        # No leader, but one was heard within the minimum election timeout: a hand-over, whose
        # successor follows within milliseconds.
        (False, False, False, True, True, ELECTING),
        (False, False, False, False, True, ELECTING),
    ],
)
def test_quorum_problem(leader_known, is_leader, majority, hears, just_heard, expected):
    assert (
        quorum_problem(
            leader_known=leader_known,
            is_leader=is_leader,
            majority_answers=majority,
            hears_leader=hears,
            leader_just_heard=just_heard,
        )
        == expected
    )
