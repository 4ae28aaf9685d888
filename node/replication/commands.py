"""Commands carried by the Raft log.

Each command is a small frozen dataclass. On the wire (inside pysyncobj's pickle) it is a plain
tuple `(op, *fields)` of built-in types, so the log never depends on class paths. The proposer
puts every id and timestamp into the command: applying one never reads a clock or a random
source, so every replica computes the same state.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any


@dataclass(frozen=True)
class NewJob:
    id: str
    iterations: int
    size: int
    digest: str  # sha256 hex of the payload, checked whenever a payload is copied
    enqueued_at: float
    key: str | None = None  # the client's Idempotency-Key, if it sent one


@dataclass(frozen=True)
class Enqueue:
    """Add jobs. A job whose idempotency key is already known is not added: its result is
    the id of the job first enqueued with that key. Keys older than `key_ttl` seconds before
    the newest job's time are forgotten."""

    jobs: tuple[NewJob, ...]
    key_ttl: float = 86400.0


@dataclass(frozen=True)
class Lease:
    """Hand queued jobs to a worker. Jobs no longer queued when applied are skipped."""

    worker: str
    job_ids: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class Requeue:
    """Return expired leases to the queue, or fail jobs that used up their attempts.

    `leases` holds (job id, attempt); a job leased again since is left alone.
    """

    leases: tuple[tuple[str, int], ...]
    reason: str
    max_attempts: int
    at: float
    retain: int


@dataclass(frozen=True)
class Complete:
    """Record results. A job already finished keeps its first result."""

    results: tuple[tuple[str, str], ...]
    at: float
    retain: int


@dataclass(frozen=True)
class Workers:
    """The leader's view of live workers, replicated so any node shows it and a new leader
    adopts them."""

    workers: tuple[tuple[str, str, float], ...]  # (worker id, info json, last seen)


Command = Enqueue | Lease | Requeue | Complete | Workers
# A command as the log carries it: (op, *fields), built-in types only.
Wire = tuple[Any, ...]

_OPS: dict[str, type[Command]] = {
    "enqueue": Enqueue,
    "lease": Lease,
    "requeue": Requeue,
    "complete": Complete,
    "workers": Workers,
}
_NAMES = {cls: name for name, cls in _OPS.items()}


def encode(cmd: Command) -> Wire:
    if isinstance(cmd, Enqueue):
        return ("enqueue", tuple(astuple(j) for j in cmd.jobs), cmd.key_ttl)
    return (_NAMES[type(cmd)],) + astuple(cmd)


def decode(wire: Wire) -> Command:
    """Rebuild a command; raises ValueError/TypeError/KeyError on anything malformed."""
    op, *fields = wire
    cls = _OPS[op]
    if cls is Enqueue:
        jobs, key_ttl = fields
        return Enqueue(tuple(NewJob(*j) for j in jobs), key_ttl)
    return cls(*fields)
