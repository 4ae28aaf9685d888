"""`provision upgrade`: move a running deployment onto this checkout's package, one manager at a
time.

It applies the settings of the last `up` again with this checkout's package (`up`: the
launch templates get a new default version when their contents change; running managers are
left alone), then rolls the managers onto the templates (`rolling.roll`): each manager not
launched from its template's default version is terminated (its node hands over leadership
as systemd stops it) and launched again from the template onto its interface, attaching its
data volume at boot, and the roll waits until it is healthy and caught up before the next.
Workers launched afterwards get the new package from the new managers' configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from provision import aws
from provision.aws import Clients, say
from provision.deployment import HTTP_PORT, Deployment
from provision.package import ROOT
from provision.rolling import Probe, roll
from provision.status import tls_context
from provision.up import ensure_recovery_alarms, load_settings, start_manager, up

# A manager's boot installs Python and builds the package: minutes.
STEP_TIMEOUT = 1200.0


class EC2Fleet:
    """A deployment's managers, for `rolling.roll`."""

    def __init__(self, c: Clients, d: Deployment, urls: Callable[[str], str] | None = None):
        """`urls`: where each manager answers; by default its Elastic IP's public URL."""
        self.c, self.d = c, d
        self.interfaces = aws.interfaces(c, d)
        addresses = aws.addresses(c, d)
        self._url = urls or (lambda m: f"https://{addresses[m]['PublicIp']}:{HTTP_PORT}")

    def members(self) -> list[str]:
        return sorted(m for m in self.interfaces if m.startswith("m"))

    def url(self, member: str) -> str:
        return self._url(member)

    def instance(self, member: str) -> dict | None:
        return aws.managers(self.c, self.d).get(member)

    def current(self, member: str) -> bool:
        """Launched from its template's default version (EC2 tags instances with it)."""
        instance = self.instance(member)
        if instance is None:
            return False
        template = aws.templates(self.c, self.d)[member]
        tags = aws.tags_of(instance)
        return tags.get("aws:ec2launchtemplate:id") == template["LaunchTemplateId"] and tags.get(
            "aws:ec2launchtemplate:version"
        ) == str(template["DefaultVersionNumber"])

    def replace(self, member: str) -> None:
        old = self.instance(member)
        if old is not None:
            self.c.ec2.terminate_instances(InstanceIds=[old["InstanceId"]])
            say("terminated", f"manager {member} instance {old['InstanceId']}")
            self.c.ec2.get_waiter("instance_terminated").wait(
                InstanceIds=[old["InstanceId"]], WaiterConfig={"Delay": 5, "MaxAttempts": 120}
            )
        new = start_manager(self.c, self.d, member, self.interfaces[member])
        ensure_recovery_alarms(self.c, self.d, member, new["InstanceId"])


def upgrade(
    c: Clients,
    d: Deployment,
    *,
    step_timeout: float = STEP_TIMEOUT,
    source: Path = ROOT,
    urls: Callable[[str], str] | None = None,
) -> list[str]:
    """The managers replaced, in order; raises `rolling.RollStopped` when a step fails."""
    d = load_settings(c, d)
    up(c, d, source)
    api_key = aws.parameter(c, d.api_key_parameter)
    if api_key is None:  # `up` has just made it
        raise SystemExit(f"no parameter {d.api_key_parameter}")
    return roll(
        EC2Fleet(c, d, urls),
        Probe(headers={"X-API-Key": api_key}, context=tls_context(c, d)),
        step_timeout=step_timeout,
        say=say,
        interval=5.0,
    )
