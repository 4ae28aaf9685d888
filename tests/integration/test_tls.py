"""HTTPS on the public API: nodes serving a certificate from a cluster CA (`provision.ca`, the
code `provision up` uses), `wq` and the library verifying it, and clients without the CA, or
with another CA, refused. Internal routes stay plain HTTP on their own listener."""

import os
import subprocess
import sys

import pytest
import requests

from bench.cluster import expected_digest
from client import Client
from client.errors import WorkQueueError
from provision.ca import issue, new_ca
from provision.parameter import write_private


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca = new_ca("test")
    (root / "ca.pem").write_text(ca.cert)
    node = issue(ca, "work queue node", ["127.0.0.1"])
    (root / "node.pem").write_text(node.cert)
    write_private(str(root / "node.key"), node.key)
    (root / "other-ca.pem").write_text(new_ca("other").cert)
    return root


@pytest.fixture
def cluster(make_cluster, pki):
    return make_cluster(
        separate_internal=True,
        cacert=str(pki / "ca.pem"),
        tls_cert=pki / "node.pem",
        tls_key=pki / "node.key",
    )


def wq(cluster, *args, env=None):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "client",
            "--url",
            ",".join(cluster.urls),
            "--deadline",
            "10",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if k != "WQ_CACERT"}, **(env or {})},
    )


def test_nodes_serve_https_that_clients_with_the_ca_verify(cluster, pki, tmp_path):
    ca, other = str(pki / "ca.pem"), str(pki / "other-ca.pem")
    assert all(url.startswith("https://") for url in cluster.urls)
    assert requests.get(cluster.url(0) + "/healthz", verify=ca, timeout=5).status_code == 200
    # The library, with the CA: a job through HTTPS, its result checked with hashlib.
    payload = os.urandom(1000)
    with Client(cluster.urls, cacert=ca, deadline=10) as client:
        job = client.submit(payload, 100)
        cluster.start_worker("w0")
        assert job.result(timeout=60) == expected_digest(payload, 100)
    # Without the CA (the system's CAs), or with another one: refused, saying why, at once.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(cluster.url(0) + "/healthz", timeout=5)
    for cacert in (None, other):
        with Client(cluster.urls, cacert=cacert, deadline=10) as client:
            with pytest.raises(WorkQueueError, match="certificate"):
                client.submit(b"x", 1)
    # wq: --cacert, or WQ_CACERT; without, it fails naming the certificate.
    assert wq(cluster, "--cacert", ca, "status").returncode == 0
    assert wq(cluster, "status", env={"WQ_CACERT": ca}).returncode == 0
    refused = wq(cluster, "--cacert", other, "status")
    assert refused.returncode != 0 and "certificate" in refused.stderr
    missing = wq(cluster, "--cacert", str(tmp_path / "nothing.pem"), "status")
    assert missing.returncode != 0 and "cacert: cannot load" in missing.stderr
    # Plain HTTP on the public port gets no answer.
    with pytest.raises(requests.RequestException):
        requests.get(cluster.url(0).replace("https://", "http://") + "/healthz", timeout=5)
