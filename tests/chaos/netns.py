"""Test hosts in network namespaces of our own, for real network partitions.

Topology: one namespace per node (10.231.N.2), each joined by a veth pair to a router namespace
(10.231.N.1), and the router joined to the test's own namespace (10.231.100.1 <-> .2), so the
test reaches every node. A partition is a pair of `blackhole` policy rules in the router
between two nodes' subnets: the nodes lose each other while the clients still reach both.
Everything lives in namespaces created here; teardown deletes them (and with them every veth)
and the one route added to the test's namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

SUBNET = "10.231"
CLIENT_SIDE = f"{SUBNET}.100.1"
ROUTER_SIDE = f"{SUBNET}.100.2"


def unavailable_reason() -> str | None:
    """Why partitions cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    probe = f"wqprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def run(*args: str, ns: str | None = None) -> None:
    """Run a command, inside namespace `ns` when given; raise with its stderr on failure."""
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")


class Network:
    def __init__(self, size: int):
        self.size = size
        self.tag = f"wq{uuid.uuid4().hex[:5]}"
        self.router = f"{self.tag}r"
        self.nodes = [f"{self.tag}n{i}" for i in range(size)]
        self.hosts = [f"{SUBNET}.{i}.2" for i in range(size)]
        self._rules: set[tuple[int, int]] = set()

    def up(self) -> Network:
        try:
            self._build()
        except Exception:
            self.down()
            raise
        return self

    def _build(self) -> None:
        host_if, router_if = f"{self.tag}h", f"{self.tag}hr"
        run("ip", "netns", "add", self.router)
        run("ip", "link", "set", "lo", "up", ns=self.router)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.router)
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", router_if)
        run("ip", "link", "set", router_if, "netns", self.router)
        run("ip", "addr", "add", f"{CLIENT_SIDE}/24", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "addr", "add", f"{ROUTER_SIDE}/24", "dev", router_if, ns=self.router)
        run("ip", "link", "set", router_if, "up", ns=self.router)
        # A run killed mid-test may have left its route behind; it points nowhere now.
        subprocess.run(["ip", "route", "del", f"{SUBNET}.0.0/20"], capture_output=True)
        run("ip", "route", "add", f"{SUBNET}.0.0/20", "via", ROUTER_SIDE)
        for i, ns in enumerate(self.nodes):
            node_if, peer_if = f"{self.tag}v{i}", f"{self.tag}p{i}"
            run("ip", "netns", "add", ns)
            run("ip", "link", "set", "lo", "up", ns=ns)
            run("ip", "link", "add", node_if, "type", "veth", "peer", "name", peer_if)
            run("ip", "link", "set", node_if, "netns", ns)
            run("ip", "link", "set", peer_if, "netns", self.router)
            run("ip", "addr", "add", f"{self.hosts[i]}/24", "dev", node_if, ns=ns)
            run("ip", "link", "set", node_if, "up", ns=ns)
            run("ip", "route", "add", "default", "via", f"{SUBNET}.{i}.1", ns=ns)
            run("ip", "addr", "add", f"{SUBNET}.{i}.1/24", "dev", peer_if, ns=self.router)
            run("ip", "link", "set", peer_if, "up", ns=self.router)

    def prefix(self, i: int) -> list[str]:
        """Command prefix that runs a program inside node i's namespace."""
        return ["ip", "netns", "exec", self.nodes[i]]

    def cut(self, a: int, b: int) -> None:
        """Drop all traffic between nodes a and b, both ways."""
        for src, dst in ((a, b), (b, a)):
            run(
                "ip",
                "rule",
                "add",
                "from",
                f"{SUBNET}.{src}.0/24",
                "to",
                f"{SUBNET}.{dst}.0/24",
                "blackhole",
                ns=self.router,
            )
            self._rules.add((src, dst))

    def isolate(self, i: int) -> None:
        """Cut node i from every other node; clients still reach it."""
        for other in range(self.size):
            if other != i:
                self.cut(i, other)

    def heal(self) -> None:
        for src, dst in sorted(self._rules):
            run(
                "ip",
                "rule",
                "del",
                "from",
                f"{SUBNET}.{src}.0/24",
                "to",
                f"{SUBNET}.{dst}.0/24",
                "blackhole",
                ns=self.router,
            )
        self._rules.clear()

    def down(self) -> None:
        subprocess.run(
            ["ip", "route", "del", f"{SUBNET}.0.0/20", "via", ROUTER_SIDE], capture_output=True
        )
        for ns in self.nodes + [self.router]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{self.tag}h"], capture_output=True)
