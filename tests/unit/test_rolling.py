"""The rolling replacement's order and stopping rules, over a scripted fleet: members answer
health and status as the script says (no HTTP), the roll logic is the real one."""

import pytest

from provision.rolling import Probe, RollStopped, roll


class Fleet:
    def __init__(self, leader: str, moves: dict[str, str] | None = None, dead=()):
        self.leader = leader
        self.moves = moves or {}  # replacing this member moves leadership to that one
        self.dead = set(dead)  # members whose replacement never comes up
        self.down: set[str] = set()
        self.replaced: list[str] = []

    def members(self):
        return ["a", "b", "c"]

    def url(self, member):
        return member

    def current(self, member):
        return member in self.replaced

    def replace(self, member):
        self.replaced.append(member)
        self.leader = self.moves.get(member, self.leader)
        if member in self.dead:
            self.down.add(member)


class ScriptedProbe(Probe):
    def __init__(self, fleet: Fleet):
        super().__init__()
        self.fleet = fleet

    def health(self, url):
        return "unreachable" if url in self.fleet.down else "ok"

    def status(self, url):
        if url in self.fleet.down:
            return None
        role = "leader" if url == self.fleet.leader else "follower"
        return {"role": role, "raft": {"commit_index": 10, "last_applied": 10}}


@pytest.mark.parametrize(
    "leader, moves, down, expected",
    [
        ("a", {}, (), ["b", "c", "a"]),
        ("b", {}, (), ["a", "c", "b"]),
        # Leadership moved to c while b was replaced: a goes before c.
        ("a", {"b": "c"}, (), ["b", "a", "c"]),
        # A member that is down goes first, even the one that was leading.
        ("a", {"c": "b"}, ("c",), ["c", "a", "b"]),
    ],
)
def test_followers_first_the_leader_last_a_member_that_is_down_before_all(
    leader, moves, down, expected
):
    fleet = Fleet(leader, moves)
    fleet.down = set(down)
    for m in down:  # replacing it brings it back
        fleet.moves.setdefault(m, fleet.leader)
    original_replace = fleet.replace

    def replace(member):
        original_replace(member)
        fleet.down.discard(member)

    fleet.replace = replace
    assert roll(fleet, ScriptedProbe(fleet), step_timeout=1, say=lambda *a: None) == expected
    assert roll(fleet, ScriptedProbe(fleet), step_timeout=1, say=lambda *a: None) == []


def test_a_step_that_does_not_come_back_stops_the_roll():
    fleet = Fleet("a", dead=["b"])
    with pytest.raises(RollStopped, match=r"manager b did not become healthy .* within 0.2s"):
        roll(fleet, ScriptedProbe(fleet), step_timeout=0.2, say=lambda *a: None, interval=0.05)
    assert fleet.replaced == ["b"]
