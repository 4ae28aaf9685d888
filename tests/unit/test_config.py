"""Configuration: flags and environment, and validation that names the bad field."""

from dataclasses import MISSING, fields

import pytest

from node.config import NodeConfig, Peer, build_parser, load_config
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
        (BASE + ["--ec2-relaunch-managers", "on"], {"WQ_SECRET": SECRET}, "ec2_relaunch_managers"),
        (BASE + ["--tls-cert", "/x.pem"], {"WQ_SECRET": SECRET}, "tls_cert"),
        (BASE + ["--tls-cert", "/x.pem", "--tls-key", "/x.key"], {"WQ_SECRET": SECRET}, "tls_cert"),
        (
            BASE + ["--tls-cert", "/x.pem", "--tls-key", "/x.key", "--internal-http", "h:9"],
            {"WQ_SECRET": SECRET},
            "tls_cert",
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


# Every option's flag, argparse dest and environment variable, as deployments and scripts use
# them: the names are derived from the fields, and must not drift.
NAMES = [
    ("node_id", "--id", "node_id", "WQ_NODE_ID"),
    ("raft", "--raft", "raft", "WQ_RAFT"),
    ("http", "--http", "http", "WQ_HTTP"),
    ("peers", "--peers", "peers", "WQ_PEERS"),
    ("data_dir", "--data-dir", "data_dir", "WQ_DATA_DIR"),
    ("secret", "--secret-file", "secret_file", "WQ_SECRET_FILE"),
    ("api_key", "--api-key-file", "api_key_file", "WQ_API_KEY_FILE"),
    ("url", "--url", "url", "WQ_URL"),
    ("internal_http", "--internal-http", "internal_http", "WQ_INTERNAL_HTTP"),
    ("tls_cert", "--tls-cert", "tls_cert", "WQ_TLS_CERT"),
    ("tls_key", "--tls-key", "tls_key", "WQ_TLS_KEY"),
    ("max_iterations", "--max-iterations", "max_iterations", "WQ_MAX_ITERATIONS"),
    ("max_body_bytes", "--max-body-bytes", "max_body_bytes", "WQ_MAX_BODY_BYTES"),
    ("max_batch_jobs", "--max-batch-jobs", "max_batch_jobs", "WQ_MAX_BATCH_JOBS"),
    ("max_batch_bytes", "--max-batch-bytes", "max_batch_bytes", "WQ_MAX_BATCH_BYTES"),
    ("max_queued", "--max-queued", "max_queued", "WQ_MAX_QUEUED"),
    ("max_finished", "--max-finished", "max_finished", "WQ_MAX_FINISHED"),
    ("idempotency_window", "--idempotency-window", "idempotency_window", "WQ_IDEMPOTENCY_WINDOW"),
    ("request_timeout", "--request-timeout", "request_timeout", "WQ_REQUEST_TIMEOUT"),
    ("max_wait", "--max-wait", "max_wait", "WQ_MAX_WAIT"),
    (
        "idle_connection_timeout",
        "--idle-connection-timeout",
        "idle_connection_timeout",
        "WQ_IDLE_CONNECTION_TIMEOUT",
    ),
    ("lease_timeout", "--lease-timeout", "lease_timeout", "WQ_LEASE_TIMEOUT"),
    ("max_attempts", "--max-attempts", "max_attempts", "WQ_MAX_ATTEMPTS"),
    ("min_workers", "--min-workers", "min_workers", "WQ_MIN_WORKERS"),
    ("max_workers", "--max-workers", "max_workers", "WQ_MAX_WORKERS"),
    (
        "worker_idle_timeout",
        "--worker-idle-timeout",
        "worker_idle_timeout",
        "WQ_WORKER_IDLE_TIMEOUT",
    ),
    ("backend", "--backend", "backend", "WQ_BACKEND"),
    (
        "scale_target_seconds",
        "--scale-target-seconds",
        "scale_target_seconds",
        "WQ_SCALE_TARGET_SECONDS",
    ),
    (
        "max_launches_per_minute",
        "--max-launches-per-minute",
        "max_launches_per_minute",
        "WQ_MAX_LAUNCHES_PER_MINUTE",
    ),
    ("boot_timeout", "--boot-timeout", "boot_timeout", "WQ_BOOT_TIMEOUT"),
    ("cluster_name", "--cluster-name", "cluster_name", "WQ_CLUSTER_NAME"),
    ("ec2_region", "--ec2-region", "ec2_region", "WQ_EC2_REGION"),
    ("ec2_ami", "--ec2-ami", "ec2_ami", "WQ_EC2_AMI"),
    ("ec2_instance_type", "--ec2-instance-type", "ec2_instance_type", "WQ_EC2_INSTANCE_TYPE"),
    (
        "ec2_instance_profile",
        "--ec2-instance-profile",
        "ec2_instance_profile",
        "WQ_EC2_INSTANCE_PROFILE",
    ),
    ("ec2_subnet", "--ec2-subnet", "ec2_subnet", "WQ_EC2_SUBNET"),
    (
        "ec2_security_groups",
        "--ec2-security-groups",
        "ec2_security_groups",
        "WQ_EC2_SECURITY_GROUPS",
    ),
    ("ec2_package", "--ec2-package", "ec2_package", "WQ_EC2_PACKAGE"),
    (
        "ec2_secret_parameter",
        "--ec2-secret-parameter",
        "ec2_secret_parameter",
        "WQ_EC2_SECRET_PARAMETER",
    ),
    (
        "ec2_relaunch_managers",
        "--ec2-relaunch-managers",
        "ec2_relaunch_managers",
        "WQ_EC2_RELAUNCH_MANAGERS",
    ),
    ("ec2_start_cost", "--ec2-start-cost", "ec2_start_cost", "WQ_EC2_START_COST"),
    (
        "log_compaction_entries",
        "--log-compaction-entries",
        "log_compaction_entries",
        "WQ_LOG_COMPACTION_ENTRIES",
    ),
    ("raft_min_timeout", "--raft-min-timeout", "raft_min_timeout", "WQ_RAFT_MIN_TIMEOUT"),
    ("raft_max_timeout", "--raft-max-timeout", "raft_max_timeout", "WQ_RAFT_MAX_TIMEOUT"),
    ("fsync", "--fsync", "fsync", "WQ_FSYNC"),
    ("log_level", "--log-level", "log_level", "WQ_LOG_LEVEL"),
    ("log_format", "--log-format", "log_format", "WQ_LOG_FORMAT"),
    ("log_file", "--log-file", "log_file", "WQ_LOG_FILE"),
]

# (field, allowed range, values just inside, values just outside, other flags the inside values
# need to pass the rules across fields)
RANGES = [
    ("max_iterations", (1, 2**31 - 1), ["1", "2147483647"], ["0", "2147483648"], []),
    ("max_body_bytes", (1, 64 << 20), ["1", "67108864"], ["0", "67108865"], []),
    ("max_batch_jobs", (1, 4096), ["1", "4096"], ["0", "4097"], []),
    ("max_batch_bytes", (1, 1 << 30), ["1", "1073741824"], ["0", "1073741825"], []),
    ("max_queued", (1, 10**8), ["1", "100000000"], ["0", "100000001"], []),
    ("max_finished", (1, 10**9), ["1", "1000000000"], ["0", "1000000001"], []),
    ("idempotency_window", (60, 30 * 86400), ["60", "2592000"], ["59.9", "2592000.1"], []),
    ("request_timeout", (0.5, 300), ["0.5", "300"], ["0.49", "300.01"], []),
    ("max_wait", (0, 3600), ["0", "3600"], ["-0.01", "3600.01"], []),
    ("idle_connection_timeout", (1, 3600), ["1", "3600"], ["0.99", "3600.01"], []),
    ("lease_timeout", (1, 3600), ["1", "3600"], ["0.99", "3600.01"], []),
    ("max_attempts", (1, 100), ["1", "100"], ["0", "101"], []),
    ("min_workers", (0, 256), ["0", "256"], ["-1", "257"], ["--max-workers", "256"]),
    ("max_workers", (0, 256), ["0", "256"], ["-1", "257"], []),
    ("worker_idle_timeout", (1, 86400), ["1", "86400"], ["0.99", "86400.01"], []),
    ("scale_target_seconds", (0, 3600), ["0", "3600"], ["-0.01", "3600.01"], []),
    ("max_launches_per_minute", (1, 1000), ["1", "1000"], ["0", "1001"], []),
    ("boot_timeout", (10, 3600), ["10", "3600"], ["9.99", "3600.01"], []),
    ("ec2_start_cost", (0, 3600), ["0", "3600"], ["-0.01", "3600.01"], []),
    ("log_compaction_entries", (10, 10**7), ["10", "10000000"], ["9", "10000001"], []),
    (
        "raft_min_timeout",
        (0.1, 3.5),
        ["0.1", "3.49"],
        ["0.09", "3.51"],
        ["--raft-max-timeout", "3.5"],
    ),
    (
        "raft_max_timeout",
        (0.1, 3.5),
        ["0.11", "3.5"],
        ["0.09", "3.51"],
        ["--raft-min-timeout", "0.1"],
    ),
]

# (field, values allowed, a value refused)
CHOICES = [
    ("backend", ["local", "ec2"], "lambda"),
    ("fsync", ["on", "off"], "ON"),
    ("log_level", ["DEBUG", "INFO", "WARNING", "ERROR", "debug", "Warning"], "TRACE"),
    ("log_format", ["text", "json"], "JSON"),
]

FLAG = {name: flag for name, flag, _, _ in NAMES}
ENV = {name: env for name, _, _, env in NAMES}
NUMBER = {f.name: {"int": int, "float": float}.get(str(f.type)) for f in fields(NodeConfig)}


def test_every_field_keeps_its_flag_dest_and_variable():
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert [f.name for f in fields(NodeConfig)] == [name for name, _, _, _ in NAMES]
    for _, flag, dest, env in NAMES:
        assert actions[dest].option_strings == [flag]
        assert f"({env}" in actions[dest].help


def test_help_names_each_variable_and_default():
    text = " ".join(build_parser().format_help().split())
    for env in ENV.values():
        assert env in text, env
    for f in fields(NodeConfig):
        if f.default not in ("", MISSING):
            assert f"{ENV[f.name]}; default: {f.default})" in text, f.name
    assert "or the value itself in WQ_SECRET" in text
    assert "WQ_API_KEY_FILE, or the value itself in WQ_API_KEY" in text
    assert "allowed 1 to 100 (WQ_MAX_ATTEMPTS; default: 3)" in text
    assert "allowed on, off (WQ_FSYNC; default: on)" in text


def test_the_range_table_covers_every_ranged_option():
    declared = {
        f.name: f.metadata["option"].range for f in fields(NodeConfig) if f.metadata["option"].range
    }
    assert declared == {name: allowed for name, allowed, _, _, _ in RANGES}


def _range_cases(inside: bool) -> list:
    return [
        pytest.param(name, allowed, value, extra, via, id=f"{name}={value}-{via}")
        for name, allowed, good, bad, extra in RANGES
        for value in (good if inside else bad)
        for via in ("flag", "env")
    ]


def _set(name: str, value: str, via: str, extra: list[str]):
    if via == "flag":
        return BASE + extra + [FLAG[name], value], {"WQ_SECRET": SECRET}
    return BASE + extra, {"WQ_SECRET": SECRET, ENV[name]: value}


@pytest.mark.parametrize("name, allowed, value, extra, via", _range_cases(inside=True))
def test_each_range_bound_is_allowed(name, allowed, value, extra, via):
    cfg = load_config(*_set(name, value, via, extra))
    assert getattr(cfg, name) == NUMBER[name](value)


@pytest.mark.parametrize("name, allowed, value, extra, via", _range_cases(inside=False))
def test_a_value_past_a_bound_is_refused_stating_range_and_source(name, allowed, value, extra, via):
    with pytest.raises(ConfigError) as e:
        load_config(*_set(name, value, via, extra))
    lo, hi = allowed
    assert str(e.value) == (
        f"{name}: {NUMBER[name](value)} is out of range, allowed {lo} to {hi} "
        f"({FLAG[name]} or {ENV[name]})"
    )


@pytest.mark.parametrize("name, good, bad", CHOICES)
@pytest.mark.parametrize("via", ["flag", "env"])
def test_options_with_named_values_allow_only_those(name, good, bad, via):
    for value in good:
        assert getattr(load_config(*_set(name, value, via, [])), name) == value
    with pytest.raises(ConfigError) as e:
        load_config(*_set(name, bad, via, []))
    allowed = ", ".join(v for v in good if v.upper() == v or name != "log_level")
    assert str(e.value) == f"{name}: {bad!r}; allowed {allowed} ({FLAG[name]} or {ENV[name]})"


# (field, the flag's value, the variable's value, the field's value from the flag)
PRECEDENCE = [
    ("node_id", "n1", "n2", "n1"),
    ("max_queued", "5", "6", 5),
    ("lease_timeout", "12.5", "13.5", 12.5),
    ("backend", "ec2", "local", "ec2"),
    ("log_level", "DEBUG", "ERROR", "DEBUG"),
    ("url", "http://a:1/", "http://b:2", "http://a:1"),
    ("internal_http", "127.0.0.1:8101", "127.0.0.1:8102", "127.0.0.1:8101"),
    ("cluster_name", "blue", "green", "blue"),
    ("ec2_instance_type", "c6i.large", "t3.micro", "c6i.large"),
]


@pytest.mark.parametrize("name, flag_value, env_value, expected", PRECEDENCE)
def test_a_flag_wins_over_its_variable(name, flag_value, env_value, expected):
    env = {"WQ_SECRET": SECRET, ENV[name]: env_value}
    assert getattr(load_config(BASE + [FLAG[name], flag_value], env), name) == expected
    assert getattr(load_config(BASE, env), name) != expected


def test_a_flag_wins_over_the_peers_variable():
    env = {"WQ_SECRET": SECRET, "WQ_PEERS": "127.0.0.1:7009=http://127.0.0.1:8009"}
    assert len(load_config(BASE, env).peers) == 2
    assert load_config(BASE[:6], env).peers == (Peer("127.0.0.1:7009", "http://127.0.0.1:8009"),)


def test_an_empty_value_is_unset():
    env = {"WQ_SECRET": SECRET, "WQ_MAX_QUEUED": "", "WQ_URL": "", "WQ_NODE_ID": ""}
    cfg = load_config(BASE + ["--internal-http", "127.0.0.1:8101", "--cluster-name", ""], env)
    assert cfg.max_queued == NodeConfig.max_queued
    assert cfg.url == "http://127.0.0.1:8101"
    assert cfg.node_id == "127.0.0.1:7001"
    assert cfg.cluster_name == "wq"


def test_a_variable_that_is_not_a_number_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"^lease_timeout: 'soon' is not a valid float "):
        load_config(BASE, {"WQ_SECRET": SECRET, "WQ_LEASE_TIMEOUT": "soon"})


def test_a_flag_that_is_not_a_number_is_a_usage_error():
    with pytest.raises(SystemExit):
        load_config(BASE + ["--max-queued", "lots"], {"WQ_SECRET": SECRET})


@pytest.mark.parametrize("name", ["raft", "http", "data_dir"])
def test_required_options_name_their_flag_and_variable(name):
    at = BASE.index(FLAG[name])
    argv = BASE[:at] + BASE[at + 2 :]
    with pytest.raises(ConfigError) as e:
        load_config(argv, {"WQ_SECRET": SECRET})
    assert str(e.value) == f"{name}: required ({FLAG[name]} or {ENV[name]})"


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--raft", "nohost", "raft: 'nohost' is not host:port with a port from 1 to 65535"),
        ("--http", "h:0", "http: 'h:0' is not host:port with a port from 1 to 65535"),
        ("--internal-http", "h", "internal_http: 'h' is not host:port with a port from 1 to"),
        ("--url", "ftp://x", "url: 'ftp://x' is not an http(s) URL (--url or WQ_URL)"),
        ("--cluster-name", "a b", "cluster_name: 'a b' is not 1 to 64 letters, digits and _.-"),
        ("--internal-http", "127.0.0.1:8001", "internal_http: must use another port than --http"),
    ],
)
def test_malformed_addresses_and_names_are_refused(flag, value, message):
    with pytest.raises(ConfigError) as e:
        load_config(BASE + [flag, value], {"WQ_SECRET": SECRET})
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("via", ["flag", "env"])
def test_secrets_come_from_files(tmp_path, via):
    (tmp_path / "secret").write_text(f"  {SECRET}\n")
    (tmp_path / "key").write_text("k" * 20 + "\n")
    files = {"secret": str(tmp_path / "secret"), "key": str(tmp_path / "key")}
    if via == "flag":
        argv = BASE + ["--secret-file", files["secret"], "--api-key-file", files["key"]]
        env = {"WQ_SECRET": "x" * 32, "WQ_API_KEY": "y" * 32}
    else:
        argv = BASE
        env = {"WQ_SECRET_FILE": files["secret"], "WQ_API_KEY_FILE": files["key"]}
        env |= {"WQ_SECRET": "x" * 32, "WQ_API_KEY": "y" * 32}
    cfg = load_config(argv, env)
    assert (cfg.secret, cfg.api_key) == (SECRET, "k" * 20)
    assert "k" * 20 not in repr(cfg)


def test_secrets_come_from_the_environment_without_a_file():
    cfg = load_config(BASE, {"WQ_SECRET": SECRET, "WQ_API_KEY": "k" * 16})
    assert (cfg.secret, cfg.api_key) == (SECRET, "k" * 16)
    assert load_config(BASE, {"WQ_SECRET": SECRET}).api_key == ""


@pytest.mark.parametrize(
    "env, message",
    [
        ({"WQ_API_KEY_FILE": "/nonexistent/key"}, "api_key_file: cannot read /nonexistent/key"),
        ({"WQ_API_KEY": "short"}, "api_key: at least 16 characters when set"),
        ({"WQ_API_KEY": SECRET}, "api_key: must differ from the cluster secret"),
        ({"WQ_SECRET": ""}, "secret: a cluster secret of at least 16 characters is required"),
    ],
)
def test_unusable_secrets_are_refused(env, message):
    with pytest.raises(ConfigError) as e:
        load_config(BASE, {"WQ_SECRET": SECRET} | env)
    assert str(e.value).startswith(message)


def test_the_class_attributes_are_the_defaults():
    assert (NodeConfig.fsync, NodeConfig.max_attempts, NodeConfig.url) == ("on", 3, "")


def test_a_batch_of_the_most_jobs_allowed_fits_one_proposal():
    from dataclasses import fields

    from node.replication.state_machine import MAX_PROPOSAL_ITEMS

    (field,) = [f for f in fields(NodeConfig) if f.name == "max_batch_jobs"]
    assert field.metadata["option"].range[1] == MAX_PROPOSAL_ITEMS


def test_tls_takes_a_certificate_and_its_key_and_loads_them(tmp_path):
    from provision.ca import issue, new_ca

    tls = issue(new_ca("t"), "node", ["127.0.0.1"])
    (tmp_path / "c.pem").write_text(tls.cert)
    (tmp_path / "k.pem").write_text(tls.key)
    args = ["--tls-cert", str(tmp_path / "c.pem"), "--internal-http", "127.0.0.1:8101"]
    cfg = load_config(BASE + args + ["--tls-key", str(tmp_path / "k.pem")], {"WQ_SECRET": SECRET})
    assert cfg.tls_cert == str(tmp_path / "c.pem")
    # A key that is not the certificate's is refused at start, naming the field.
    (tmp_path / "other.pem").write_text(issue(new_ca("t"), "node", ["127.0.0.1"]).key)
    with pytest.raises(ConfigError, match="^tls_cert: cannot load"):
        load_config(BASE + args + ["--tls-key", str(tmp_path / "other.pem")], {"WQ_SECRET": SECRET})


def test_a_log_file_gets_the_log_too(tmp_path):
    import logging

    from node.observability import logs

    file = tmp_path / "logs" / "node.log"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("INFO", "text", "n9", str(file))
        logging.getLogger("x").info("hello file")
        for handler in logging.getLogger().handlers:
            handler.flush()
        assert " n9 INFO x: hello file" in file.read_text()
        (rotating,) = [
            h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)
        ]
        assert (rotating.maxBytes, rotating.backupCount) == (64 << 20, 5)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved
