"""`python -m bench NAME --quick` runs each benchmark end to end and writes sane figures.

A smoke run, not a measurement: it checks that every benchmark still starts what it measures,
finishes, and reports figures of the right shape, so BENCHMARKS.md can always be rerun. The
end-to-end comparison installs Celery and Redis on first use and runs only with -m slow.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_quick(name: str, tmp_path: Path, timeout: float) -> dict:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"=== {name} --quick" in done.stdout
    assert "machine: " in done.stdout and "versions: " in done.stdout
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1 and "pysyncobj" in report["versions"]
    entry = report["benchmarks"][name]
    assert "error" not in entry, entry
    assert entry["targets"], "every benchmark states its verdicts"
    return entry["results"]


def check_ingest(r: dict) -> None:
    assert r["clients"] == [16]
    assert set(r["rows"]) == {
        "baseline 16 KB 16c",
        "cluster fsync off 16 KB 16c",
        "cluster fsync on 16 KB 16c",
        "baseline 256 KB 16c",
        "cluster fsync off 256 KB 16c",
        "cluster fsync on 256 KB 16c",
        "cluster fsync on batch 100 16 KB 2c",
    }
    assert r["batch"] == {"size": 100, "clients": 2}
    assert r["rows"]["cluster fsync on batch 100 16 KB 2c"]["jobs_per_request"] == 100
    for row in r["rows"].values():
        assert row["acknowledged"] > 0 and row["errors"] == {}
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        # Serving a request costs CPU, and the servers cannot use more than the machine has
        # (give or take the sampling's timing).
        assert 0 < row["cpu_ms_per_ack"] and 0 < row["cpu_cores"] <= (os.cpu_count() or 1) + 0.5


def check_kernel(r: dict) -> None:
    assert r["hashlib_loop_ns"] > 0 and r["lanes"] >= 1
    if r["kernel"] == "python":  # the extension is not built here
        assert r["kernel_ns"] is None
    else:
        assert r["kernel"] in ("c", "c-avx512") and 0 < r["kernel_ns"] <= r["c_single_chain_ns"]


def check_failover(r: dict) -> None:
    for kind in ("kill9", "sigterm"):
        k = r[kind]
        assert len(k["seconds"]) == k["rounds"] >= 1
        assert all(0 < s < 30 for s in k["seconds"])
        assert min(k["seconds"]) <= k["median_s"] <= k["p95_s"] <= k["max_s"] == max(k["seconds"])
    assert r["kill9"]["handed_over"] == 0 <= r["sigterm"]["handed_over"] <= r["sigterm"]["rounds"]


def check_scale_up(r: dict) -> None:
    assert 0 < r["first_result_s"] < 30 and 0 < r["max_workers_s"] < 30


def check_scaling(r: dict) -> None:
    assert r
    for trace in r.values():
        assert {"ours", "iterations-only", "fixed-60s", "10-min/15s", "hindsight bound"} <= set(
            trace["rows"]
        )
        assert trace["rows"]["ours"]["unfinished"] == 0
    # Many tiny jobs: sized by their overhead, the pool of cheap local workers grows past one.
    assert r["tiny / local"]["rows"]["ours"]["launches"] > 1


def check_overhead(r: dict) -> None:
    assert r["jobs"] > 0 and 0 < r["two_workers_s"] and 0 < r["one_worker_s"]
    assert r["overhead_ms"] == round(r["one_worker_s"] / r["jobs"] * 1000, 3)


def check_capacity(r: dict) -> None:
    assert set(r) == {"completed", "queued"}
    for v in r.values():
        assert v["jobs"] > 0 and len(v["rss_mb"]) == 3 and all(m > 0 for m in v["rss_mb"])
        assert 0 < v["work_by_id"]["p50_ms"] <= v["work_by_id"]["p99_ms"]
        assert 0 < v["restart_to_healthy_s"] < 30
        s = v["snapshot"]
        assert s["index"] > 0 and s["bytes"] > 0 and s["seconds"] >= 0 and s["elections"] == 0
        assert 0 < s["raft_paused_ms"] < 10_000
    assert 0 < r["completed"]["pull_top1000"]["p50_ms"] <= r["completed"]["pull_top1000"]["p99_ms"]


def check_waiters(r: dict) -> None:
    assert r["answered"] == r["waiters"] > 0 and r["all_correct"] and r["answered_early"] == 0
    assert 0 < r["rss_before_mb"] and 0 <= r["wake_p50_ms"] <= r["wake_p99_ms"] <= r["wake_max_ms"]


def check_end_to_end(r: dict) -> None:
    systems = [row["system"] for row in r["rows"]]
    assert systems[0] == "this cluster, 3 nodes" and systems[1].startswith("Celery")
    assert all(row["jobs"] == r["jobs"] and row["jobs_per_second"] > 0 for row in r["rows"])
    assert all(row["server_cpu_ms_per_job"] > 0 < row["worker_cpu_ms_per_job"] for row in r["rows"])
    assert 0 < r["compute_bound"]["ratio"] < 2


@pytest.mark.parametrize(
    "name, check, timeout",
    [
        ("kernel", check_kernel, 120),
        ("scaling", check_scaling, 120),
        ("ingest", check_ingest, 300),
        ("failover", check_failover, 300),
        ("scale-up", check_scale_up, 300),
        ("overhead", check_overhead, 300),
        ("capacity", check_capacity, 300),
        ("waiters", check_waiters, 300),
        pytest.param("end-to-end", check_end_to_end, 1800, marks=pytest.mark.slow),
    ],
)
def test_quick_run(name, check, timeout, tmp_path):
    check(run_quick(name, tmp_path, timeout))
