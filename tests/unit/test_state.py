"""The state machine applied to a real SQLite store, without Raft."""

import pytest
from sqlalchemy import func, select

from node.replication import commands as c
from node.replication.state_machine import ApplyError, JobEvent, KeyConflict, StateMachine
from node.storage.store import Store, count_by_status, jobs

RESULT = "ab" * 64


def job(job_id: str, iterations: int = 5, key=None, at=100.0, digest="d" * 64) -> c.NewJob:
    return c.NewJob(job_id.ljust(32, "0"), iterations, 10, digest, at, key)


def jid(name: str) -> str:
    return name.ljust(32, "0")


@pytest.fixture
def machine(tmp_path):
    store = Store(str(tmp_path))
    m = StateMachine(store)
    m.index = 1

    def run(*cmds):
        m.index += 1
        return m.apply(m.index, [c.encode(cmd) for cmd in cmds])

    m.run = run
    yield m
    store.close()


def statuses(m):
    with m.store.engine.connect() as conn:
        return {
            r.id[:4].rstrip("0"): r.status for r in conn.execute(select(jobs.c.id, jobs.c.status))
        }


def assert_counters_match(m):
    counts = m.store.counts()
    with m.store.engine.connect() as conn:
        actual = count_by_status(conn)
        backlog = conn.execute(
            select(func.coalesce(func.sum(jobs.c.iterations), 0)).where(
                jobs.c.status.in_(("queued", "running"))
            )
        ).scalar_one()
    assert {k: counts[k] for k in actual} == actual
    assert counts["backlog_iterations"] == backlog
    assert m.counts == counts  # the in-memory copy follows every applied entry


def test_enqueue_adds_queued_jobs_in_order(machine):
    machine.run(c.Enqueue((job("a"), job("b"))))
    machine.run(c.Enqueue((job("c"),)))
    assert [j["id"][:1] for j in machine.store.jobs_with_status("queued", 10)] == ["a", "b", "c"]
    assert machine.store.counts()["queued"] == 3


def test_replaying_an_applied_index_changes_nothing(machine):
    machine.run(c.Enqueue((job("a"),)))
    again = machine.apply(machine.index, [c.encode(c.Complete(((jid("a"), RESULT),), 1.0, 100))])
    assert again is None
    assert statuses(machine) == {"a": "queued"}
    assert machine.store.last_applied() == machine.index


def test_an_older_index_is_skipped_too(machine):
    machine.run(c.Enqueue((job("a"),)))
    machine.run(c.Enqueue((job("b"),)))
    assert machine.apply(machine.index - 1, [c.encode(c.Enqueue((job("z"),)))]) is None
    assert set(statuses(machine)) == {"a", "b"}


def test_enqueue_of_an_existing_id_is_ignored(machine):
    machine.run(c.Enqueue((job("a", 5),)))
    machine.run(c.Enqueue((job("a", 7),)))
    assert machine.store.job(jid("a"))["iterations"] == 5
    assert machine.store.counts()["queued"] == 1


@pytest.mark.parametrize(
    "wire",
    [
        ("no-such-op", 1),
        ("enqueue",),
        ("complete", "not a tuple", 1.0, 10),
        ("lease",),
        None,
        42,
    ],
)
def test_a_bad_command_is_rejected_without_wedging(machine, wire):
    machine.index += 1
    results = machine.apply(machine.index, [wire, c.encode(c.Enqueue((job("a"),)))])
    assert isinstance(results[0], ApplyError)
    assert results[1] == [jid("a")]
    assert machine.store.last_applied() == machine.index
    assert machine.store.counts()["apply_failures"] == 1
    machine.run(c.Enqueue((job("b"),)))
    assert set(statuses(machine)) == {"a", "b"}
    assert_counters_match(machine)


def test_an_entry_that_is_not_a_batch_is_skipped(machine):
    machine.index += 1
    assert machine.apply(machine.index, 12345) is None
    assert machine.store.last_applied() == machine.index
    assert_counters_match(machine)


def test_a_restarted_machine_skips_what_the_store_has_applied(machine):
    machine.run(c.Enqueue((job("a"),)))
    again = StateMachine(machine.store)
    assert again.apply(machine.index, [c.encode(c.Enqueue((job("b"),)))]) is None
    assert again.apply(machine.index + 1, [c.encode(c.Enqueue((job("c"),)))]) == [[jid("c")]]
    assert set(statuses(machine)) == {"a", "c"}
    assert again.counts == machine.store.counts() and again.counts["queued"] == 2


def test_lease_takes_only_queued_jobs(machine):
    machine.run(c.Enqueue((job("a"), job("b"))))
    machine.run(c.Complete(((jid("b"), RESULT),), 2.0, 100))
    (leased,) = machine.run(c.Lease("w1", (jid("a"), jid("b"), jid("x")), 3.0))
    assert leased == [(jid("a"), 1)]
    row = machine.store.job(jid("a"))
    assert (row["status"], row["worker"], row["attempts"], row["leased_at"]) == (
        "running",
        "w1",
        1,
        3.0,
    )
    assert_counters_match(machine)


# (attempts already used, max_attempts, attempt named in the requeue) -> status afterwards
@pytest.mark.parametrize(
    "leases,max_attempts,named,expected",
    [
        (1, 3, 1, "queued"),
        (2, 3, 2, "queued"),
        (3, 3, 3, "failed"),
        (1, 1, 1, "failed"),
        (2, 3, 1, "running"),  # leased again since: the stale requeue is ignored
    ],
)
def test_requeue_returns_or_fails_a_job_by_attempts(machine, leases, max_attempts, named, expected):
    machine.store.put_payloads([(jid("a"), b"payload", 1.0)])
    machine.run(c.Enqueue((job("a"),)))
    for i in range(leases):
        if i:
            machine.run(c.Requeue(((jid("a"), i),), "expired", 100, 1.0, 100))
        machine.run(c.Lease("w", (jid("a"),), 1.0))
    (out,) = machine.run(c.Requeue(((jid("a"), named),), "lease expired", max_attempts, 9.0, 100))
    row = machine.store.job(jid("a"))
    assert row["status"] == expected
    if expected == "failed":
        assert out["failed"] == [jid("a")]
        assert "lease expired" in row["error"] and f"{leases} attempts" in row["error"]
    # A failed job's payload is dropped; a job that may still run keeps it.
    assert machine.store.get_payload(jid("a")) == (None if expected == "failed" else b"payload")
    assert_counters_match(machine)


def test_complete_records_the_first_result_and_drops_the_payload(machine):
    machine.store.put_payloads([(jid("a"), b"payload", 1.0)])
    machine.run(c.Enqueue((job("a"),)))
    machine.run(c.Lease("w", (jid("a"),), 1.0))
    (first,) = machine.run(c.Complete(((jid("a"), RESULT),), 5.0, 100))
    (second,) = machine.run(c.Complete(((jid("a"), "cd" * 64),), 6.0, 100))
    assert first == [jid("a")] and second == []
    row = machine.store.job(jid("a"))
    assert (row["status"], row["result"], row["finished_at"]) == ("completed", RESULT, 5.0)
    assert machine.store.get_payload(jid("a")) is None
    assert_counters_match(machine)


def test_one_complete_command_takes_many_results_the_first_for_a_job_standing(machine):
    machine.store.put_payloads([(jid(n), b"payload", 1.0) for n in "abcd"])
    machine.run(c.Enqueue(tuple(job(n, iterations=10) for n in "abcd")))
    machine.run(c.Lease("w", (jid("a"), jid("b")), 1.0))  # c and d stay queued
    machine.run(c.Complete(((jid("d"), RESULT),), 2.0, 100))
    other = "cd" * 64
    (done,) = machine.run(
        c.Complete(
            (
                (jid("a"), RESULT),
                (jid("x"), RESULT),
                (jid("c"), RESULT),
                (jid("a"), other),
                (jid("d"), other),
            ),
            3.0,
            100,
        )
    )
    assert done == [jid("a"), jid("c")]
    assert [r["id"][:1] for r in machine.store.completed(10)] == ["c", "a", "d"]
    for name, result, at in (("a", RESULT, 3.0), ("c", RESULT, 3.0), ("d", RESULT, 2.0)):
        row = machine.store.job(jid(name))
        assert (row["status"], row["result"], row["finished_at"]) == ("completed", result, at)
        assert machine.store.get_payload(jid(name)) is None
    assert machine.store.job(jid("b"))["status"] == "running"
    assert machine.store.get_payload(jid("b")) == b"payload"
    assert_counters_match(machine)


def test_completed_lists_newest_first_and_retention_drops_the_oldest(machine):
    names = ["a", "b", "c", "d", "e"]
    machine.run(c.Enqueue(tuple(job(n) for n in names)))
    for n in names:
        machine.run(c.Complete(((jid(n), RESULT),), 1.0, 3))
    assert [r["id"][:1] for r in machine.store.completed(10)] == ["e", "d", "c"]
    assert [r["id"][:1] for r in machine.store.completed(2)] == ["e", "d"]
    assert machine.store.job(jid("a")) is None
    assert machine.store.counts()["finished"] == 3
    assert_counters_match(machine)


def test_commands_in_one_entry_get_distinct_positions(machine):
    machine.run(c.Enqueue((job("a"),)), c.Enqueue((job("b"),)))
    machine.run(
        c.Complete(((jid("a"), RESULT),), 1.0, 10), c.Complete(((jid("b"), RESULT),), 1.0, 10)
    )
    assert [r["id"][:1] for r in machine.store.completed(10)] == ["b", "a"]


def test_workers_command_replaces_the_list(machine):
    machine.run(c.Workers((("w1", '{"pid": "1"}', 5.0), ("w2", "{}", 6.0))))
    machine.run(c.Workers((("w2", "{}", 7.0),)))
    assert machine.store.workers() == [{"id": "w2", "last_seen": 7.0}]


def test_on_applied_hook_sees_each_entry_once_with_its_commands(tmp_path):
    seen = []
    m = StateMachine(
        Store(str(tmp_path)),
        on_applied=lambda applied: seen.append([(type(cmd).__name__, r) for cmd, r in applied]),
    )
    m.apply(2, [c.encode(c.Enqueue((job("a"),))), c.encode(c.Workers(()))])
    m.apply(3, [c.encode(c.Enqueue((job("b"),)))])
    assert seen == [[("Enqueue", [jid("a")]), ("Workers", 0)], [("Enqueue", [jid("b")])]]


def test_on_events_hook_sees_each_job_state_change_once(tmp_path):
    seen = []
    m = StateMachine(Store(str(tmp_path)), on_events=seen.extend)
    steps = [
        # (entry, events it makes): enqueued at 100 (job()), leased at 103, completed at 110
        (
            [c.Enqueue((job("a"), job("b"), job("c")))],
            [JobEvent("enqueued", jid(n)) for n in "abc"],
        ),
        ([c.Enqueue((job("a"),))], []),  # a duplicate id
        (
            [c.Lease("w1", (jid("a"), jid("b"), jid("c")), 103.0)],
            [JobEvent("leased", jid(n), 3.0) for n in "abc"],
        ),
        (
            [c.Complete(((jid("a"), RESULT), (jid("zz"), RESULT)), 110.0, 100)],
            [JobEvent("completed", jid("a"), 7.0)],
        ),
        ([c.Complete(((jid("a"), RESULT),), 111.0, 100)], []),  # already completed
        (
            [c.Requeue(((jid("b"), 1), (jid("c"), 1)), "lost", 1, 120.0, 100)],
            [JobEvent("failed", jid("b")), JobEvent("failed", jid("c"))],
        ),
        # a failing command among others: its events are rolled back with it
        (
            [c.Enqueue((job("d"),)), c.Enqueue((c.NewJob(jid("x"), "many", 10, "d" * 64, 1.0),))],
            [JobEvent("enqueued", jid("d"))],
        ),
        (
            [
                c.Lease("w2", (jid("d"),), 130.0),
                c.Requeue(((jid("d"), 1),), "released", 3, 131.0, 100),
                c.Complete(((jid("d"), RESULT),), 132.0, 100),
            ],
            [
                JobEvent("leased", jid("d"), 30.0),
                JobEvent("requeued", jid("d")),
                JobEvent("completed", jid("d"), None),
            ],
        ),  # completed while queued
    ]
    for index, (entry, expected) in enumerate(steps, start=2):
        seen.clear()
        m.apply(index, [c.encode(cmd) for cmd in entry])
        assert seen == expected, entry
    seen.clear()
    assert m.apply(len(steps) + 1, [c.encode(c.Enqueue((job("e"),)))]) is None  # replayed
    assert seen == []


def test_a_known_idempotency_key_returns_the_first_job(machine):
    (first,) = machine.run(c.Enqueue((job("a", key="k1"),)))
    (again,) = machine.run(c.Enqueue((job("b", key="k1"),)))
    assert first == [jid("a")] and again == [jid("a")]
    assert machine.store.job(jid("b")) is None
    assert machine.store.counts()["queued"] == 1


def test_the_same_key_twice_in_one_entry_makes_one_job(machine):
    (results,) = machine.run(c.Enqueue((job("a", key="k"), job("b", key="k"), job("c"))))
    assert results == [jid("a"), jid("a"), jid("c")]
    assert machine.store.counts()["queued"] == 2


@pytest.mark.parametrize("change", [{"iterations": 6}, {"digest": "e" * 64}])
def test_a_key_reused_for_another_request_is_a_conflict(machine, change):
    machine.run(c.Enqueue((job("a", key="k"),)))
    (results,) = machine.run(c.Enqueue((job("b", key="k", **change),)))
    assert results == [KeyConflict(jid("a"))]
    assert machine.store.job(jid("b")) is None


@pytest.mark.parametrize(
    "later,ttl,expected",
    [
        (150.0, 100.0, "a"),  # inside the window: deduplicated
        (201.0, 100.0, "b"),  # past it: the key was forgotten, a new job
    ],
)
def test_keys_are_forgotten_after_their_window(machine, later, ttl, expected):
    machine.run(c.Enqueue((job("a", key="k", at=100.0),), key_ttl=ttl))
    (results,) = machine.run(c.Enqueue((job("b", key="k", at=later),), key_ttl=ttl))
    assert results == [jid(expected)]


def snapshot(m):
    with m.store.engine.connect() as conn:
        return sorted(
            (r.id, r.status, r.iterations)
            for r in conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.iterations))
        ), m.store.counts()["queued"]


ENQUEUES = [
    c.Enqueue((job("a", key="k1"),)),
    c.Enqueue((job("b"), job("c", key="k2"))),
    c.Enqueue((job("d", key="k1"),)),  # k1 again: job a
    c.Enqueue((job("e", key="k2", iterations=9),)),  # k2 with other iterations: conflict
    c.Enqueue((job("b"),)),  # an id already enqueued
    c.Enqueue((job("f", key="k3", at=500.0),), key_ttl=100.0),
]


def test_enqueues_in_one_entry_give_what_they_give_one_entry_each(machine, tmp_path):
    """Consecutive enqueues in one entry are applied together; the results and the store are
    those of applying them one entry at a time."""
    together = machine.run(*ENQUEUES)
    alone_machine = StateMachine(Store(str(tmp_path / "alone")))
    alone = [alone_machine.apply(i + 2, [c.encode(cmd)])[0] for i, cmd in enumerate(ENQUEUES)]
    assert (
        together
        == alone
        == [
            [jid("a")],
            [jid("b"), jid("c")],
            [jid("a")],
            [KeyConflict(jid("c"))],
            [jid("b")],
            [jid("f")],
        ]
    )
    assert snapshot(machine) == snapshot(alone_machine)
    assert_counters_match(machine)


def test_a_failing_enqueue_among_others_fails_alone(machine):
    bad = c.Enqueue((c.NewJob(jid("x"), "many", 10, "d" * 64, 100.0, None),))
    results = machine.run(c.Enqueue((job("a"),)), bad, c.Enqueue((job("b"),)))
    assert results[0] == [jid("a")] and results[2] == [jid("b")]
    assert isinstance(results[1], ApplyError)
    assert statuses(machine) == {"a": "queued", "b": "queued"}
    assert_counters_match(machine)


@pytest.mark.parametrize("query", ["completed", "feed", "queued", "running"])
def test_hot_queries_walk_an_index_instead_of_sorting(machine, query):
    """pullCompleted, the completion feed and lease selection cost O(top), not a sort of
    every matching job: the plans of the very queries `Store.completed`, `Store.feed` and
    `Store.jobs_with_status` run."""
    store = machine.store
    if query == "completed":
        q = store.completed_query(100)
    elif query == "feed":
        q = store.feed_query(5, 100)
    else:
        q = store.status_query(query, 100)
    sql = str(q.compile(compile_kwargs={"literal_binds": True}))
    with machine.store.engine.connect() as conn:
        plan = " ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan


def feed_ids(store, after=0, limit=100):
    finished, first, last = store.feed(after, limit)
    return [(f["position"], f["id"][:1], f["status"]) for f in finished], first, last


def test_completions_and_failures_take_consecutive_feed_positions_in_finish_order(machine):
    machine.run(c.Enqueue(tuple(job(n) for n in "abcde")))
    machine.run(c.Lease("w", (jid("c"),), 1.0))
    machine.run(c.Complete(((jid("b"), RESULT), (jid("a"), RESULT), (jid("b"), RESULT)), 2.0, 100))
    # A rejected command in the same entry takes no position.
    machine.index += 1
    machine.apply(
        machine.index,
        [
            c.encode(c.Requeue(((jid("c"), 1),), "lease expired", 1, 3.0, 100)),
            ("complete", "not a tuple", 1.0, 10),
            c.encode(c.Complete(((jid("e"), RESULT),), 3.0, 100)),
        ],
    )
    assert feed_ids(machine.store) == (
        [(1, "b", "completed"), (2, "a", "completed"), (3, "c", "failed"), (4, "e", "completed")],
        1,
        4,
    )
    assert feed_ids(machine.store, after=2, limit=1) == ([(3, "c", "failed")], 1, 4)
    assert feed_ids(machine.store, after=4) == ([], 1, 4)
    finished, _, _ = machine.store.feed(0, 100)
    assert finished[0]["result"] == RESULT and "lease expired" in finished[2]["error"]
    assert_counters_match(machine)


def test_the_feed_is_the_same_on_a_replica_that_applies_the_same_entries(machine, tmp_path):
    entries = [
        [c.Enqueue(tuple(job(n) for n in "abcd"))],
        [c.Complete(((jid("c"), RESULT),), 1.0, 100), c.Complete(((jid("a"), RESULT),), 1.0, 100)],
        [c.Lease("w", (jid("b"),), 1.0)],
        [
            c.Requeue(((jid("b"), 1),), "gone", 1, 2.0, 100),
            c.Complete(((jid("d"), RESULT),), 2.0, 3),
        ],
    ]
    other = StateMachine(Store(str(tmp_path / "other")))
    for cmds in entries:
        machine.run(*cmds)
        other.apply(machine.index, [c.encode(cmd) for cmd in cmds])
    assert feed_ids(other.store) == feed_ids(machine.store)
    # Retention (3 finished jobs kept) dropped the first position.
    assert feed_ids(machine.store) == (
        [(2, "a", "completed"), (3, "b", "failed"), (4, "d", "completed")],
        2,
        4,
    )


def test_a_store_made_before_the_feed_gains_it_empty(tmp_path):
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE jobs (id VARCHAR PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, "
            "iterations INTEGER NOT NULL, size INTEGER NOT NULL, digest VARCHAR NOT NULL, "
            "status VARCHAR NOT NULL, attempts INTEGER NOT NULL, worker VARCHAR, "
            "enqueued_at FLOAT NOT NULL, leased_at FLOAT, done_seq INTEGER, finished_at FLOAT, "
            "result VARCHAR, error VARCHAR)"
        )
        conn.exec_driver_sql(
            "INSERT INTO jobs VALUES ('" + jid("o") + "', 1, 1, 1, 'd', 'completed', 1, NULL, "
            "1.0, NULL, 7, 2.0, '" + RESULT + "', NULL)"
        )
    engine.dispose()
    m = StateMachine(Store(str(tmp_path)))
    assert feed_ids(m.store) == ([], 1, 0)
    m.apply(
        2, [c.encode(c.Enqueue((job("a"),))), c.encode(c.Complete(((jid("a"), RESULT),), 1.0, 9))]
    )
    assert feed_ids(m.store) == ([(1, "a", "completed")], 1, 1)
    assert m.store.completed(10)[1]["id"] == jid("o")
