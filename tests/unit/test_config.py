"""Configuration: flags and environment, and validation that names the bad field."""

import pytest

from node.config import NodeConfig, Peer, load_config
from node.errors import ConfigError
from node.replication.syncobj import SyncObjConf

SECRET = "s" * 32
BASE = [
    "--raft",
    "127.0.0.1:7001",
    "--http",
    "127.0.0.1:8001",
    "--data-dir",
    "/tmp/x",
    "--peers",
    "127.0.0.1:7002=http://127.0.0.1:8002,127.0.0.1:7003=http://127.0.0.1:8003",
]

EC2 = [
    "--max-workers",
    "2",
    "--backend",
    "ec2",
    "--ec2-secret-parameter",
    "/wq/x/secret",
    "--ec2-ami",
    "ami-1",
]


def test_flags_and_environment_fill_the_config():
    cfg = load_config(
        BASE + ["--max-workers", "4"], {"WQ_SECRET": SECRET, "WQ_LEASE_TIMEOUT": "12.5"}
    )
    assert cfg.max_workers == 4
    assert cfg.lease_timeout == 12.5
    assert cfg.node_id == "127.0.0.1:7001"
    assert cfg.url == "http://127.0.0.1:8001"
    assert cfg.peers[0] == Peer("127.0.0.1:7002", "http://127.0.0.1:8002")
    assert cfg.majority == 2


def test_a_flag_wins_over_the_environment():
    cfg = load_config(BASE + ["--max-attempts", "7"], {"WQ_SECRET": SECRET, "WQ_MAX_ATTEMPTS": "2"})
    assert cfg.max_attempts == 7


def test_the_secret_can_come_from_a_file(tmp_path):
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n")
    assert load_config(BASE + ["--secret-file", str(f)], {}).secret == SECRET


def test_the_secret_never_shows_in_the_repr():
    cfg = load_config(BASE, {"WQ_SECRET": SECRET})
    assert SECRET not in repr(cfg)


@pytest.mark.parametrize(
    "argv,env,field",
    [
        (BASE, {}, "secret"),
        (BASE, {"WQ_SECRET": "short"}, "secret"),
        (BASE[2:], {"WQ_SECRET": SECRET}, "raft"),
        (["--raft", "127.0.0.1:7001", "--data-dir", "/x"], {"WQ_SECRET": SECRET}, "http"),
        (BASE[:4] + BASE[6:], {"WQ_SECRET": SECRET}, "data_dir"),
        (BASE + ["--max-iterations", "0"], {"WQ_SECRET": SECRET}, "max_iterations"),
        (BASE + ["--max-body-bytes", "0"], {"WQ_SECRET": SECRET}, "max_body_bytes"),
        (BASE + ["--request-timeout", "0.1"], {"WQ_SECRET": SECRET}, "request_timeout"),
        (BASE + ["--max-attempts", "0"], {"WQ_SECRET": SECRET}, "max_attempts"),
        (BASE + ["--min-workers", "3", "--max-workers", "2"], {"WQ_SECRET": SECRET}, "min_workers"),
        (BASE + ["--max-workers", "1000"], {"WQ_SECRET": SECRET}, "max_workers"),
        (
            BASE + ["--raft-min-timeout", "2", "--raft-max-timeout", "1"],
            {"WQ_SECRET": SECRET},
            "raft_min_timeout",
        ),
        (BASE + ["--log-level", "LOUD"], {"WQ_SECRET": SECRET}, "log_level"),
        (BASE + ["--log-format", "xml"], {"WQ_SECRET": SECRET}, "log_format"),
        (BASE, {"WQ_SECRET": SECRET, "WQ_LOG_FORMAT": "JSON"}, "log_format"),
        (BASE + ["--url", "ftp://x"], {"WQ_SECRET": SECRET}, "url"),
        (BASE[:6] + ["--peers", "127.0.0.1:7002"], {"WQ_SECRET": SECRET}, "peers"),
        (BASE[:6] + ["--peers", "127.0.0.1:7001=http://a:1"], {"WQ_SECRET": SECRET}, "peers"),
        (BASE[:6] + ["--peers", "h:99999=http://a:1"], {"WQ_SECRET": SECRET}, "peers"),
        (
            ["--raft", "nohost", "--http", "127.0.0.1:8001", "--data-dir", "/x"],
            {"WQ_SECRET": SECRET},
            "raft",
        ),
        (BASE, {"WQ_SECRET": SECRET, "WQ_MAX_QUEUED": "lots"}, "max_queued"),
        (BASE + ["--secret-file", "/nonexistent/secret"], {}, "secret_file"),
        (BASE + EC2[:-2], {"WQ_SECRET": SECRET}, "ec2_ami"),
        (BASE + EC2, {"WQ_SECRET": SECRET}, "ec2_package"),
        (BASE + EC2 + ["--ec2-package", "s3://bkt/pkg.zip"], {"WQ_SECRET": SECRET}, "ec2_package"),
        (
            BASE + EC2[:4] + EC2[-2:] + ["--ec2-package", "s3://bkt/k.whl"],
            {"WQ_SECRET": SECRET},
            "ec2_secret_parameter",
        ),
    ],
)
def test_invalid_settings_are_refused_naming_the_field(argv, env, field):
    with pytest.raises(ConfigError) as e:
        load_config(argv, env)
    assert str(e.value).startswith(field + ":")


def test_an_ec2_backend_takes_its_package_and_secret_parameter():
    cfg = load_config(
        BASE + EC2 + ["--ec2-package", "s3://wq-b/packages/0a/x-0.1-py3-none-any.whl"],
        {"WQ_SECRET": SECRET},
    )
    assert cfg.ec2_package.endswith("x-0.1-py3-none-any.whl")
    assert cfg.ec2_secret_parameter == "/wq/x/secret"


def test_range_errors_state_the_allowed_range():
    with pytest.raises(
        ConfigError,
        match=r"max_attempts: 0 is out of range, allowed 1 to 100 "
        r"\(--max-attempts or WQ_MAX_ATTEMPTS\)",
    ):
        load_config(BASE + ["--max-attempts", "0"], {"WQ_SECRET": SECRET})


def pysyncobj_accepts(min_timeout: float, max_timeout: float) -> bool:
    """What SyncObjConf.validate() says of the timings node/replication/raft.py passes it."""
    try:
        SyncObjConf(
            raftMinTimeout=min_timeout,
            raftMaxTimeout=max_timeout,
            appendEntriesPeriod=min(0.1, min_timeout / 4),
        ).validate()
    except AssertionError:
        return False
    return True


# (--raft-min-timeout, --raft-max-timeout, the field refused or None, the message's range)
RAFT_TIMEOUTS = [
    (0.4, 1.4, None, None),
    (0.1, 0.2, None, None),
    (0.3, 0.9, None, None),
    (0.4, 3.5, None, None),
    (3.4, 3.5, None, None),
    (0.4, 3.6, "raft_max_timeout", "allowed 0.1 to 3.5"),
    (0.4, 5, "raft_max_timeout", "allowed 0.1 to 3.5"),
    (0.4, 60, "raft_max_timeout", "allowed 0.1 to 3.5"),
    (0.4, float("inf"), "raft_max_timeout", "allowed 0.1 to 3.5"),
    (0.4, float("nan"), "raft_max_timeout", "allowed 0.1 to 3.5"),
    (0.05, 1.4, "raft_min_timeout", "allowed 0.1 to 3.5"),
    (0, 1.4, "raft_min_timeout", "allowed 0.1 to 3.5"),
    (-1, 1.4, "raft_min_timeout", "allowed 0.1 to 3.5"),
    (4, 5, "raft_min_timeout", "allowed 0.1 to 3.5"),
    (0.4, 0, "raft_max_timeout", "allowed 0.1 to 3.5"),
    (0.4, 0.4, "raft_min_timeout", "allowed 0.1 to below raft_max_timeout (0.4)"),
    (0.4, 0.3, "raft_min_timeout", "allowed 0.1 to below raft_max_timeout (0.3)"),
    (2, 1.4, "raft_min_timeout", "allowed 0.1 to below raft_max_timeout (1.4)"),
    (3.5, 3.5, "raft_min_timeout", "allowed 0.1 to below raft_max_timeout (3.5)"),
]


@pytest.mark.parametrize("min_timeout, max_timeout, field, allowed", RAFT_TIMEOUTS)
def test_raft_timeouts_pysyncobj_would_refuse_are_refused_up_front(
    min_timeout, max_timeout, field, allowed
):
    argv = BASE + ["--raft-min-timeout", str(min_timeout), "--raft-max-timeout", str(max_timeout)]
    if field is None:
        cfg = load_config(argv, {"WQ_SECRET": SECRET})
        assert pysyncobj_accepts(cfg.raft_min_timeout, cfg.raft_max_timeout)
        return
    with pytest.raises(ConfigError) as e:
        load_config(argv, {"WQ_SECRET": SECRET})
    message = str(e.value)
    assert message.startswith(field + ":") and allowed in message
    assert f"--{field.replace('_', '-')}" in message


@pytest.mark.parametrize("max_timeout", [3.5, 3.5000001, 3.6, 4, 10])
def test_the_raft_max_timeout_limit_is_pysyncobjs(max_timeout):
    accepted = True
    try:
        load_config(BASE + ["--raft-max-timeout", str(max_timeout)], {"WQ_SECRET": SECRET})
    except ConfigError:
        accepted = False
    assert accepted == pysyncobj_accepts(0.4, max_timeout)


def test_defaults_are_valid():
    NodeConfig(
        node_id="n",
        raft="h:1",
        http="h:2",
        peers=(),
        data_dir="/d",
        secret=SECRET,
        url="http://h:2",
    ).validate()
