"""`provision down`: delete everything the deployment owns, workers included.

The managers' launch templates go first, so that no leader relaunches a manager being
terminated; then the managers, so that no leader launches a worker while the workers are
being terminated; then whatever instances remain, then what they used, the managers' data
volumes (their jobs) among it. Each step finds its resources again, so running `down` twice,
or after a `down` that was interrupted, is safe.
"""

from __future__ import annotations

import time

from botocore.exceptions import ClientError

from provision import aws
from provision.aws import Clients, error_code, say
from provision.deployment import Deployment

DEPENDENCY_SECONDS = 300


def down(c: Clients, d: Deployment) -> None:
    alarms = aws.alarms(c, d)
    if alarms:
        c.cloudwatch.delete_alarms(AlarmNames=alarms)
        say("deleted", f"{len(alarms)} alarm(s)")
    for m, template in sorted(aws.templates(c, d).items()):
        c.ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])
        say("deleted", f"launch template {template['LaunchTemplateName']} ({m})")
    _terminate(c, d, role="manager")
    _terminate(c, d, role=None)
    for m, volume in sorted(aws.volumes(c, d).items()):
        _retry(lambda v=volume: c.ec2.delete_volume(VolumeId=v["VolumeId"]))
        say("deleted", f"data volume {volume['VolumeId']} ({m})")
    for m, address in aws.addresses(c, d).items():
        if "AssociationId" in address:
            c.ec2.disassociate_address(AssociationId=address["AssociationId"])
        c.ec2.release_address(AllocationId=address["AllocationId"])
        say("released", f"elastic IP {address['PublicIp']} ({m})")
    for m, iface in aws.interfaces(c, d).items():
        aws.free_interface(c, iface["NetworkInterfaceId"])
        _retry(
            lambda i=iface: c.ec2.delete_network_interface(
                NetworkInterfaceId=i["NetworkInterfaceId"]
            )
        )
        say("deleted", f"network interface {iface['NetworkInterfaceId']} ({m})")
    group = aws.security_group(c, d)
    if group is not None:
        _retry(lambda: c.ec2.delete_security_group(GroupId=group["GroupId"]))
        say("deleted", f"security group {group['GroupId']}")
    for name in (d.manager_role, d.worker_role):
        _delete_role(c, name)
    for name in aws.parameters(c, d):
        c.ssm.delete_parameter(Name=name)
        say("deleted", f"parameter {name}")
    bucket = d.bucket(c.account)
    if aws.bucket_exists(c, bucket):
        for page in c.s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            objects = [
                {"Key": o["Key"], "VersionId": o["VersionId"]}
                for o in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if objects:
                c.s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        c.s3.delete_bucket(Bucket=bucket)
        say("deleted", f"bucket {bucket}")


def _terminate(c: Clients, d: Deployment, role: str | None) -> None:
    ids = [i["InstanceId"] for i in aws.instances(c, d, role=role, states=aws.LIVE)]
    if ids:
        c.ec2.terminate_instances(InstanceIds=ids)
        say("terminated", f"{len(ids)} {role or 'remaining'} instance(s): {', '.join(ids)}")
    waiting = [i["InstanceId"] for i in aws.instances(c, d, role=role)]
    if waiting:
        c.ec2.get_waiter("instance_terminated").wait(
            InstanceIds=waiting, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
        )


def _retry(call) -> None:
    """Network interfaces, volumes and groups stay in use for a while after their instance is
    gone."""
    deadline = time.monotonic() + DEPENDENCY_SECONDS
    while True:
        try:
            call()
            return
        except ClientError as e:
            if error_code(e) in (
                "InvalidNetworkInterfaceID.NotFound",
                "InvalidGroup.NotFound",
                "InvalidVolume.NotFound",
            ):
                return
            if (
                error_code(e)
                not in ("DependencyViolation", "InvalidNetworkInterface.InUse", "VolumeInUse")
                or time.monotonic() > deadline
            ):
                raise
            time.sleep(5)


def _delete_role(c: Clients, name: str) -> None:
    profile = aws.profile(c, name)
    if profile is not None:
        for role in profile["Roles"]:
            c.iam.remove_role_from_instance_profile(
                InstanceProfileName=name, RoleName=role["RoleName"]
            )
        c.iam.delete_instance_profile(InstanceProfileName=name)
        say("deleted", f"instance profile {name}")
    if aws.role(c, name) is not None:
        for policy in c.iam.list_role_policies(RoleName=name)["PolicyNames"]:
            c.iam.delete_role_policy(RoleName=name, PolicyName=policy)
        for policy in c.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            c.iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        c.iam.delete_role(RoleName=name)
        say("deleted", f"role {name}")
