"""Pure leader rules: lease expiry, worker count, idle timeout, the worker roster."""
import pytest

from node.roster import Roster
from node.scaling.policy import desired_workers, idle_timeout_for, workers_to_start
from node.scheduler import LeaseDeadline, expired_leases


@pytest.mark.parametrize("deadlines,now,expected", [
    ({}, 10.0, []),
    ({"a": LeaseDeadline(11.0, 1, "w")}, 10.0, []),
    ({"a": LeaseDeadline(10.0, 1, "w")}, 10.0, [("a", 1)]),
    ({"a": LeaseDeadline(9.0, 2, "w"), "b": LeaseDeadline(5.0, 1, "v"), "c": LeaseDeadline(12.0, 1, "w")},
     10.0, [("b", 1), ("a", 2)]),
])
def test_expired_leases_are_the_ones_past_their_deadline_oldest_first(deadlines, now, expected):
    assert expired_leases(deadlines, now) == expected


@pytest.mark.parametrize("queued,running,lo,hi,expected", [
    (0, 0, 0, 4, 0),
    (0, 0, 2, 4, 2),
    (3, 0, 0, 4, 3),
    (3, 2, 0, 4, 4),
    (100, 0, 0, 2, 2),
    (5, 5, 0, 0, 0),
])
def test_desired_workers_follow_the_backlog_within_bounds(queued, running, lo, hi, expected):
    assert desired_workers(queued, running, lo, hi) == expected


@pytest.mark.parametrize("desired,live,starting,expected", [
    (4, 0, 0, 4), (4, 2, 1, 1), (4, 4, 0, 0), (2, 3, 0, 0), (3, 0, 3, 0),
])
def test_workers_to_start_counts_the_ones_already_starting(desired, live, starting, expected):
    assert workers_to_start(desired, live, starting) == expected


@pytest.mark.parametrize("live,lo,expected", [(0, 0, 60.0), (2, 2, None), (1, 2, None), (3, 2, 60.0)])
def test_workers_at_the_minimum_are_not_asked_to_leave(live, lo, expected):
    assert idle_timeout_for(live, lo, 60.0) == expected


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
