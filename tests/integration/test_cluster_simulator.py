"""The cluster simulator (`python -m tests.sim`) as a user runs it: a quick set of schedules
holds, each safety patch of node/replication/syncobj switched off is caught, and a failing
schedule is printed shrunk with a command that replays it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A seed whose schedule breaks Raft's rules without each patch (found by running the
# simulator with --revert over seeds from 0; a seed gives the same schedule in every process,
# but any change to the nodes' code may change what a schedule does: search again then).
# Two patches have no seed among the first 600 since snapshots are written in the
# background: moving a snapshot into place and trimming the log now happen in one tick, so
# no schedule restarts a node between them (snapshot-keeps-log), and a leader sends its
# previous snapshot while the next is written (snapshot-not-ready-waits); their tests in
# tests/unit/test_raft_patches.py drive each situation directly.
CAUGHT_AT = {
    "append-conflict-only": 0,
    "ack-term-monotonic": 0,  # a snapshot sent to a follower known to be up to date
    "snapshot-transfer-checked": 4,
    "snapshot-consistent": 41,
    "journal-atomic-rewrite": 12,
    "request-ids-per-incarnation": 47,
    "votes-counted-once": 111,  # a cluster of five: with three, one vote wins
}


SIM = ("-m", "tests.sim")
QUICK_SEEDS = 20
QUICK_SET = (*SIM, "--seeds", str(QUICK_SEEDS))  # seeds 0 to 19
SHRUNK = (*SIM, "--seed", "0", "--revert", "append-conflict-only")
# What each seed's schedule did, run one after another in one fresh process (five nodes,
# 1,500 steps, ack-term-monotonic off: where a seed was seen to depend on an earlier one).
FINGERPRINTS = (
    "import sys; from node.replication.syncobj import patches; from tests.sim.run import run; "
    "patches.ENABLED['ack-term-monotonic'] = False; "
    "print(' '.join(run(int(s), list(range(1500)), nodes=5).fingerprint "
    "for s in sys.argv[1:]))"
)


def caught(patch: str, seed: int) -> tuple[str, ...]:
    return (*SIM, "--seed", str(seed), "--revert", patch, "--no-shrink")


def held(seed: int) -> tuple[str, ...]:
    """A run that holds only if the seed's schedule holds with every patch: the quick set's
    for a seed among its own (each schedule runs as it does alone: see the test below)."""
    return QUICK_SET if seed < QUICK_SEEDS else (*SIM, "--seed", str(seed))


def fingerprinted(*seeds: int) -> tuple[str, ...]:
    return ("-c", FINGERPRINTS, *map(str, seeds))


def planned(item: pytest.Item) -> list[tuple[str, ...]]:
    """The runs a test of this module reads."""
    name = item.originalname
    if name == "test_a_quick_set_of_schedules_holds":
        return [QUICK_SET]
    if name == "test_the_simulator_catches_each_safety_patch_switched_off":
        patch, seed = item.callspec.params["patch"], item.callspec.params["seed"]
        return [caught(patch, seed), held(seed)]
    if name == "test_a_schedule_does_not_depend_on_what_ran_before_it_in_the_process":
        return [fingerprinted(144, 145), fingerprinted(145)]
    if name == "test_a_failing_schedule_is_shrunk_and_replays":
        return [SHRUNK]
    return []


def python(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh process, with the hash seed tests.sim would set for itself."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def lanes() -> int:
    """As many runs at once as there are cores for this test process (pytest-xdist runs
    several test processes side by side)."""
    return max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))


class Runs:
    """Simulator runs, each in a process of its own, as many at once as there are cores: they
    are independent and CPU-bound, and nothing in them depends on wall-clock time."""

    def __init__(self, pool: ThreadPoolExecutor):
        self.pool = pool
        self.started: dict[tuple[str, ...], Future] = {}

    def start(self, args: tuple[str, ...]) -> None:
        if args not in self.started:
            self.started[args] = self.pool.submit(python, *args)

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        self.start(args)
        return self.started[args].result()


@pytest.fixture(scope="module")
def sim(request):
    """`sim(*ARGS)`: the result of `python ARGS`. The runs of every selected test of this
    module start together, the longest first."""
    mine = [item for item in request.session.items if item.module is request.module]
    plan = [args for item in mine for args in planned(item)]
    plan.sort(key=lambda args: (args != QUICK_SET, args != SHRUNK, args[0] != "-c"))
    with ThreadPoolExecutor(lanes()) as pool:
        runs = Runs(pool)
        for args in plan:
            runs.start(args)
        try:
            yield runs
        finally:
            for future in runs.started.values():
                future.cancel()  # those not started yet; the pool waits for the others


def test_a_quick_set_of_schedules_holds(sim):
    r = sim(*QUICK_SET)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == f"{QUICK_SEEDS} schedules, 0 violations"


@pytest.mark.parametrize("patch, seed", sorted(CAUGHT_AT.items()))
def test_the_simulator_catches_each_safety_patch_switched_off(sim, patch, seed):
    r = sim(*caught(patch, seed))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"seed {seed}: VIOLATION" in r.stdout
    assert r.stdout.splitlines()[-1] == "1 schedules, 1 violations"
    # With the patch, the same schedule holds.
    assert sim(*held(seed)).returncode == 0


def fingerprints(sim, *seeds: int) -> list[str]:
    r = sim(*fingerprinted(*seeds))
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.split()


def test_a_schedule_does_not_depend_on_what_ran_before_it_in_the_process(sim):
    # Seed 145 once did something else after seed 144 than on its own.
    assert fingerprints(sim, 144, 145)[1] == fingerprints(sim, 145)[0]


def test_a_failing_schedule_is_shrunk_and_replays(sim):
    r = sim(*SHRUNK)
    assert r.returncode == 1
    shrunk = re.search(r"failing schedule \((\d+) of 400 steps\)", r.stdout)
    assert shrunk and int(shrunk.group(1)) < 400
    replay = re.search(r"replay: python -m tests.sim (.*)", r.stdout).group(1).split()
    again = sim(*SIM, *replay, "--no-shrink")
    assert again.returncode == 1 and "seed 0: VIOLATION" in again.stdout


@pytest.mark.slow
def test_two_thousand_schedules_hold():
    r = python(*SIM, "--seeds", "2000", "--seed", "1000", timeout=3600)
    assert r.returncode == 0, r.stdout[-5000:]
    assert r.stdout.splitlines()[-1] == "2000 schedules, 0 violations"
