"""The leader's scaling loop against the in-memory backend, with a hand-driven clock."""

from node.scaling.backends.fake import FakeBackend
from node.scaling.loop import BOOT_BACKOFF_CAP, Scaler
from node.scaling.policy import Limits
from node.scheduling.roster import Roster

M = 1_000_000


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(max_workers=4, boot_timeout=60.0, ttl=20.0):
    clock = Clock()
    backend = FakeBackend(start_cost=10.0, clock=clock)
    roster = Roster(ttl=ttl)
    limits = Limits(
        max_workers=max_workers, start_cost=10.0, default_speed=M / 10, target_drain_seconds=10
    )
    return clock, backend, roster, Scaler(backend, roster, limits, boot_timeout)


def test_a_backlog_launches_workers_and_booting_ones_are_not_launched_twice():
    clock, backend, roster, scaler = make()
    scaler.step(clock.now, queued=3, backlog_iterations=3 * M, oldest_queued_at=None, busy=set())
    assert len(backend.launched) == 3
    clock.now += 1
    scaler.step(clock.now, queued=3, backlog_iterations=3 * M, oldest_queued_at=None, busy=set())
    assert len(backend.launched) == 3


def test_workers_of_an_earlier_leader_count_toward_the_max():
    clock, backend, roster, scaler = make(max_workers=4)
    for w in ("old-1", "old-2", "old-3"):
        roster.touch(w, {}, clock.now)
    scaler.step(
        clock.now,
        queued=20,
        backlog_iterations=20 * M,
        oldest_queued_at=None,
        busy={"old-1", "old-2", "old-3"},
    )
    assert len(backend.launched) == 1


def test_a_worker_that_never_registers_is_terminated_after_the_boot_timeout():
    clock, backend, roster, scaler = make(boot_timeout=60)
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    (worker,) = backend.launched
    clock.now += 59
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    assert backend.terminated == []
    clock.now += 2
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    assert worker in backend.terminated


def test_a_registered_worker_holding_a_lease_is_never_terminated():
    clock, backend, roster, scaler = make(boot_timeout=60)
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    (worker,) = backend.launched
    for _ in range(10):  # well past the boot timeout, heartbeating
        clock.now += 15
        roster.touch(worker, {}, clock.now)
        scaler.step(clock.now, queued=0, backlog_iterations=M, oldest_queued_at=None, busy={worker})
    assert backend.terminated == []


def test_a_worker_that_stops_polling_is_terminated():
    clock, backend, roster, scaler = make(boot_timeout=60, ttl=20)
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    (worker,) = backend.launched
    roster.touch(worker, {}, clock.now + 5)
    clock.now += 100  # past the roster ttl and the boot timeout
    scaler.step(clock.now, queued=0, backlog_iterations=0, oldest_queued_at=None, busy=set())
    assert worker in backend.terminated


def test_measured_worker_speed_feeds_the_policy():
    clock, backend, roster, scaler = make()
    roster.touch("fast", {"speed": str(100 * M)}, clock.now)
    decision = scaler.step(
        clock.now, queued=2, backlog_iterations=2 * M, oldest_queued_at=None, busy={"fast"}
    )
    assert decision.start == 0 and "before a new one boots" in decision.reason


def test_a_new_leader_waits_for_the_previous_leaders_workers_before_launching():
    clock, backend, roster, scaler = make()
    scaler.became_leader(clock.now)
    scaler.step(clock.now, queued=5, backlog_iterations=5 * M, oldest_queued_at=None, busy=set())
    assert backend.launched == []
    for w in ("orphan-1", "orphan-2"):
        roster.touch(w, {}, clock.now + 1)
    clock.now += 6
    scaler.step(clock.now, queued=5, backlog_iterations=5 * M, oldest_queued_at=None, busy=set())
    assert len(backend.launched) == 2  # 4 at most, 2 already there


def test_workers_holding_leases_count_before_they_report():
    clock, backend, roster, scaler = make(max_workers=4)
    scaler.step(
        clock.now, queued=10, backlog_iterations=10 * M, oldest_queued_at=None, busy={"a", "b", "c"}
    )
    assert len(backend.launched) == 1


def test_decisions_are_counted_and_recorded_once_per_kind():
    clock, backend, roster, scaler = make(boot_timeout=60)
    scaler.step(clock.now, queued=3, backlog_iterations=3 * M, oldest_queued_at=None, busy=set())
    for w in backend.launched:
        roster.touch(w, {}, clock.now)
    for queued in (2, 1, 2):  # the same kind of decision with other figures
        clock.now += 1
        scaler.step(
            clock.now,
            queued=queued,
            backlog_iterations=queued * M,
            oldest_queued_at=clock.now - 1,
            busy=set(backend.launched),
        )
    clock.now += 61  # the workers stopped polling: terminated
    scaler.step(clock.now, queued=0, backlog_iterations=0, oldest_queued_at=None, busy=set())
    assert scaler.actions == {"launch": 1, "hold": 4, "terminate": 1}
    assert [d["started"] for d in scaler.recent] == [3, 0, 0]
    assert [d["at"] for d in scaler.recent] == [1000.0, 1001.0, 1064.0]
    assert scaler.booting == 0 and scaler.launches == 3


def test_arrivals_ask_for_a_step_only_while_no_worker_is_up_or_booting():
    clock, backend, roster, scaler = make()
    assert scaler.jobs_arrived([(clock.now, M)], clock.now)  # empty pool: step now
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    (worker,) = backend.launched
    assert not scaler.jobs_arrived([(clock.now, M)], clock.now)  # one is booting
    roster.touch(worker, {}, clock.now)
    clock.now += 1
    scaler.step(clock.now, queued=2, backlog_iterations=2 * M, oldest_queued_at=None, busy=set())
    assert not scaler.jobs_arrived([(clock.now, M)], clock.now)  # one is up


def fail_to_boot(clock, backend, scaler, boot_timeout=60):
    """Launch on a backlog; the worker never registers and is terminated after the timeout."""
    before = len(backend.launched)
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    assert len(backend.launched) == before + 1
    clock.now += boot_timeout + 1
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())


def test_launches_back_off_after_workers_in_a_row_never_register():
    clock, backend, roster, scaler = make(max_workers=1)
    expected_waits = [60, 120, 240, 480]
    for failures, wait in enumerate(expected_waits, start=1):
        fail_to_boot(clock, backend, scaler)
        assert scaler.boot_failures == failures and len(backend.terminated) == failures
        launched = len(backend.launched)
        clock.now += wait - 2  # the step that terminated it was one second after the timeout
        d = scaler.step(
            clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set()
        )
        assert len(backend.launched) == launched and d.start == 0
        workers = "worker" if failures == 1 else "workers in a row"
        assert d.reason.startswith(f"{failures} {workers} never registered; next try in")
        clock.now += 2
    # The wait stops doubling at the cap.
    scaler.boot_failures = 10
    fail_to_boot(clock, backend, scaler)
    assert scaler.retry_at - clock.now == BOOT_BACKOFF_CAP


def test_a_worker_that_registers_ends_the_backoff():
    clock, backend, roster, scaler = make(max_workers=2)
    fail_to_boot(clock, backend, scaler)
    assert scaler.boot_failures == 1
    clock.now += 60
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    worker = backend.launched[-1]
    roster.touch(worker, {}, clock.now)
    scaler.step(clock.now, queued=1, backlog_iterations=M, oldest_queued_at=None, busy=set())
    assert (scaler.boot_failures, scaler.retry_at) == (0, 0.0)
