"""Prometheus metrics of one node (`GET /metrics`), through prometheus-client.

Job counters and the queue-wait and compute-time histograms follow this node's replica of the
state machine: every node applies every entry, so each reports the whole cluster's totals
(query them with max(), not sum()), counted since the node started. Enqueue latency and
payload bytes are what this node itself served and sent. Gauges are read when scraped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node.replication.state_machine import JobEvent

if TYPE_CHECKING:
    from node.replication.raft import RaftNode
    from node.scaling.loop import Scaler

CONTENT_TYPE = CONTENT_TYPE_LATEST
# The text format would show every counter's creation time as a gauge of its own.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus-client
ROLES = ("leader", "follower", "candidate")
WORKER_STATES = ("busy", "idle", "booting")
# Seconds: enqueue latency is milliseconds to seconds; waits and compute span up to hours.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU seconds, ...
        self.jobs = {
            kind: Counter(
                f"wq_jobs_{kind}",
                f"Jobs {kind} (cluster-wide, applied on this node since it started).",
                registry=r,
            )
            for kind in ("enqueued", "leased", "requeued", "completed", "failed")
        }
        self.enqueue_seconds = Histogram(
            "wq_enqueue_duration_seconds",
            "Time to acknowledge an enqueue (one job, or a batch) served by this node.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "wq_job_queue_wait_seconds",
            "Time from enqueue to lease, per lease.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "wq_job_compute_seconds",
            "Time from lease to completion, per completed job.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.payload_bytes = Counter(
            "wq_payload_replicated_bytes",
            "Payload bytes this node copied to its peers.",
            registry=r,
        )
        self.leader_changes = Counter(
            "wq_raft_leader_changes",
            "Times this node saw the Raft leader change (checked every second).",
            registry=r,
        )
        self.waiting = Gauge(
            "wq_waiting_requests",
            "Requests on this node waiting for a job to finish or for the completion feed.",
            registry=r,
        )
        # Set by the /metrics handler before rendering (reading it may need the database).
        self.worker_states: dict[str, int] = {}
        # The job counters as plain numbers, for the dashboard's rates.
        self.totals: dict[str, int] = {kind: 0 for kind in self.jobs}

    def attach(
        self, counts: Callable[[], dict[str, int]], raft: RaftNode, scaler: Scaler | None
    ) -> None:
        """Add the gauges read when scraped: queue counts, Raft state, scaling."""
        self.registry.register(_NodeCollector(counts, raft, scaler, self))

    def job_events(self, events: list[JobEvent]) -> None:
        """State machine hook (tick thread; prometheus-client is thread-safe)."""
        counts: dict[str, int] = {}
        for e in events:
            counts[e.kind] = counts.get(e.kind, 0) + 1
            if e.seconds is not None:
                if e.kind == "leased":
                    self.queue_wait.observe(e.seconds)
                elif e.kind == "completed":
                    self.compute.observe(e.seconds)
        totals = dict(self.totals)
        for kind, n in counts.items():
            self.jobs[kind].inc(n)
            totals[kind] += n
        self.totals = totals  # replaced whole: read from the event loop

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NodeCollector:
    def __init__(
        self,
        counts: Callable[[], dict[str, int]],
        raft: RaftNode,
        scaler: Scaler | None,
        metrics: Metrics,
    ):
        self._counts = counts
        self._raft = raft
        self._scaler = scaler
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        counts = self._counts()
        for status in ("queued", "running"):
            yield GaugeMetricFamily(
                f"wq_jobs_{status}", f"Jobs {status} now.", value=counts[status]
            )
        yield GaugeMetricFamily(
            "wq_backlog_iterations",
            "SHA-512 iterations of the queued and running jobs.",
            value=counts["backlog_iterations"],
        )
        role = GaugeMetricFamily(
            "wq_raft_role", "1 for this node's current Raft role.", labels=["role"]
        )
        for name in ROLES:
            role.add_metric([name], 1 if self._raft.role == name else 0)
        yield role
        raft = self._raft
        for name, value, text in (
            ("term", raft.term, "Current Raft term."),
            ("commit_index", raft.commit_index, "Highest log index known committed."),
            ("applied_index", raft.last_applied, "Highest log index applied here."),
        ):
            yield GaugeMetricFamily(f"wq_raft_{name}", text, value=value)
        workers = GaugeMetricFamily(
            "wq_workers",
            "Workers by state (as the leader sees them; "
            "other nodes: from the replicated list, no booting).",
            labels=["state"],
        )
        for state in WORKER_STATES:
            workers.add_metric([state], self._metrics.worker_states.get(state, 0))
        yield workers
        scaler = self._scaler
        if scaler is not None:
            actions = CounterMetricFamily(
                "wq_scaling_decisions",
                "Scaling steps by outcome (launch, hold, terminate), while this node led.",
                labels=["action"],
            )
            for action in ("launch", "hold", "terminate"):
                actions.add_metric([action], scaler.actions[action])
            yield actions
            launches = CounterMetricFamily(
                "wq_worker_launches", "Workers this node launched.", labels=["backend"]
            )
            launches.add_metric([scaler.backend.name], scaler.launches)
            yield launches
            yield GaugeMetricFamily(
                "wq_worker_boot_failures",
                "Workers in a row that never registered; launches wait while above zero.",
                value=scaler.boot_failures,
            )
            yield GaugeMetricFamily(
                "wq_worker_launch_wait_seconds",
                "Seconds until the next launch is allowed after boot failures.",
                value=max(0.0, scaler.retry_at - time.time()),
            )
