"""What one deployment is: its settings, and the names and tags of everything it creates.

Every resource carries the tag `wq-cluster=<name>`; managers' resources also carry
`wq-manager=m<i>`. Names are derived from the deployment name alone, so `up`, `down` and
`status` find the same resources from any machine with the same AWS account.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from node.scaling.backends.ec2 import CLUSTER_TAG
from node.scaling.backends.managers import manager_template

HTTP_PORT = 8000  # public API, open to the client CIDR
INTERNAL_PORT = 8100  # internal routes (peers, workers), open to members only
RAFT_PORT = 7000
# Amazon Linux 2023, resolved at `up` time through AWS's public parameter.
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


class SettingsError(ValueError):
    """A setting outside its allowed values; the message names it and the allowed range."""


@dataclass(frozen=True)
class Deployment:
    name: str = "wq"
    region: str = "us-east-1"
    managers: int = 3
    manager_type: str = "t3.small"
    worker_type: str = "c6i.large"
    client_cidr: str = ""
    min_workers: int = 0
    max_workers: int = 4
    subnet: str = ""  # default: the default VPC's subnet in the first zone
    ami: str = ""  # default: the latest Amazon Linux 2023
    data_volume_gb: int = 20

    def validate(self, *, for_up: bool = False) -> Deployment:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,19}", self.name):
            raise SettingsError(
                "name: 1 to 20 lowercase letters, digits and '-', starting with a letter or digit"
            )
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", self.region):
            raise SettingsError(f"region: {self.region!r} is not a region name like us-east-1")
        if not for_up:
            return self
        if self.managers not in (3, 5, 7):
            raise SettingsError("managers: 3, 5 or 7 (an odd Raft group that survives a failure)")
        if not 0 <= self.min_workers <= self.max_workers <= 1000:
            raise SettingsError("min_workers, max_workers: 0 <= min <= max <= 1000")
        if not self.client_cidr:
            raise SettingsError(
                "client_cidr: required, the addresses allowed to use the public "
                "API, e.g. 203.0.113.7/32"
            )
        try:
            ipaddress.ip_network(self.client_cidr, strict=True)
        except ValueError as e:
            raise SettingsError(f"client_cidr: {e}") from None
        if not 1 <= self.data_volume_gb <= 16384:
            raise SettingsError("data_volume_gb: 1 to 16384 (GiB, gp3's range)")
        for field in ("manager_type", "worker_type"):
            if not re.fullmatch(r"[a-z0-9-]+\.[a-z0-9]+", getattr(self, field)):
                raise SettingsError(f"{field}: an EC2 instance type like t3.small")
        return self

    # Names, all derived from `name` (and the account, for the globally unique bucket).
    @property
    def security_group(self) -> str:
        return f"wq-{self.name}"

    @property
    def manager_role(self) -> str:
        return f"wq-{self.name}-manager"

    @property
    def worker_role(self) -> str:
        return f"wq-{self.name}-worker"

    def bucket(self, account: str) -> str:
        return f"wq-{self.name}-{account}-{self.region}"

    @property
    def secret_parameter(self) -> str:
        return f"/wq/{self.name}/secret"

    @property
    def api_key_parameter(self) -> str:
        return f"/wq/{self.name}/api-key"

    @property
    def ca_key_parameter(self) -> str:
        return f"/wq/{self.name}/ca-key"

    @property
    def ca_cert_parameter(self) -> str:
        return f"/wq/{self.name}/ca-cert"

    def tls_parameters(self, manager: str) -> tuple[str, str]:
        """The manager's certificate (String) and private key (SecureString) parameters."""
        return f"/wq/{self.name}/{manager}/tls-cert", f"/wq/{self.name}/{manager}/tls-key"

    @property
    def settings_parameter(self) -> str:
        """Where `up` keeps the settings it was given, for `upgrade` to apply again."""
        return f"/wq/{self.name}/settings"

    def settings(self) -> dict:
        """The settings `up` was given, other than the name and region that locate them."""
        return {
            k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("name", "region")
        }

    @property
    def alarm_prefix(self) -> str:
        # Dots cannot occur in a name, so one deployment's prefix never matches another's.
        return f"wq.{self.name}."

    def template(self, manager: str) -> str:
        """The manager slot's launch template; the leader finds it by the same name."""
        return manager_template(self.name, manager)

    def alarm(self, manager: str, action: str) -> str:
        return f"{self.alarm_prefix}{manager}.{action}"

    def tags(self, **extra: str) -> list[dict[str, str]]:
        """Tags for a resource of this deployment, in the AWS list form."""
        tags = {CLUSTER_TAG: self.name, **extra}
        return [{"Key": k, "Value": v} for k, v in tags.items()]


def manager_id(i: int) -> str:
    return f"m{i}"
