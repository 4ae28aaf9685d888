"""Imports point one way, and only the Raft adapter speaks pysyncobj (tests/layering.py)."""

import ast

import pytest

from tests import layering

pytestmark = pytest.mark.unit


def test_the_tree_keeps_its_layering():
    assert [str(v) for v in layering.violations()] == []


@pytest.mark.parametrize(
    "module, source",
    [
        ("worker.runner", "from node.errors import InvalidInput"),
        ("client.commands", "from worker.compute import iterate_sha512"),
        ("protocol.wire", "import node.errors"),
        ("node.http.public", "from node.replication import commands as c"),
        ("node.http.internal", "from node.app import Node"),
        ("node.storage.store", "from node.replication.state_machine import StateMachine"),
        ("node.replication.proposer", "from node.scheduling.leases import Scheduler"),
        ("node.scaling.loop", "from node.service import NodeService"),
        ("node.service", "from node.http.server import serve"),
        ("node.service", "from node.replication.syncobj import FAIL_REASON"),
        ("node.replication.handover", "import pysyncobj"),
        ("provision.up", "from node.service import NodeService"),
        ("bench.ingest", "from tests.conftest import make_cluster"),
    ],
)
def test_a_wrong_import_is_reported(module, source):
    found = layering.check_imports(module, "x.py", ast.parse(source))
    assert len(found) >= 1 and module in str(found[0])


@pytest.mark.parametrize(
    "module, source",
    [
        ("worker.runner", "from protocol.wire import decode_batch"),
        ("node.http.public", "from node.http.params import only_params"),
        ("node.service", "from node.replication.raft import RaftNode"),
        ("node.replication.raft", "from node.replication.syncobj import SyncObj"),
        ("node.app", "from node.http.server import serve"),
        ("provision.up", "from node.scaling.backends.userdata import manager_script"),
        ("tests.sim.world", "from pysyncobj.transport import Transport"),
    ],
)
def test_an_allowed_import_passes(module, source):
    assert layering.check_imports(module, "x.py", ast.parse(source)) == []


def test_pysyncobj_names_outside_the_adapter_are_reported():
    forbidden = layering.syncobj_names()
    assert {"_isLeader", "forceLogCompaction", "raftCommitIndex"} <= forbidden
    assert "is_leader" not in forbidden and "compact" not in forbidden
    bad = ast.parse("if raft._isLeader(): raft.forceLogCompaction()")
    found = layering.check_adapter_names("node.service", "x.py", bad, forbidden)
    assert [v.text.split("pysyncobj's ")[1].split(";")[0] for v in found] == [
        "_isLeader",
        "forceLogCompaction",
    ]
    fine = ast.parse("if raft.is_leader(): raft.compact()")
    assert layering.check_adapter_names("node.service", "x.py", fine, forbidden) == []
