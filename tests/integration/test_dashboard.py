"""The dashboard at / in a real headless Chromium, against a real three-node cluster."""

import os
import shutil

import pytest
import requests

from bench.cluster import wait_until

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = (
    os.environ.get("WQ_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
# Headless, as root, and with nothing reaching outside this machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found (run_tests.sh installs Debian's chromium where "
    "apt-get is available; or set WQ_CHROMIUM)",
)


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, url, errors):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Anything the page fetched from elsewhere would be a request off this node.
    page.on(
        "request",
        lambda r: (
            None
            if r.url.startswith(url) or r.url.startswith("data:")
            else errors.append(f"outside request: {r.url}")
        ),
    )
    page.goto(url + "/")
    return page


def member_roles(page) -> list[str]:
    return page.eval_on_selector_all("#members tbody tr", "rows => rows.map(r => r.dataset.role)")


def test_the_dashboard_shows_members_and_leader_and_its_charts_move(idle_cluster, browser):
    cluster = idle_cluster  # nothing computes here (no workers)
    queued = cluster.status(0)["queue"]["queued"]  # the same on every node
    leader = cluster.wait_leader()
    follower = (leader + 1) % 3
    errors: list[str] = []
    page = open_page(browser, cluster.url(follower), errors)
    page.wait_for_function(
        "() => document.querySelectorAll('#members tbody tr').length === 3", timeout=15000
    )
    wait_until(
        lambda: sorted(member_roles(page)) == ["follower", "follower", "leader"],
        15,
        "three members with one leader",
    )
    assert page.text_content("#leader") == cluster.status(leader)["node"] == f"n{leader}"
    assert page.text_content("#node") == f"n{follower}"
    assert page.text_content("#role") == "follower"

    # The queue chart follows the queue: nothing computes here (no workers), so it rises.
    page.wait_for_function("() => Number(document.querySelector('#chart-queue').dataset.max) >= 1")
    before = page.get_attribute('#chart-queue polyline[data-series="queued"]', "points")
    for n in range(40):
        assert cluster.enqueue(n % 3, b"dashboard %d" % n, 10).status_code == 200
    page.wait_for_function(
        f"() => Number(document.querySelector('#chart-queue').dataset.max) >= {queued + 40}",
        timeout=15000,
    )
    page.wait_for_function(
        f"() => document.getElementById('queued').textContent === '{queued + 40}'"
    )
    assert page.get_attribute('#chart-queue polyline[data-series="queued"]', "points") != before
    page.wait_for_function("() => Number(document.querySelector('#chart-rate').dataset.max) > 1")

    # Job lookup by id.
    job_id = requests.put(
        cluster.url(0) + "/enqueue?iterations=5", data=b"look me up", timeout=10
    ).json()["id"]
    page.fill("#job-id", job_id)
    page.click("#lookup button")
    page.wait_for_function(
        f"() => document.getElementById('job-result').textContent.includes('{job_id}')"
    )
    assert '"status": "queued"' in page.text_content("#job-result")
    assert errors == []


def test_with_an_api_key_the_page_asks_for_it_and_then_shows_the_cluster(keyed_cluster, browser):
    cluster = keyed_cluster
    api_key = cluster.extra_env["WQ_API_KEY"]
    assert requests.get(cluster.url(0) + "/dashboard/data", timeout=5).status_code == 401
    errors: list[str] = []
    page = open_page(browser, cluster.url(0), errors)
    page.wait_for_selector("#banner.show", timeout=15000)
    page.fill("#key", api_key)
    page.click("#key-form button")
    page.wait_for_function(
        "() => document.querySelectorAll('#members tbody tr').length === 3", timeout=15000
    )
    assert page.is_hidden("#banner")
    # Before the key, the data request was refused: the only errors are those 401s.
    assert errors and all("401" in e for e in errors), errors
