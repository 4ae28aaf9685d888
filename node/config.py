"""Manager node configuration: one frozen dataclass filled from flags and environment.

Each option is declared once, at its field, by `option(...)`: its help, its allowed range or
values, and its type (the annotation). The flag (`--max-body-bytes` for `max_body_bytes`), the
`WQ_*` environment variable, the `--help` text and the per-field checks are derived from that;
rules that span fields are the `_check_*` functions. A flag wins over the variable. The cluster
secret is read from `WQ_SECRET` or from a file (`--secret-file`), never from a flag, so it does
not show up in `ps` or shell history.

Why not pydantic-settings (tried 2.16.3): it would add pydantic and its compiled core at run
time yet still need our code for `--id`, secrets from a named file and our error messages, and
it changes what callers rely on (`NodeConfig(...)` would read the environment, `NodeConfig.fsync`
would no longer be the default, `--help` would not name the variables).
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
from dataclasses import MISSING, Field, dataclass, field, fields
from functools import cached_property
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from node.errors import ConfigError
from protocol.secrets import SecretUnreadable, read_secret

MIN_SECRET_LENGTH = 16
# pysyncobj requires raftMaxTimeout <= connectionTimeout, which the Raft adapter leaves at
# pysyncobj's default (3.5 s). Its other timing rules hold for any raft_min_timeout >= 0.1
# below raft_max_timeout: the adapter heartbeats every min(0.1, raft_min_timeout / 4) s, under
# a third of the election timeout and under the leader fallback timeout (30 s).
RAFT_MIN_TIMEOUT_LIMIT = 0.1
RAFT_MAX_TIMEOUT_LIMIT = 3.5
ENV_PREFIX = "WQ_"


@dataclass(frozen=True)
class Peer:
    """Another manager: its Raft address (its identity in the group) and its HTTP base URL."""

    raft: str
    url: str


@dataclass(frozen=True)
class Form:
    """The shape a text option must have: said in help and errors, and its test."""

    says: str
    test: Callable[[str], Any]


def _is_hostport(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535)


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


HOSTPORT = Form("host:port with a port from 1 to 65535", _is_hostport)
URL = Form("an http(s) URL", _is_url)
TAG = Form("1 to 64 letters, digits and _.-", re.compile(r"[A-Za-z0-9_.-]{1,64}").fullmatch)


@dataclass(frozen=True, kw_only=True)
class Option:
    """How one NodeConfig field is set, described and checked; see `option()`."""

    help: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    any_case: bool = False
    form: Form | None = None
    flag: str = ""
    from_file: bool = False
    parse: Callable[[str], Any] | None = None
    derive: Callable[[dict[str, Any]], Any] | None = None
    default_help: str = ""

    def allowed(self) -> str:
        if self.range:
            return f"{self.range[0]} to {self.range[1]}"
        if self.choices:
            return ", ".join(self.choices)
        return self.form.says if self.form else ""


def option(default: Any = MISSING, *, repr: bool = True, **declaration: Any) -> Any:
    """A NodeConfig field with its Option: `help` (what it does); `range=(lo, hi)` (inclusive),
    `choices` (allowed values; `any_case` to ignore case) or `form` (a text shape); `flag` when
    it is not `--field-name`; `from_file` for a secret read from the file `--NAME-file` or
    `WQ_NAME_FILE` names, else from `WQ_NAME`; `parse` for text that is not the field's type;
    `derive` for the value when unset, from the other values; `default_help` saying what unset
    means. A `form` is not checked on an empty text when the field's default is empty."""
    return field(default=default, repr=repr, metadata={"option": Option(**declaration)})


def parse_peers(text: str) -> tuple[Peer, ...]:
    """Parse `RAFT=URL,RAFT=URL` into peers."""
    peers = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        raft, sep, url = item.partition("=")
        if not sep:
            raise ConfigError(f"peers: {item!r} is not RAFT_HOST:PORT=HTTP_URL")
        peers.append(Peer(raft.strip(), url.strip().rstrip("/")))
    return tuple(peers)


@dataclass(frozen=True)
class NodeConfig:
    node_id: str = option(
        flag="--id",
        help="name shown in /status and logs",
        derive=lambda v: v["raft"],
        default_help="the Raft address",
    )
    raft: str = option(
        help="host:port this node's Raft transport binds to; also its identity in the Raft group",
        form=HOSTPORT,
    )
    http: str = option(help="host:port the HTTP API listens on", form=HOSTPORT)
    peers: tuple[Peer, ...] = option(
        help="the other managers as RAFT_HOST:PORT=HTTP_URL, comma separated, e.g. "
        "10.0.0.2:7001=http://10.0.0.2:8001,10.0.0.3:7001=http://10.0.0.3:8001 (the URL serves "
        "their internal routes); a cluster of three tolerates one failure",
        parse=parse_peers,
        derive=lambda v: (),
        default_help="none, a cluster of one",
    )
    data_dir: str = option(
        help="directory holding the SQLite store, the Raft journal and the snapshot file"
    )
    secret: str = option(
        repr=False,
        from_file=True,
        help="file holding the shared cluster secret, at least 16 characters: the Raft "
        "encryption password and the bearer token of the internal routes",
    )
    api_key: str = option(
        "",
        repr=False,
        from_file=True,
        help="file holding the key clients must send as X-API-Key on the public API (all "
        "but /healthz and /openapi.json), at least 16 characters",
        default_help="no key, the public API is open",
    )
    url: str = option(
        "",
        help="URL peers and workers use to reach this node",
        form=URL,
        parse=lambda s: s.rstrip("/"),
        derive=lambda v: f"http://{v.get('internal_http') or v['http']}",
        default_help="http://<--internal-http or --http>",
    )
    internal_http: str = option(
        "",
        help="host:port serving the internal routes (peers, workers) on their own; the public "
        "API then stays on --http alone, so a firewall can keep the two apart",
        form=HOSTPORT,
        default_help="both on --http",
    )
    tls_cert: str = option(
        "",
        help="PEM file with the certificate (and its chain) for the public API, which is then "
        "served over HTTPS; needs --tls-key and --internal-http (internal routes stay plain "
        "HTTP on their own listener)",
        default_help="plain HTTP",
    )
    tls_key: str = option("", help="PEM file with the private key of --tls-cert")
    max_iterations: int = option(
        10_000_000, help="largest accepted `iterations`", range=(1, 2**31 - 1)
    )
    max_body_bytes: int = option(
        1 << 20, help="largest accepted payload in bytes", range=(1, 64 << 20)
    )
    max_batch_jobs: int = option(
        1000,
        help="most payloads in one POST /enqueue/batch",
        range=(1, 4096),  # a batch is one proposal: at most MAX_PROPOSAL_ITEMS jobs
    )
    max_batch_bytes: int = option(
        64 << 20,
        help="most payload bytes in one POST /enqueue/batch, all parts together",
        range=(1, 1 << 30),
    )
    max_queued: int = option(
        1_000_000,
        help="jobs that may wait in the queue before enqueue answers 429",
        range=(1, 10**8),
    )
    max_finished: int = option(
        1_000_000,
        help="finished jobs (completed or failed) kept for pullCompleted and /work, oldest "
        "dropped first",
        range=(1, 10**9),
    )
    idempotency_window: float = option(
        86400.0, help="seconds an Idempotency-Key is remembered", range=(60, 30 * 86400)
    )
    request_timeout: float = option(
        10.0, help="seconds a request may take before it is answered 503", range=(0.5, 300)
    )
    max_wait: float = option(
        60.0,
        help="longest `wait` a client may ask for (GET /work/{id}?wait=S, GET "
        "/completed?wait=S), seconds; such a request may take that long beyond the request "
        "timeout",
        range=(0, 3600),
    )
    idle_connection_timeout: float = option(
        30.0,
        help="seconds a connection may stay open without a request in progress, or take to "
        "send its headers, before it is closed",
        range=(1, 3600),
    )
    lease_timeout: float = option(
        30.0,
        help="seconds a lease lives without a heartbeat before its job returns to the queue",
        range=(1, 3600),
    )
    max_attempts: int = option(
        3,
        help="leases a job may get; when the last one expires the job is marked failed",
        range=(1, 100),
    )
    min_workers: int = option(
        0, help="worker processes the leader keeps running at least", range=(0, 256)
    )
    max_workers: int = option(
        0, help="worker processes the leader runs at most; 0 disables them", range=(0, 256)
    )
    worker_idle_timeout: float = option(
        60.0,
        help="seconds a worker waits without work before it exits, until the scaling policy "
        "sets it (none is sent while the pool is at --min-workers)",
        range=(1, 86400),
    )
    backend: str = option(
        "local",
        help="where the leader starts workers: subprocesses or EC2",
        choices=("local", "ec2"),
    )
    scale_target_seconds: float = option(
        0.0,
        help="acceptable seconds to drain the backlog; the policy sizes the pool for it; "
        "0: 5 for local workers, 30 for EC2",
        range=(0, 3600),
    )
    max_launches_per_minute: int = option(
        20, help="worker launches per minute at most, cluster-wide", range=(1, 1000)
    )
    boot_timeout: float = option(
        300.0,
        help="seconds a launched worker may take to register; then, or once it stops polling, "
        "its instance or process is terminated",
        range=(10, 3600),
    )
    cluster_name: str = option("wq", help="tag value naming this cluster's EC2 workers", form=TAG)
    ec2_region: str = option("", help="EC2 region", default_help="boto3's")
    ec2_ami: str = option("", help="AMI of EC2 workers")
    ec2_instance_type: str = option("t3.small", help="instance type of EC2 workers")
    ec2_instance_profile: str = option("", help="instance profile name for EC2 workers")
    ec2_subnet: str = option("", help="subnet id for EC2 workers")
    ec2_security_groups: str = option(
        "", help="security group ids for EC2 workers, comma separated"
    )
    ec2_package: str = option(
        "", help="s3://BUCKET/KEY of the package (source archive or wheel) EC2 workers install"
    )
    ec2_secret_parameter: str = option(
        "",
        help="SSM SecureString parameter holding the cluster secret, which EC2 workers read "
        "with their instance role at boot",
    )
    ec2_relaunch_managers: str = option(
        "off",
        help="on: the leader relaunches a manager of this cluster whose instance was terminated, "
        "from its launch template onto its network interface and data volume (as `provision up` "
        "creates them)",
        choices=("on", "off"),
    )
    ec2_start_cost: float = option(
        45.0, help="seconds from launch to a polling EC2 worker", range=(0, 3600)
    )
    log_compaction_entries: int = option(
        5000,
        help="Raft log entries before the log is compacted into a snapshot",
        range=(10, 10**7),
    )
    raft_min_timeout: float = option(
        0.4,
        help="Raft election timeout minimum, seconds, below --raft-max-timeout",
        range=(RAFT_MIN_TIMEOUT_LIMIT, RAFT_MAX_TIMEOUT_LIMIT),
    )
    raft_max_timeout: float = option(
        1.4,
        help="Raft election timeout maximum, seconds",
        range=(RAFT_MIN_TIMEOUT_LIMIT, RAFT_MAX_TIMEOUT_LIMIT),
    )
    fsync: str = option(
        "on",
        help="on: the Raft journal, term and vote, snapshots and payloads reach the disk before "
        "this node acknowledges them or counts itself toward a commit, one sync per batch; "
        "off: they are left to the OS (see the README's Guarantees for what each survives)",
        choices=("on", "off"),
    )
    log_level: str = option(
        "INFO",
        help="Python logging level name, in any case",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        any_case=True,
    )
    log_format: str = option(
        "text",
        help="text (readable lines) or json (one object per line)",
        choices=("text", "json"),
    )
    log_file: str = option(
        "",
        help="also write the log to this file (its directory is made), rotated at 64 MiB with "
        "5 rotated files kept",
        default_help="stderr only",
    )

    @cached_property
    def members(self) -> dict[str, str]:
        """Every manager, this one included: Raft address -> the URL peers and workers use."""
        return {p.raft: p.url for p in self.peers} | {self.raft: self.url}

    @property
    def cluster_size(self) -> int:
        return len(self.peers) + 1

    @property
    def majority(self) -> int:
        return self.cluster_size // 2 + 1

    def validate(self) -> NodeConfig:
        """Raise ConfigError naming the first bad field and what it allows."""
        for f in fields(self):
            _check_option(f, getattr(self, f.name))
        for rule in (
            _check_secrets,
            _check_addresses,
            _check_tls,
            _check_workers,
            _check_raft,
            _check_ec2,
        ):
            rule(self)
        return self


# --- what each field's declaration implies --------------------------------------------------


def _option(f: Field[Any]) -> Option:
    opt: Option = f.metadata["option"]
    return opt


def _dest(f: Field[Any]) -> str:
    """The argparse dest, which names the flag and the variable: the field, or the file
    holding it."""
    return f.name + "_file" if _option(f).from_file else f.name


def _flag(f: Field[Any]) -> str:
    return _option(f).flag or "--" + _dest(f).replace("_", "-")


def _variable(f: Field[Any]) -> str:
    return ENV_PREFIX + _dest(f).upper()


def _source(f: Field[Any]) -> str:
    """Where a field is set, for error messages."""
    return f"{_flag(f)} or {_variable(f)}"


def _help(f: Field[Any]) -> str:
    opt = _option(f)
    text = opt.help
    if opt.range or opt.choices:
        text += f"; allowed {opt.allowed()}"
    where = _variable(f)
    if opt.from_file:
        where += f", or the value itself in {ENV_PREFIX}{f.name.upper()}"
    if opt.default_help:
        where += f"; default: {opt.default_help}"
    elif f.default is MISSING:
        where += "; required"
    elif f.default not in (MISSING, ""):
        where += f"; default: {f.default}"
    return f"{text} ({where})".replace("%", "%%")


def _check_option(f: Field[Any], value: Any) -> None:
    """The checks one field's declaration states."""
    opt, name = _option(f), f.name
    if opt.range and not opt.range[0] <= value <= opt.range[1]:
        lo, hi = opt.range
        raise ConfigError(f"{name}: {value} is out of range, allowed {lo} to {hi} ({_source(f)})")
    if opt.choices and (value.upper() if opt.any_case else value) not in opt.choices:
        raise ConfigError(f"{name}: {value!r}; allowed {opt.allowed()} ({_source(f)})")
    if opt.form and not (value == "" == f.default) and not opt.form.test(value):
        raise ConfigError(f"{name}: {value!r} is not {opt.form.says} ({_source(f)})")


# --- rules across fields ---------------------------------------------------------------------


def _check_secrets(cfg: NodeConfig) -> None:
    if cfg.api_key and len(cfg.api_key) < MIN_SECRET_LENGTH:
        raise ConfigError(f"api_key: at least {MIN_SECRET_LENGTH} characters when set")
    if cfg.api_key and cfg.api_key == cfg.secret:
        raise ConfigError("api_key: must differ from the cluster secret")
    if len(cfg.secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"secret: a cluster secret of at least {MIN_SECRET_LENGTH} characters is required "
            "(set WQ_SECRET or --secret-file)"
        )


def _check_addresses(cfg: NodeConfig) -> None:
    if not cfg.url:
        raise ConfigError("url: '' is not an http(s) URL (--url or WQ_URL)")
    if cfg.internal_http and cfg.internal_http.rsplit(":", 1)[1] == cfg.http.rsplit(":", 1)[1]:
        raise ConfigError("internal_http: must use another port than --http")
    for peer in cfg.peers:
        if not HOSTPORT.test(peer.raft):
            raise ConfigError(f"peers: {peer.raft!r} is not {HOSTPORT.says}")
        if not URL.test(peer.url):
            raise ConfigError(f"peers: {peer.url!r} is not {URL.says}")
        if peer.raft == cfg.raft:
            raise ConfigError(f"peers: {peer.raft} is this node's own Raft address")
    if len({p.raft for p in cfg.peers}) != len(cfg.peers):
        raise ConfigError("peers: each peer Raft address may appear only once")


def _check_tls(cfg: NodeConfig) -> None:
    if not cfg.tls_cert and not cfg.tls_key:
        return
    if not (cfg.tls_cert and cfg.tls_key):
        raise ConfigError("tls_cert: --tls-cert and --tls-key go together")
    if not cfg.internal_http:
        raise ConfigError(
            "tls_cert: needs --internal-http (the internal routes stay plain HTTP on their own "
            "listener, for peers and workers)"
        )
    try:
        tls_context(cfg)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"tls_cert: cannot load {cfg.tls_cert} with {cfg.tls_key}: {e}") from None


def tls_context(cfg: NodeConfig) -> ssl.SSLContext | None:
    """The public listener's TLS context, or None for plain HTTP."""
    if not cfg.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return context


def _check_workers(cfg: NodeConfig) -> None:
    if cfg.min_workers > cfg.max_workers:
        raise ConfigError(f"min_workers: {cfg.min_workers} exceeds max_workers ({cfg.max_workers})")


def _check_raft(cfg: NodeConfig) -> None:
    if cfg.raft_min_timeout >= cfg.raft_max_timeout:
        raise ConfigError(
            f"raft_min_timeout: {cfg.raft_min_timeout} is out of range, allowed "
            f"{RAFT_MIN_TIMEOUT_LIMIT} to below raft_max_timeout ({cfg.raft_max_timeout}) "
            "(--raft-min-timeout or WQ_RAFT_MIN_TIMEOUT)"
        )


def _check_ec2(cfg: NodeConfig) -> None:
    if cfg.ec2_relaunch_managers == "on" and cfg.backend != "ec2":
        raise ConfigError("ec2_relaunch_managers: on only with --backend ec2")
    if cfg.backend != "ec2" or cfg.max_workers == 0:
        return
    if not cfg.ec2_ami:
        raise ConfigError("ec2_ami: required with --backend ec2")
    if not re.fullmatch(r"s3://[a-z0-9.-]{3,63}/\S+\.(tar\.gz|whl)", cfg.ec2_package):
        raise ConfigError(
            "ec2_package: required with --backend ec2, as s3://BUCKET/KEY.tar.gz (or .whl)"
        )
    if not re.fullmatch(r"/?[A-Za-z0-9_.\-/]{1,1011}", cfg.ec2_secret_parameter):
        raise ConfigError(
            "ec2_secret_parameter: required with --backend ec2, an SSM "
            "parameter name like /wq/NAME/secret"
        )


# --- flags and environment -------------------------------------------------------------------


_NUMBERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m node",
        description="Run one manager node of the replicated work queue. Every option can also "
        "be set through the environment variable named in parentheses, which a flag "
        "overrides; the cluster secret only through WQ_SECRET or --secret-file.",
    )
    for f in fields(NodeConfig):
        p.add_argument(_flag(f), dest=_dest(f), type=_NUMBERS.get(str(f.type), str), help=_help(f))
    return p


def _read_secret(path: str | None, name: str, env_var: str, env: Mapping[str, str]) -> str:
    try:
        return read_secret(path, env_var, env)
    except SecretUnreadable as e:
        raise ConfigError(f"{name}: {e}") from None


def _from_env(f: Field[Any], env: Mapping[str, str]) -> Any:
    """The field's variable, converted to its type; None when unset or empty."""
    raw = env.get(_variable(f)) or None
    convert = _NUMBERS.get(str(f.type))
    if raw is None or convert is None:
        return raw
    try:
        return convert(raw)
    except ValueError:
        raise ConfigError(f"{f.name}: {raw!r} is not a valid {f.type} ({_variable(f)})") from None


def _given(f: Field[Any], args: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """The value the flag, else the variable, gives a field (an empty one gives none);
    MISSING when neither does."""
    opt, value = _option(f), args[_dest(f)]
    if value is None or value == "":
        value = _from_env(f, env)
    if opt.from_file:
        return _read_secret(value, _dest(f), ENV_PREFIX + f.name.upper(), env)
    if value is None:
        return MISSING
    return opt.parse(value) if opt.parse else value


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Build and validate a NodeConfig from flags, then environment, then defaults."""
    env = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    given = {f.name: _given(f, args, env) for f in fields(NodeConfig)}
    for f in fields(NodeConfig):
        if given[f.name] is MISSING and f.default is MISSING and not _option(f).derive:
            raise ConfigError(f"{f.name}: required ({_source(f)})")
    values = {name: value for name, value in given.items() if value is not MISSING}
    for f in fields(NodeConfig):
        derive = _option(f).derive
        if f.name not in values and derive:
            values[f.name] = derive(values)
    return NodeConfig(**values).validate()
