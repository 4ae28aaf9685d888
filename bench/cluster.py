"""A real cluster for tests and benchmarks: `python -m node` processes on free ports with
temporary data directories, each in its own process group (with the local workers it starts),
torn down with SIGKILL to every group ever started."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

SECRET = "test-secret-" + "x" * 24
AUTH = {"Authorization": f"Bearer {SECRET}"}


def _ephemeral_low() -> int:
    """The first port of the range the kernel picks clients' source ports from."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_walk() -> Iterator[int]:
    """Ports below the kernel's ephemeral range, from a random start onwards, round and round.

    Not from the ephemeral range: there a killed node's port may be taken as the source port
    of some client's connection before the node restarts on it. Each process walks on, so it
    hands out a port again only after all the others; processes of one pytest-xdist run walk
    disjoint slices."""
    low, high = 10000, _ephemeral_low() - 1
    if high - low < 2000:
        low, high = 61000, 65535  # an unusual range: above it instead
    lanes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    lane = int((os.environ.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw") or 0)
    span = (high - low + 1) // max(1, lanes)
    low += span * (lane % max(1, lanes))
    start = random.randrange(span)
    while True:
        for n in range(span):
            yield low + (start + n) % span


_PORTS = _port_walk()


def free_ports(count: int, consecutive: bool = False) -> list[int]:
    """`count` ports nothing listens on (or has recently used), `consecutive` if asked."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            port = next(_PORTS)
            if consecutive and socks and port != socks[-1].getsockname()[1] + 1:
                for s in socks:
                    s.close()
                socks = []
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))  # without SO_REUSEADDR: not even in TIME_WAIT
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def expected_digest(payload: bytes, iterations: int) -> str:
    """Iterated SHA-512, computed here independently of the worker's code."""
    out = hashlib.sha512(payload).digest()
    for _ in range(iterations - 1):
        out = hashlib.sha512(out).digest()
    return out.hex()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (requests.RequestException, ValueError, KeyError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Cluster:
    def __init__(
        self,
        root: Path,
        size: int = 3,
        max_workers: int = 0,
        network=None,
        separate_internal: bool = False,
        cacert: str | None = None,
        **options,
    ):
        """`network`: a tests.chaos.netns.Network to run each node in its own namespace.
        `separate_internal`: serve internal routes on their own ports (`--internal-http`).
        With `tls_cert` among the options the public API is HTTPS, verified with `cacert`."""
        self.root = root
        self.size = size
        self.network = network
        if network is None:
            self.hosts = ["127.0.0.1"] * size
            ports = free_ports(2 * size)
            self.http, self.raft = ports[:size], ports[size:]
        else:
            self.hosts = list(network.hosts)
            self.http, self.raft = [8001] * size, [7001] * size
        self.max_workers = max_workers
        self.scheme = "https" if options.get("tls_cert") else "http"
        # How requests checks the nodes' certificates: the CA's file.
        self.verify: str | bool = cacert or True
        self.internal = free_ports(size) if separate_internal else None
        self.options = {
            "request_timeout": 5,
            "raft_min_timeout": 0.3,
            "raft_max_timeout": 0.9,
            **options,
        }
        self.procs: dict[int, subprocess.Popen] = {}
        self.groups: set[int] = set()
        self.workers: list[subprocess.Popen] = []
        self.extra_env: dict[str, str] = {}

    def url(self, i: int) -> str:
        return f"{self.scheme}://{self.hosts[i]}:{self.http[i]}"

    def raft_addr(self, i: int) -> str:
        return f"{self.hosts[i]}:{self.raft[i]}"

    def internal_url(self, i: int) -> str:
        """Where peers and workers reach node i."""
        return f"http://{self.hosts[i]}:{self.internal[i]}" if self.internal else self.url(i)

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in range(self.size)]

    def env(self) -> dict:
        return {**os.environ, "WQ_SECRET": SECRET, "PYTHONUNBUFFERED": "1", **self.extra_env}

    def start_node(self, i: int) -> None:
        peers = ",".join(
            f"{self.raft_addr(j)}={self.internal_url(j)}" for j in range(self.size) if j != i
        )
        prefix = self.network.prefix(i) if self.network else []
        args = prefix + [
            sys.executable,
            "-m",
            "node",
            "--id",
            f"n{i}",
            "--http",
            f"{self.hosts[i]}:{self.http[i]}",
            "--raft",
            self.raft_addr(i),
            "--peers",
            peers,
            "--data-dir",
            str(self.root / f"n{i}"),
            "--max-workers",
            str(self.max_workers),
        ]
        if self.internal:
            args += ["--internal-http", f"{self.hosts[i]}:{self.internal[i]}"]
        for name, value in self.options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        log = open(self.root / f"n{i}.log", "ab")
        proc = subprocess.Popen(
            args, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs[i] = proc
        self.groups.add(proc.pid)

    def start(self) -> Cluster:
        for i in range(self.size):
            self.start_node(i)
        self.wait_leader()
        return self

    def __enter__(self) -> Cluster:
        """`with Cluster(root) as c:` makes `root`, starts the nodes, and stops every process
        on the way out, also when starting fails."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def kill_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Signal the node process only (its local workers live on, as after a crash)."""
        self.signal_node(i, sig).wait(timeout=30)

    def signal_node(self, i: int, sig: int) -> subprocess.Popen:
        """Signal node i without waiting for it to exit; from now on it does not count as
        alive. Returns its process to wait on."""
        proc = self.procs.pop(i)
        proc.send_signal(sig)
        return proc

    def alive(self) -> list[int]:
        return sorted(self.procs)

    @property
    def headers(self) -> dict:
        key = self.extra_env.get("WQ_API_KEY")
        return {"X-API-Key": key} if key else {}

    def status(self, i: int) -> dict:
        return requests.get(
            self.url(i) + "/status", headers=self.headers, timeout=2, verify=self.verify
        ).json()

    def wait_leader(self, timeout: float = 20.0) -> int:
        """Index of the leader once every live node agrees on it, it is alive, and all are
        healthy."""

        def agreed():
            leaders = set()
            for i in self.alive():
                health = requests.get(self.url(i) + "/healthz", timeout=2, verify=self.verify)
                if health.status_code != 200:
                    return None
                leaders.add(self.status(i)["leader"])
            if len(leaders) == 1 and None not in leaders:
                leader = [self.raft_addr(i) for i in range(self.size)].index(leaders.pop())
                # A dead node may still be named until the others time it out.
                return str(leader) if leader in self.procs else None
            return None

        return int(wait_until(agreed, timeout, "an agreed, live leader"))

    def start_worker(
        self, worker_id: str, managers: list[str] | None = None, *extra: str
    ) -> subprocess.Popen:
        log = open(self.root / f"{worker_id}.log", "ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker",
                "--managers",
                ",".join(managers or [self.internal_url(i) for i in range(self.size)]),
                "--id",
                worker_id,
                "--idle-timeout",
                "600",
                *extra,
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.workers.append(proc)
        self.groups.add(proc.pid)
        return proc

    def stop(self) -> None:
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in list(self.procs.values()) + self.workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.root.glob("*.log"))
        )

    # --- client calls ----------------------------------------------------------------

    def enqueue(
        self, i: int, payload: bytes, iterations: int, timeout: float = 10
    ) -> requests.Response:
        return requests.put(
            f"{self.url(i)}/enqueue",
            params={"iterations": iterations},
            data=payload,
            headers=self.headers,
            timeout=timeout,
            verify=self.verify,
        )

    def job(self, i: int, job_id: str) -> dict:
        return requests.get(
            f"{self.url(i)}/work/{job_id}", headers=self.headers, timeout=5, verify=self.verify
        ).json()

    def completed(self, i: int, top: int = 1000) -> list[dict]:
        return requests.post(
            f"{self.url(i)}/pullCompleted",
            params={"top": top},
            headers=self.headers,
            timeout=5,
            verify=self.verify,
        ).json()

    def wait_completed(self, i: int, expected: dict[str, str], timeout: float = 60) -> None:
        """Wait until node i reports every job id in `expected` completed with that result."""

        def done():
            for job_id, digest in expected.items():
                job = self.job(i, job_id)
                if job.get("status") != "completed":
                    return False
                assert job["result"] == digest, f"job {job_id}: wrong result on node {i}"
            return True

        wait_until(done, timeout, f"{len(expected)} jobs completed on node {i}", interval=0.3)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (to find leftover workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry))
    return found
