"""The scaling simulator and its traces (virtual time: deterministic, no processes)."""

import json
import subprocess
import sys

import pytest

from bench import traces
from bench.baselines import POLICIES
from bench.simulator import simulate
from node.scaling.policy import Limits

SPEED = 1000.0


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_job_runs_once_and_waits_are_measured(policy):
    trace = [(float(t), 2000) for t in range(0, 100, 5)]  # 2 s jobs every 5 s
    result = simulate(
        trace,
        POLICIES[policy],
        Limits(max_workers=2, start_cost=1, default_speed=SPEED),
        boot_delay=1.0,
        speed=SPEED,
    )
    assert len(result.waits) == len(trace) and result.unfinished == 0
    assert result.launches >= 1
    # Every second of compute is paid for, and more (boots, idling).
    assert result.worker_seconds >= len(trace) * 2


def test_a_single_worker_model_matches_a_hand_computed_schedule():
    # Two jobs of 4 s arriving at once, one worker (max 1) booting in 2 s: it starts both in
    # turn, so they wait about 2 s and 6 s.
    trace = [(0.0, 4000), (0.0, 4000)]
    result = simulate(
        trace, POLICIES["fixed-60s"], Limits(max_workers=1), boot_delay=2.0, speed=SPEED
    )
    assert result.launches == 1
    assert sorted(result.waits) == pytest.approx([3.0, 7.0], abs=1.0)


def test_each_job_costs_a_worker_its_overhead_besides_its_iterations():
    # As above, with 1 s of overhead per job: each takes 5 s, so the second waits 4 s longer.
    trace = [(0.0, 4000), (0.0, 4000)]
    result = simulate(
        trace,
        POLICIES["fixed-60s"],
        Limits(max_workers=1),
        boot_delay=2.0,
        speed=SPEED,
        overhead=1.0,
    )
    assert sorted(result.waits) == pytest.approx([3.0, 8.0], abs=1.0)


def test_trace_files_are_read_as_time_and_iterations(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("# a comment\ntime,iterations\n5,100\n1.5,7\n")
    assert traces.load(str(path)) == [(1.5, 7), (5.0, 100)]


@pytest.mark.parametrize("name", sorted(traces.BUILTIN))
def test_builtin_traces_are_sorted_and_non_empty(name):
    trace = traces.BUILTIN[name]()
    assert trace and [t for t, _ in trace] == sorted(t for t, _ in trace)


def test_the_quick_benchmark_meets_the_scaling_targets(tmp_path):
    out = tmp_path / "scaling.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "scaling", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    verdicts = json.loads(out.read_text())["benchmarks"]["scaling"]["targets"]
    assert len(verdicts) == 4 and all(v.startswith("met") for v in verdicts), verdicts
