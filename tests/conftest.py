import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from bench.cluster import Cluster, wait_until

UNIT = Path(__file__).parent / "unit"
ON_REQUEST = ("slow", "chaos")
SHARED_API_KEY = "shared-test-api-key-" + "k" * 16
# Clusters shared by the tests of a session that neither stop nodes nor need settings of
# their own (see lend()).
SHARED = {
    # Starts no worker, so what is enqueued stays queued. Its tests start no worker and take
    # no lease: a lease or a worker would take other tests' jobs too.
    "idle": {},
    # Local workers (up to two, started by the leader) compute whatever is enqueued. Its
    # nodes log JSON lines.
    "working": {"max_workers": 2, "scale_target_seconds": 1, "log_format": "json"},
    # Clients must send the API key; one local worker.
    "keyed": {"max_workers": 1, "extra_env": {"WQ_API_KEY": SHARED_API_KEY}},
}


@pytest.fixture
def make_cluster(tmp_path, request):
    """Start clusters on demand; every one is torn down, and its logs shown if the test failed."""
    clusters = []

    def make(extra_env=None, **kwargs) -> Cluster:
        cluster = Cluster(tmp_path / f"c{len(clusters)}", **kwargs)
        cluster.extra_env = extra_env or {}
        cluster.root.mkdir()
        clusters.append(cluster)
        return cluster.start()

    yield make
    failed = getattr(request.node, "rep_call", None)
    for cluster in clusters:
        cluster.stop()
        if failed is not None and failed.failed:
            print(cluster.logs())


class SharedClusters:
    """The session's shared clusters, each started when a test first asks for it."""

    def __init__(self, root: Path):
        self.root = root
        self.clusters: dict[str, Cluster] = {}
        self.started = 0

    def get(self, name: str) -> Cluster:
        if name not in self.clusters:
            options = dict(SHARED[name])
            extra_env = options.pop("extra_env", {})
            self.started += 1
            cluster = Cluster(self.root / f"{name}-{self.started}", **options)
            cluster.extra_env = extra_env
            cluster.root.mkdir()
            self.clusters[name] = cluster
            try:
                cluster.start()
            except BaseException:
                self.discard(name)
                raise
        return self.clusters[name]

    def discard(self, name: str) -> None:
        """Stop a shared cluster; the next test that asks for it gets a new one."""
        cluster = self.clusters.pop(name, None)
        if cluster is not None:
            cluster.stop()

    def stop(self) -> None:
        for name in list(self.clusters):
            self.discard(name)


@pytest.fixture(scope="session")
def shared_clusters(tmp_path_factory):
    shared = SharedClusters(tmp_path_factory.mktemp("shared"))
    try:
        yield shared
    finally:
        shared.stop()


def settle(cluster: Cluster, empty: bool) -> None:
    """Wait until every node agrees on a leader and on the queue's counts, and nothing runs
    (with `empty`, nothing is queued either): what one test did is over before the next."""

    def settled():
        queues = [cluster.status(i)["queue"] for i in range(cluster.size)]
        first = queues[0]
        return (
            all(q == first for q in queues)
            and first["running"] == 0
            and (first["queued"] == 0 or not empty)
        )

    cluster.wait_leader()
    wait_until(settled, 60, "the shared cluster to settle", interval=0.2)


def stop_workers(cluster: Cluster, procs: list[subprocess.Popen]) -> None:
    """Stop workers a test started: SIGTERM first, so they give their leases back at once,
    then SIGKILL for any that lingers."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        cluster.groups.discard(proc.pid)
        cluster.workers.remove(proc)


def lend(shared: SharedClusters, name: str, request):
    """Lend a shared cluster to one test. The test must not stop or signal nodes, and must not
    depend on other tests' jobs: it counts before and after, and looks at its own job ids.
    Workers it starts are stopped after it; a node that exited fails it, and the next test
    gets a new cluster."""
    cluster = shared.get(name)
    try:
        settle(cluster, empty=name != "idle")
    except AssertionError:
        print(cluster.logs())
        shared.discard(name)
        raise
    before = len(cluster.workers)
    yield cluster
    stop_workers(cluster, cluster.workers[before:])
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(cluster.logs())
    exited = [i for i in range(cluster.size) if i not in cluster.procs]
    exited += [i for i, proc in cluster.procs.items() if proc.poll() is not None]
    if exited:
        shared.discard(name)
        pytest.fail(
            f"nodes {sorted(exited)} of the shared {name!r} cluster stopped during the test"
        )


@pytest.fixture
def idle_cluster(shared_clusters, request):
    """A shared three-node cluster with default settings that starts no worker (see SHARED)."""
    yield from lend(shared_clusters, "idle", request)


@pytest.fixture
def working_cluster(shared_clusters, request):
    """A shared three-node cluster whose leader runs up to two local workers, logging JSON."""
    yield from lend(shared_clusters, "working", request)


@pytest.fixture
def keyed_cluster(shared_clusters, request):
    """A shared three-node cluster whose public API needs SHARED_API_KEY, with one local
    worker."""
    yield from lend(shared_clusters, "keyed", request)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Benchmarks that measure, and the long simulator run, are slow tests: when the -m
    expression selects them, the tests run in this one process, one after another, so that no
    other test shares the machine with a measurement (setup.cfg asks pytest-xdist for two)."""
    if config.pluginmanager.hasplugin("xdist") and selects_slow(config.getoption("markexpr")):
        config.option.dist = "no"
        config.option.numprocesses = 0
        config.option.tx = []


def selects_slow(expression: str | None) -> bool:
    """Whether slow tests run under this -m expression (see pytest_collection_modifyitems)."""
    if not (expression or "").strip():
        return True
    if "slow" not in re.findall(r"\w+", expression):
        return False
    return Expression.compile(expression).evaluate(lambda name, **_: name == "slow")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every test under tests/unit is in the fast `unit` tier (`-m unit`).

    Slow and chaos tests run only when the -m expression names their marker (or is empty:
    no selection at all). setup.cfg's addopts says `-m "not slow and not chaos"`, but a later
    -m, such as `-m unit`, replaces it and must not bring them back."""
    for item in items:
        if item.path.is_relative_to(UNIT):
            item.add_marker(pytest.mark.unit)
    expression = config.getoption("markexpr") or ""
    if not expression.strip():
        return
    named = set(re.findall(r"\w+", expression))
    kept, dropped = [], []
    for item in items:
        hidden = any(item.get_closest_marker(m) and m not in named for m in ON_REQUEST)
        (dropped if hidden else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
