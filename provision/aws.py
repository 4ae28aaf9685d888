"""Boto3 clients for one deployment, and finders for the resources it owns (by tag or name)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

from node.scaling.backends.ec2 import CLUSTER_TAG, ROLE_TAG
from node.scaling.backends.managers import MANAGER_TAG
from provision.deployment import Deployment

LIVE = ["pending", "running", "stopping", "stopped"]
NOT_TERMINATED = LIVE + ["shutting-down"]


@dataclass
class Clients:
    ec2: Any
    iam: Any
    s3: Any
    ssm: Any
    cloudwatch: Any
    account: str

    @classmethod
    def connect(cls, region: str) -> Clients:
        session = boto3.Session(region_name=region)
        account = session.client("sts").get_caller_identity()["Account"]
        return cls(
            session.client("ec2"),
            session.client("iam"),
            session.client("s3"),
            session.client("ssm"),
            session.client("cloudwatch"),
            account,
        )


def say(verb: str, what: str) -> None:
    """One line of progress on stderr; stdout carries only the results."""
    print(f"{verb:10} {what}", file=sys.stderr, flush=True)


def error_code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


def tags_of(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", resource.get("TagSet", []))}


def _ours(d: Deployment) -> list[dict]:
    return [{"Name": f"tag:{CLUSTER_TAG}", "Values": [d.name]}]


def instances(
    c: Clients, d: Deployment, role: str | None = None, states: list[str] = NOT_TERMINATED
) -> list[dict]:
    filters = _ours(d) + [{"Name": "instance-state-name", "Values": states}]
    if role:
        filters.append({"Name": f"tag:{ROLE_TAG}", "Values": [role]})
    found = []
    for page in c.ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found += reservation["Instances"]
    return found


def managers(c: Clients, d: Deployment, states: list[str] = LIVE) -> dict[str, dict]:
    """The managers' instances in these states, by manager id."""
    return {tags_of(i).get(MANAGER_TAG, ""): i for i in instances(c, d, "manager", states)}


def security_group(c: Clients, d: Deployment) -> dict | None:
    groups = c.ec2.describe_security_groups(
        Filters=_ours(d) + [{"Name": "group-name", "Values": [d.security_group]}]
    )["SecurityGroups"]
    return groups[0] if groups else None


def interfaces(c: Clients, d: Deployment) -> dict[str, dict]:
    """Managers' network interfaces by manager id; their private addresses never change."""
    found = c.ec2.describe_network_interfaces(Filters=_ours(d))["NetworkInterfaces"]
    return {tags_of(i).get(MANAGER_TAG, i["NetworkInterfaceId"]): i for i in found}


def addresses(c: Clients, d: Deployment) -> dict[str, dict]:
    """Managers' Elastic IPs by manager id: their public URLs survive a replacement."""
    found = c.ec2.describe_addresses(Filters=_ours(d))["Addresses"]
    return {tags_of(a).get(MANAGER_TAG, a["AllocationId"]): a for a in found}


def volumes(c: Clients, d: Deployment) -> dict[str, dict]:
    """Managers' data volumes by manager id: each holds its manager's Raft log and store."""
    found = []
    for page in c.ec2.get_paginator("describe_volumes").paginate(
        Filters=_ours(d) + [{"Name": "tag-key", "Values": [MANAGER_TAG]}]
    ):
        found += page["Volumes"]
    return {tags_of(v)[MANAGER_TAG]: v for v in found}


def templates(c: Clients, d: Deployment) -> dict[str, dict]:
    """Managers' launch templates by manager id."""
    found = c.ec2.describe_launch_templates(Filters=_ours(d))["LaunchTemplates"]
    return {tags_of(t).get(MANAGER_TAG, t["LaunchTemplateName"]): t for t in found}


def role(c: Clients, name: str) -> dict | None:
    """The IAM role, or None when there is none."""
    try:
        return c.iam.get_role(RoleName=name)["Role"]
    except c.iam.exceptions.NoSuchEntityException:
        return None


def profile(c: Clients, name: str) -> dict | None:
    """The instance profile (with its roles), or None when there is none."""
    try:
        return c.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except c.iam.exceptions.NoSuchEntityException:
        return None


def bucket_exists(c: Clients, name: str) -> bool:
    try:
        c.s3.head_bucket(Bucket=name)
        return True
    except ClientError as e:
        if error_code(e) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def parameters(c: Clients, d: Deployment) -> dict[str, str]:
    """The deployment's parameters' types by name."""
    found = {}
    for page in c.ssm.get_paginator("describe_parameters").paginate(
        ParameterFilters=[{"Key": "Name", "Option": "BeginsWith", "Values": [f"/wq/{d.name}/"]}]
    ):
        found.update({p["Name"]: p["Type"] for p in page["Parameters"]})
    return found


def parameter(c: Clients, name: str) -> str | None:
    """An SSM parameter's value (decrypted), or None when there is none."""
    try:
        value: str = c.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        return value
    except ClientError as e:
        if error_code(e) != "ParameterNotFound":
            raise
        return None


def put_parameter(
    c: Clients, d: Deployment, name: str, value: str, *, secure: bool, description: str = ""
) -> None:
    """Create or overwrite a parameter (tags only on creation, as SSM requires)."""
    kind = "SecureString" if secure else "String"
    try:
        c.ssm.put_parameter(
            Name=name,
            Type=kind,
            Value=value,
            Tags=d.tags(),
            Description=description or f"work queue {d.name}",
        )
    except ClientError as e:
        if error_code(e) != "ParameterAlreadyExists":
            raise
        c.ssm.put_parameter(Name=name, Type=kind, Value=value, Overwrite=True)


def alarms(c: Clients, d: Deployment) -> list[str]:
    names = []
    for page in c.cloudwatch.get_paginator("describe_alarms").paginate(
        AlarmNamePrefix=d.alarm_prefix
    ):
        names += [a["AlarmName"] for a in page["MetricAlarms"]]
    return names


def free_interface(c: Clients, interface_id: str, timeout: float = 300) -> None:
    """Wait until a manager's interface is available or its instance is terminated (EC2 then
    releases it; the launch that reuses it retries while that is still under way)."""
    deadline = time.monotonic() + timeout
    while True:
        iface = c.ec2.describe_network_interfaces(NetworkInterfaceIds=[interface_id])[
            "NetworkInterfaces"
        ][0]
        attachment = iface.get("Attachment")
        if iface["Status"] == "available" or not attachment:
            return
        owner = c.ec2.describe_instances(InstanceIds=[attachment["InstanceId"]])
        state = owner["Reservations"][0]["Instances"][0]["State"]["Name"]
        if state == "terminated":
            return
        if state != "shutting-down":
            raise SystemExit(
                f"network interface {interface_id} is in use by "
                f"{attachment['InstanceId']} ({state})"
            )
        if time.monotonic() > deadline:
            raise SystemExit(
                f"network interface {interface_id} still attached after {timeout:g}s; "
                "run the command again later"
            )
        time.sleep(2)
