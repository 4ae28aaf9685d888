import re
from pathlib import Path

import pytest

from bench.cluster import Cluster

UNIT = Path(__file__).parent / "unit"
ON_REQUEST = ("slow", "chaos")


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


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
