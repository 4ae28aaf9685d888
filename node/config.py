"""Manager node configuration: one frozen dataclass filled from flags and environment.

Every option has a flag and a `WQ_*` environment variable; a flag wins over the variable.
The cluster secret is read from `WQ_SECRET` or from a file (`--secret-file`), never from a
flag, so it does not show up in `ps` or shell history.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from node.errors import ConfigError
from protocol.secrets import SecretUnreadable, read_secret

MIN_SECRET_LENGTH = 16
# pysyncobj requires raftMaxTimeout <= connectionTimeout, which the Raft adapter leaves at
# pysyncobj's default (3.5 s). Its other timing rules hold for any raft_min_timeout >= 0.1
# below raft_max_timeout: the adapter heartbeats every min(0.1, raft_min_timeout / 4) s, under
# a third of the election timeout and under the leader fallback timeout (30 s).
RAFT_MAX_TIMEOUT_LIMIT = 3.5


@dataclass(frozen=True)
class Peer:
    """Another manager: its Raft address (its identity in the group) and its HTTP base URL."""

    raft: str
    url: str


@dataclass(frozen=True)
class NodeConfig:
    # Name shown in /status and logs; defaults to the Raft address.
    node_id: str
    # host:port this node's Raft transport binds to; also its identity in the Raft group.
    raft: str
    # host:port the HTTP API listens on.
    http: str
    # The other managers. A cluster of three tolerates one failure.
    peers: tuple[Peer, ...]
    # Directory holding the SQLite store, the Raft journal and the snapshot file.
    data_dir: str
    # Shared cluster secret: Raft encryption password and bearer token of internal routes.
    secret: str = field(repr=False)
    # Key clients must send as X-API-Key on the public API (except /healthz and /openapi.json);
    # empty: the public API is open.
    api_key: str = field(default="", repr=False)
    # URL peers and workers use to reach this node; defaults to http://<internal_http or http>.
    url: str = ""
    # host:port serving the internal routes (peers, workers) on their own; the public API then
    # stays on `http` alone, so a firewall can keep the two apart. Empty: both on `http`.
    internal_http: str = ""
    # Largest accepted `iterations` (1..2**31-1).
    max_iterations: int = 10_000_000
    # Largest accepted payload in bytes (1..64 MiB).
    max_body_bytes: int = 1 << 20
    # Jobs that may wait in the queue before enqueue answers 429 (1..10**8).
    max_queued: int = 1_000_000
    # Finished jobs (completed or failed) kept for pullCompleted and /work (1..10**9).
    max_finished: int = 1_000_000
    # Seconds an Idempotency-Key is remembered (60..30 days).
    idempotency_window: float = 86400.0
    # Seconds a request may take before it is answered 503 (0.5..300).
    request_timeout: float = 10.0
    # Seconds a connection may stay open without a request in progress; also bounds a client
    # that never finishes sending its headers (1..3600).
    idle_connection_timeout: float = 30.0
    # Seconds a lease lives without a heartbeat before its job returns to the queue (1..3600).
    lease_timeout: float = 30.0
    # Leases a job may get; when the last one expires the job is marked failed (1..100).
    max_attempts: int = 3
    # Local worker processes the leader keeps running at least / at most (0..256).
    min_workers: int = 0
    max_workers: int = 0
    # Idle timeout workers get before the scaling policy has decided one (1..86400); after
    # that the policy sets it. None is sent while the pool is at min_workers.
    worker_idle_timeout: float = 60.0
    # Where the leader starts workers: "local" (subprocesses) or "ec2".
    backend: str = "local"
    # Acceptable seconds to drain the backlog; the policy sizes the pool for it (0..3600;
    # 0: 5 for local workers, 30 for EC2).
    scale_target_seconds: float = 0.0
    # Worker launches per minute at most, cluster-wide (1..1000).
    max_launches_per_minute: int = 20
    # Seconds a launched worker may take to register; then, or once it stops polling, its
    # instance or process is terminated (10..3600).
    boot_timeout: float = 300.0
    # Tag value naming this cluster's EC2 workers.
    cluster_name: str = "wq"
    # EC2 backend: region (empty: boto3's default), AMI, instance type, instance profile
    # name, subnet, security groups (comma separated), the command that installs the package
    # on a fresh instance, and seconds from launch to a polling worker.
    ec2_region: str = ""
    ec2_ami: str = ""
    ec2_instance_type: str = "t3.small"
    ec2_instance_profile: str = ""
    ec2_subnet: str = ""
    ec2_security_groups: str = ""
    # s3://bucket/key of the package (source archive or wheel) EC2 workers install.
    ec2_package: str = ""
    # SSM SecureString parameter holding the cluster secret, read by EC2 workers at boot.
    ec2_secret_parameter: str = ""
    ec2_start_cost: float = 45.0
    # Raft log entries before the log is compacted into a snapshot (10..10**7).
    log_compaction_entries: int = 5000
    # Raft election timeout range in seconds: 0.1 <= raft_min_timeout < raft_max_timeout <= 3.5.
    raft_min_timeout: float = 0.4
    raft_max_timeout: float = 1.4
    # "on": the Raft journal, term and vote, snapshots and payloads reach the disk (fsync)
    # before this node acknowledges them or counts itself toward a commit, one sync per batch;
    # "off": they are left to the OS (see the README's Guarantees for what each survives).
    fsync: str = "on"
    # Python logging level name.
    log_level: str = "INFO"
    # "text" (readable lines) or "json" (one object per line).
    log_format: str = "text"

    @property
    def cluster_size(self) -> int:
        return len(self.peers) + 1

    @property
    def majority(self) -> int:
        return self.cluster_size // 2 + 1

    def validate(self) -> NodeConfig:
        """Raise ConfigError naming the first bad field and what it allows."""
        if self.api_key and len(self.api_key) < MIN_SECRET_LENGTH:
            raise ConfigError(f"api_key: at least {MIN_SECRET_LENGTH} characters when set")
        if self.api_key and self.api_key == self.secret:
            raise ConfigError("api_key: must differ from the cluster secret")
        if len(self.secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"secret: a cluster secret of at least {MIN_SECRET_LENGTH} characters is required "
                "(set WQ_SECRET or --secret-file)"
            )
        for name in ("raft", "http"):
            _check_hostport(name, getattr(self, name))
        if self.internal_http:
            _check_hostport("internal_http", self.internal_http)
            if self.internal_http.rsplit(":", 1)[1] == self.http.rsplit(":", 1)[1]:
                raise ConfigError("internal_http: must use another port than --http")
        for peer in self.peers:
            _check_hostport("peers", peer.raft)
            _check_url("peers", peer.url)
            if peer.raft == self.raft:
                raise ConfigError(f"peers: {peer.raft} is this node's own Raft address")
        if len({p.raft for p in self.peers}) != len(self.peers):
            raise ConfigError("peers: each peer Raft address may appear only once")
        _check_url("url", self.url)
        ranges = {
            "max_iterations": (1, 2**31 - 1),
            "max_body_bytes": (1, 64 << 20),
            "max_queued": (1, 10**8),
            "max_finished": (1, 10**9),
            "idempotency_window": (60, 30 * 86400),
            "request_timeout": (0.5, 300),
            "idle_connection_timeout": (1, 3600),
            "lease_timeout": (1, 3600),
            "max_attempts": (1, 100),
            "min_workers": (0, 256),
            "max_workers": (0, 256),
            "worker_idle_timeout": (1, 86400),
            "log_compaction_entries": (10, 10**7),
            "scale_target_seconds": (0, 3600),
            "max_launches_per_minute": (1, 1000),
            "boot_timeout": (10, 3600),
            "ec2_start_cost": (0, 3600),
            "raft_min_timeout": (0.1, RAFT_MAX_TIMEOUT_LIMIT),
            "raft_max_timeout": (0.1, RAFT_MAX_TIMEOUT_LIMIT),
        }
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ConfigError(
                    f"{name}: {value} is out of range, allowed {lo} to {hi} ({_source(name)})"
                )
        if self.min_workers > self.max_workers:
            raise ConfigError(
                f"min_workers: {self.min_workers} exceeds max_workers ({self.max_workers})"
            )
        if self.raft_min_timeout >= self.raft_max_timeout:
            raise ConfigError(
                f"raft_min_timeout: {self.raft_min_timeout} is out of range, allowed 0.1 to "
                f"below raft_max_timeout ({self.raft_max_timeout}) ({_source('raft_min_timeout')})"
            )
        if self.backend not in ("local", "ec2"):
            raise ConfigError(f"backend: {self.backend!r}; allowed local, ec2")
        if self.backend == "ec2" and self.max_workers > 0:
            if not self.ec2_ami:
                raise ConfigError("ec2_ami: required with --backend ec2")
            if not re.fullmatch(r"s3://[a-z0-9.-]{3,63}/\S+\.(tar\.gz|whl)", self.ec2_package):
                raise ConfigError(
                    "ec2_package: required with --backend ec2, as s3://BUCKET/KEY.tar.gz (or .whl)"
                )
            if not re.fullmatch(r"/?[A-Za-z0-9_.\-/]{1,1011}", self.ec2_secret_parameter):
                raise ConfigError(
                    "ec2_secret_parameter: required with --backend ec2, an SSM "
                    "parameter name like /wq/NAME/secret"
                )
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.cluster_name):
            raise ConfigError("cluster_name: 1 to 64 letters, digits and _.-")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level: allowed DEBUG, INFO, WARNING, ERROR")
        if self.fsync not in ("on", "off"):
            raise ConfigError(f"fsync: {self.fsync!r}; allowed on, off ({_source('fsync')})")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format: {self.log_format!r}; allowed text, json")
        return self


def _source(name: str) -> str:
    """Where a field is set, for error messages."""
    return f"--{name.replace('_', '-')} or WQ_{name.upper()}"


def _check_hostport(name: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{name}: {value!r} is not host:port with a port from 1 to 65535")


def _check_url(name: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}: {value!r} is not an http(s) URL")


def parse_peers(text: str) -> tuple[Peer, ...]:
    """Parse `RAFT=URL,RAFT=URL` into peers."""
    peers = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        raft, sep, url = item.partition("=")
        if not sep:
            raise ConfigError(f"peers: {item!r} is not RAFT_HOST:PORT=HTTP_URL")
        peers.append(Peer(raft.strip(), url.strip().rstrip("/")))
    return tuple(peers)


def _read_secret(path: str | None, name: str, env_var: str, env: Mapping[str, str]) -> str:
    try:
        return read_secret(path, env_var, env)
    except SecretUnreadable as e:
        raise ConfigError(f"{name}: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m node",
        description="Run one manager node of the replicated work queue. Every option can also "
        "be set through the environment variable named in brackets; the cluster "
        "secret only through WQ_SECRET or --secret-file.",
    )

    def a(flag: str, **kwargs) -> None:
        name = kwargs.get("dest") or flag[2:].replace("-", "_")
        default = NodeConfig.__dataclass_fields__.get(name)
        if default is not None and not isinstance(default.default, type(dataclasses.MISSING)):
            if default.default != "":
                kwargs["help"] += f" [default: {default.default}]"
        p.add_argument(flag, **kwargs)

    a(
        "--id",
        dest="node_id",
        help="node name in /status and logs (WQ_NODE_ID); default: the Raft address",
    )
    a("--raft", help="host:port of this node's Raft transport, its identity in the group (WQ_RAFT)")
    a("--http", help="host:port of the HTTP API (WQ_HTTP)")
    a(
        "--internal-http",
        help="host:port serving only the internal routes that peers and "
        "workers use, keeping --http for the public API alone "
        "(WQ_INTERNAL_HTTP); default: both on --http",
    )
    a(
        "--url",
        help="URL peers and workers use to reach this node (WQ_URL); default "
        "http://<--internal-http or --http>",
    )
    a(
        "--peers",
        help="the other managers as RAFT_HOST:PORT=HTTP_URL, comma separated, e.g. "
        "10.0.0.2:7001=http://10.0.0.2:8001,10.0.0.3:7001=http://10.0.0.3:8001 "
        "(WQ_PEERS)",
    )
    a("--data-dir", help="directory for the SQLite store, Raft journal and snapshot (WQ_DATA_DIR)")
    a(
        "--secret-file",
        help="file holding the cluster secret, at least 16 characters (WQ_SECRET_FILE); "
        "or set WQ_SECRET",
    )
    a(
        "--api-key-file",
        help="file holding the key clients must send as X-API-Key on the public "
        "API (WQ_API_KEY_FILE); or set WQ_API_KEY; default: no key",
    )
    a("--max-iterations", type=int, help="largest accepted iterations (WQ_MAX_ITERATIONS)")
    a("--max-body-bytes", type=int, help="largest accepted payload in bytes (WQ_MAX_BODY_BYTES)")
    a("--max-queued", type=int, help="queued jobs before enqueue answers 429 (WQ_MAX_QUEUED)")
    a(
        "--max-finished",
        type=int,
        help="finished jobs retained, oldest dropped first (WQ_MAX_FINISHED)",
    )
    a(
        "--idempotency-window",
        type=float,
        help="seconds an Idempotency-Key is remembered (WQ_IDEMPOTENCY_WINDOW)",
    )
    a(
        "--request-timeout",
        type=float,
        help="seconds before a request is answered 503 (WQ_REQUEST_TIMEOUT)",
    )
    a(
        "--idle-connection-timeout",
        type=float,
        help="seconds an HTTP connection may idle, or "
        "take to send its headers, before it is "
        "closed (WQ_IDLE_CONNECTION_TIMEOUT)",
    )
    a(
        "--lease-timeout",
        type=float,
        help="seconds a lease lives without heartbeat (WQ_LEASE_TIMEOUT)",
    )
    a("--max-attempts", type=int, help="leases a job may get before it is failed (WQ_MAX_ATTEMPTS)")
    a("--min-workers", type=int, help="local worker processes kept at least (WQ_MIN_WORKERS)")
    a(
        "--max-workers",
        type=int,
        help="local worker processes at most; 0 disables them (WQ_MAX_WORKERS)",
    )
    a(
        "--worker-idle-timeout",
        type=float,
        help="seconds a worker waits without work before it "
        "exits, until the scaling policy sets it "
        "(WQ_WORKER_IDLE_TIMEOUT)",
    )
    a("--backend", help="where workers run: local or ec2 (WQ_BACKEND)")
    a(
        "--scale-target-seconds",
        type=float,
        help="acceptable seconds to drain the backlog; 0: "
        "5 local, 30 EC2 (WQ_SCALE_TARGET_SECONDS)",
    )
    a(
        "--max-launches-per-minute",
        type=int,
        help="worker launches per minute at most (WQ_MAX_LAUNCHES_PER_MINUTE)",
    )
    a(
        "--boot-timeout",
        type=float,
        help="seconds a worker may take to register before it is terminated (WQ_BOOT_TIMEOUT)",
    )
    a("--cluster-name", help="tag value naming this cluster's EC2 workers (WQ_CLUSTER_NAME)")
    a("--ec2-region", help="EC2 region (WQ_EC2_REGION); default: boto3's")
    a("--ec2-ami", help="AMI of EC2 workers (WQ_EC2_AMI)")
    a("--ec2-instance-type", help="instance type of EC2 workers (WQ_EC2_INSTANCE_TYPE)")
    a(
        "--ec2-instance-profile",
        help="instance profile name for EC2 workers (WQ_EC2_INSTANCE_PROFILE)",
    )
    a("--ec2-subnet", help="subnet id for EC2 workers (WQ_EC2_SUBNET)")
    a(
        "--ec2-security-groups",
        help="security group ids for EC2 workers, comma separated (WQ_EC2_SECURITY_GROUPS)",
    )
    a(
        "--ec2-package",
        help="s3://BUCKET/KEY of the package (source archive or wheel) EC2 workers "
        "install (WQ_EC2_PACKAGE)",
    )
    a(
        "--ec2-secret-parameter",
        help="SSM SecureString parameter holding the cluster secret, "
        "which EC2 workers read with their instance role "
        "(WQ_EC2_SECRET_PARAMETER)",
    )
    a(
        "--ec2-start-cost",
        type=float,
        help="seconds from launch to a polling EC2 worker (WQ_EC2_START_COST)",
    )
    a(
        "--log-compaction-entries",
        type=int,
        help="Raft log entries between snapshots (WQ_LOG_COMPACTION_ENTRIES)",
    )
    a(
        "--raft-min-timeout",
        type=float,
        help="Raft election timeout minimum, seconds (WQ_RAFT_MIN_TIMEOUT)",
    )
    a(
        "--raft-max-timeout",
        type=float,
        help="Raft election timeout maximum, seconds (WQ_RAFT_MAX_TIMEOUT)",
    )
    a("--log-level", help="DEBUG, INFO, WARNING or ERROR (WQ_LOG_LEVEL)")
    a(
        "--fsync",
        help="on (default): sync the Raft journal and payloads to disk before "
        "acknowledging them; off: leave them to the OS (WQ_FSYNC)",
    )
    a("--log-format", help="text, or json for one JSON object per line (WQ_LOG_FORMAT)")
    return p


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Build and validate a NodeConfig from flags, then environment, then defaults."""
    env = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))

    def pick(name: str, convert=str):
        value = args.get(name)
        if value is None:
            raw = env.get("WQ_" + name.upper())
            if raw is None or raw == "":
                return None
            try:
                value = convert(raw)
            except ValueError:
                raise ConfigError(f"{name}: {raw!r} is not a valid {convert.__name__}") from None
        return value

    raft = pick("raft")
    http = pick("http")
    internal_http = pick("internal_http") or ""
    data_dir = pick("data_dir")
    for name, value in (("raft", raft), ("http", http), ("data_dir", data_dir)):
        if not value:
            raise ConfigError(f"{name}: required (--{name.replace('_', '-')} or WQ_{name.upper()})")
    secret = _read_secret(pick("secret_file"), "secret_file", "WQ_SECRET", env)
    api_key = _read_secret(pick("api_key_file"), "api_key_file", "WQ_API_KEY", env)

    kwargs = {}
    for f in NodeConfig.__dataclass_fields__.values():
        if f.name in (
            "node_id",
            "raft",
            "http",
            "peers",
            "data_dir",
            "secret",
            "url",
            "api_key",
            "internal_http",
        ):
            continue
        convert = {"int": int, "float": float, "str": str}[f.type]
        value = pick(f.name, convert)
        if value is not None:
            kwargs[f.name] = value
    cfg = NodeConfig(
        node_id=pick("node_id") or raft,
        raft=raft,
        http=http,
        internal_http=internal_http,
        url=(pick("url") or f"http://{internal_http or http}").rstrip("/"),
        peers=parse_peers(pick("peers") or ""),
        data_dir=data_dir,
        secret=secret,
        api_key=api_key,
        **kwargs,
    )
    return cfg.validate()
