"""Replace a cluster's managers one at a time, keeping a majority serving throughout.

The same code drives EC2 managers (`provision upgrade`) and local node processes (the rolling
upgrade test): a `Fleet` says which members there are, where each answers, whether one already
runs what the roll installs, and replaces one. `roll` decides the order and when to go on.

- Followers first, the leader last (and before them a member that is down, which only its
  replacement can bring back), chosen again before each step. A node stopped with SIGTERM
  hands leadership to a caught-up follower before it exits (Raft's TimeoutNow), so replacing
  the leader costs no election timeout.
- Before each step every other member must be healthy: taking one member out then still
  leaves a majority.
- After each step the replaced member must answer `/healthz` and have applied everything the
  leader had committed when it came back, within `step_timeout`. Otherwise the roll stops
  there and says why: the member it replaced is the only one out, so a majority still serves.
- A member that already runs the new version is left alone, so a second roll with nothing new
  does nothing, and a roll that stopped goes on where it stopped.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from provision.health import TLS_FAILED, get


class Fleet(Protocol):
    def members(self) -> list[str]: ...

    def url(self, member: str) -> str:
        """Where the member's public API answers."""
        ...

    def current(self, member: str) -> bool:
        """Whether the member already runs what the roll installs."""
        ...

    def replace(self, member: str) -> None:
        """Stop the member (SIGTERM, so a leader hands over) and start its replacement, with
        the same identity and data; returns once the replacement is starting."""
        ...


class RollStopped(Exception):
    """The roll stopped before the end; the message says where and why."""


@dataclass
class Probe:
    """Reads a member's health and Raft progress over its public API."""

    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 3.0
    # Verifies https URLs (the deployment's CA). A member whose https fails at the handshake
    # is asked over plain HTTP: a manager of a version from before HTTPS, being upgraded.
    context: ssl.SSLContext | None = None

    def _get(self, url: str) -> tuple[int, bytes]:
        code, body, why = get(url, timeout=self.timeout, context=self.context, headers=self.headers)
        if why.startswith(TLS_FAILED) and url.startswith("https://"):
            return self._get("http://" + url.removeprefix("https://"))
        return code, body

    def health(self, url: str) -> str:
        """ "ok", or why not."""
        code, body = self._get(f"{url}/healthz")
        if code == 200:
            return "ok"
        if code == 0:
            return "unreachable"
        try:
            return str(json.loads(body).get("reason") or f"HTTP {code}")
        except (ValueError, AttributeError):
            return f"HTTP {code}"

    def status(self, url: str) -> dict | None:
        code, body = self._get(f"{url}/status")
        try:
            return json.loads(body) if code == 200 else None
        except ValueError:
            return None


def find_leader(fleet: Fleet, probe: Probe) -> tuple[str | None, int | None]:
    """The member that leads, and its commit index, as it says itself."""
    for m in fleet.members():
        status = probe.status(fleet.url(m))
        if status is not None and status.get("role") == "leader":
            return m, int(status["raft"]["commit_index"])
    return None, None


def roll(
    fleet: Fleet,
    probe: Probe,
    *,
    step_timeout: float,
    say: Callable[[str, str], None],
    interval: float = 0.5,
) -> list[str]:
    """Replace every member that is not current; the members replaced, in order."""
    members = fleet.members()
    todo = [m for m in members if not fleet.current(m)]
    if not todo:
        say("current", f"all {len(members)} managers already run this version")
        return []
    done: list[str] = []
    while todo:
        # Chosen again at each step, as leadership may have moved: a member that is down first
        # (replacing it can only help), then followers, the leader last.
        leader, _ = find_leader(fleet, probe)
        health = {o: probe.health(fleet.url(o)) for o in members}
        down = [m for m in todo if health[m] != "ok"]
        m = (down or [m for m in todo if m != leader] or todo)[0]
        todo.remove(m)
        sick = {o: why for o, why in health.items() if o != m and why != "ok"}
        if sick:
            raise RollStopped(
                f"not replacing {m}: {_listed(sick)}; every other manager must be healthy "
                f"first. Replaced so far: {', '.join(done) or 'none'}"
            )
        say("replacing", f"manager {m}{' (the leader)' if m == leader else ''}")
        fleet.replace(m)
        _wait_caught_up(fleet, probe, m, step_timeout, interval, done)
        done.append(m)
        say("upgraded", f"manager {m}")
    return done


def _wait_caught_up(
    fleet: Fleet, probe: Probe, m: str, timeout: float, interval: float, done: list[str]
) -> None:
    """Until `m` is healthy and has applied what the leader had committed when `m` first
    answered healthy."""
    deadline = time.monotonic() + timeout
    target: int | None = None
    why = "not checked yet"
    while time.monotonic() < deadline:
        why = probe.health(fleet.url(m))
        if why == "ok":
            if target is None:
                _, target = find_leader(fleet, probe)
            status = probe.status(fleet.url(m))
            if target is None or status is None:
                why = "no leader answers" if target is None else "its /status does not answer"
            elif status["raft"]["last_applied"] >= target:
                return
            else:
                why = f"applied {status['raft']['last_applied']} of {target} entries"
        time.sleep(interval)
    left = [o for o in fleet.members() if o != m]
    raise RollStopped(
        f"manager {m} did not become healthy and caught up within {timeout:g}s (last: {why}); "
        f"stopped there. {', '.join(left)} were not touched by this step and still serve. "
        f"Replaced so far: {', '.join(done) or 'none'}"
    )


def _listed(reasons: dict[str, str]) -> str:
    return "; ".join(
        f"{m} is {why}" if why == "unreachable" else f"{m}: {why}" for m, why in reasons.items()
    )
