"""A restarted peer is dialled again well within an election timeout.

Of two Raft nodes, only the one with the greater address opens their TCP connection. Had it
waited pysyncobj's default five seconds between attempts, a peer restarting meanwhile would
hear from no leader, stand for election and depose a working one.
"""

import time

from bench.cluster import SECRET, free_ports, wait_until
from node.config import NodeConfig, Peer
from node.replication.raft import RaftNode
from node.replication.state_machine import StateMachine
from node.storage.store import Store

ELECTION_TIMEOUT = (0.4, 1.4)  # the product's defaults
# The dialler tries every heartbeat (0.1 s); pysyncobj's default waits 5 s. The slack is for a
# loaded machine.
RECONNECTED_WITHIN = 2.5


def start(tmp_path, me, other):
    cfg = NodeConfig(
        node_id=me.replace(":", "_"),
        raft=me,
        http="127.0.0.1:1",
        peers=(Peer(other, "http://127.0.0.1:1"),),
        data_dir=str(tmp_path / me.replace(":", "_")),
        secret=SECRET,
        raft_min_timeout=ELECTION_TIMEOUT[0],
        raft_max_timeout=ELECTION_TIMEOUT[1],
    )
    (tmp_path / cfg.node_id).mkdir(exist_ok=True)
    store = Store(cfg.data_dir)
    return RaftNode(cfg, StateMachine(store)), store


def stop(node, store):
    node.destroy_synchronous()
    store.close()


def test_the_dialling_node_reaches_a_restarted_peer_at_once(tmp_path):
    dialler, listener = sorted((f"127.0.0.1:{p}" for p in free_ports(2)), reverse=True)
    a = start(tmp_path, dialler, listener)
    b = start(tmp_path, listener, dialler)
    try:
        peer = next(iter(a[0]._SyncObj__otherNodes))
        attempts = a[0]._SyncObj__transport._lastConnectAttempt
        wait_until(lambda: a[0].isNodeConnected(peer), 10, "the first connection")
        stop(*b)
        wait_until(lambda: not a[0].isNodeConnected(peer), 10, "the dialler to see the peer go")
        # It tries again at once and is refused (nothing listens): the peer comes back now.
        gone = attempts[peer]
        wait_until(lambda: attempts[peer] > gone, 10, "a refused connection attempt")
        b = start(tmp_path, listener, dialler)
        restarted = time.monotonic()
        wait_until(lambda: a[0].isNodeConnected(peer), 10, "the dialler to reconnect")
        took = time.monotonic() - restarted
        assert took < RECONNECTED_WITHIN, f"reconnected only after {took:.1f} s"
    finally:
        stop(*a)
        stop(*b)
