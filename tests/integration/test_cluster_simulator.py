"""The cluster simulator (`python -m tests.sim`) as a user runs it: a quick set of schedules
holds, each safety patch of node/syncobj switched off is caught, and a failing schedule is
printed shrunk with a command that replays it."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A seed whose schedule breaks Raft's rules without each patch (found by running the
# simulator with --revert over seeds from 0; a seed gives the same schedule in every process,
# but any change to the nodes' code may change what a schedule does: search again then).
# ack-term-monotonic is missing: its fault needs an ack held back across two elections of
# the same leader; the simulator found such a schedule once (an acknowledged enqueue lost),
# but none of the current schedules in seeds 0-1,600 does. Its tests in
# tests/unit/test_raft_patches.py drive it directly.
CAUGHT_AT = {
    "append-conflict-only": 0,
    "snapshot-keeps-log": 90,
    "snapshot-transfer-checked": 2,
    "snapshot-not-ready-waits": 2,
    "snapshot-consistent": 41,
    "journal-atomic-rewrite": 7,
    "request-ids-per-incarnation": 62,
}


def sim(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.sim", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def test_a_quick_set_of_schedules_holds():
    r = sim("--seeds", "20", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "20 schedules, 0 violations"


@pytest.mark.parametrize("patch, seed", sorted(CAUGHT_AT.items()))
def test_the_simulator_catches_each_safety_patch_switched_off(patch, seed):
    r = sim("--seed", str(seed), "--revert", patch, "--no-shrink", timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"seed {seed}: VIOLATION" in r.stdout
    assert r.stdout.splitlines()[-1] == "1 schedules, 1 violations"
    # With the patch, the same schedule holds.
    assert sim("--seed", str(seed), timeout=600).returncode == 0


def test_a_failing_schedule_is_shrunk_and_replays():
    r = sim("--seed", "0", "--revert", "append-conflict-only", timeout=600)
    assert r.returncode == 1
    shrunk = re.search(r"failing schedule \((\d+) of 400 steps\)", r.stdout)
    assert shrunk and int(shrunk.group(1)) < 400
    replay = re.search(r"replay: python -m tests.sim (.*)", r.stdout).group(1).split()
    again = sim(*replay, "--no-shrink", timeout=600)
    assert again.returncode == 1 and "seed 0: VIOLATION" in again.stdout


@pytest.mark.slow
def test_two_thousand_schedules_hold():
    r = sim("--seeds", "2000", "--seed", "1000", timeout=3600)
    assert r.returncode == 0, r.stdout[-5000:]
    assert r.stdout.splitlines()[-1] == "2000 schedules, 0 violations"
