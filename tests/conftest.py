import pytest

from bench.cluster import Cluster


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
