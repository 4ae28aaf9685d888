"""IAM policy documents for the managers and the workers, as pure functions.

Least privilege:
- Managers may run instances only when the launch tags them as this deployment's workers or
  managers, only into the deployment's subnet and security group, from its AMIs and (for a
  manager) its launch templates; they may tag only at launch, terminate only instances tagged
  as this deployment's workers, pass only the worker and manager roles, attach only the
  deployment's data volumes to its managers, read only the packages in the deployment's bucket,
  its two secrets and its managers' TLS certificates and keys (never the CA's key). Three EC2
  describe actions are the only ones on `*`: they do not support resource-level permissions.
- Workers may read the cluster secret and nothing else (the package reaches them through a
  short-lived presigned URL that the manager puts in their user data).
No statement uses a wildcard action.
"""

from __future__ import annotations

from node.scaling.backends.ec2 import CLUSTER_TAG, ROLE_TAG
from node.scaling.backends.managers import MANAGER_TAG
from provision.package import PACKAGE_PREFIX

EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def manager_policy(
    *,
    name: str,
    region: str,
    account: str,
    subnet: str,
    security_group: str,
    images: list[str],
    worker_role_arn: str,
    manager_role_arn: str,
    bucket: str,
    parameters: list[str],
) -> dict:
    """`images`: the AMIs the deployment's managers run (workers are launched from the same).
    The bucket holds only this deployment's packages; a manager may read any of them, so one
    provisioned from an older checkout still hands its own package to its workers."""
    ec2 = f"arn:aws:ec2:{region}:{account}"
    is_our_worker = {
        f"ec2:ResourceTag/{CLUSTER_TAG}": name,
        f"ec2:ResourceTag/{ROLE_TAG}": "worker",
    }
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "LaunchTaggedWorkers",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": f"{ec2}:instance/*",
                "Condition": {
                    "StringEquals": {
                        f"aws:RequestTag/{CLUSTER_TAG}": name,
                        f"aws:RequestTag/{ROLE_TAG}": "worker",
                    }
                },
            },
            {
                "Sid": "RelaunchTaggedManagers",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": f"{ec2}:instance/*",
                "Condition": {
                    "StringEquals": {
                        f"aws:RequestTag/{CLUSTER_TAG}": name,
                        f"aws:RequestTag/{ROLE_TAG}": "manager",
                    }
                },
            },
            {
                "Sid": "FromOurLaunchTemplates",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": f"{ec2}:launch-template/*",
                "Condition": {"StringEquals": {f"ec2:ResourceTag/{CLUSTER_TAG}": name}},
            },
            {
                "Sid": "LaunchIntoOurNetworkFromOurImage",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [
                    f"{ec2}:subnet/{subnet}",
                    f"{ec2}:security-group/{security_group}",
                    f"{ec2}:network-interface/*",
                    f"{ec2}:volume/*",
                    *[f"arn:aws:ec2:{region}::image/{ami}" for ami in images],
                ],
            },
            {
                "Sid": "TagOnlyAtLaunch",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"{ec2}:instance/*",
                "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            },
            {
                "Sid": "TerminateOurWorkersAndReadTheirConsole",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:GetConsoleOutput"],
                "Resource": f"{ec2}:instance/*",
                "Condition": {"StringEquals": is_our_worker},
            },
            {
                "Sid": "AttachOurDataVolumesToOurManagers",
                "Effect": "Allow",
                "Action": "ec2:AttachVolume",
                "Resource": [f"{ec2}:volume/*", f"{ec2}:instance/*"],
                "Condition": {
                    "StringEquals": {f"ec2:ResourceTag/{CLUSTER_TAG}": name},
                    "Null": {f"ec2:ResourceTag/{MANAGER_TAG}": "false"},
                },
            },
            {
                "Sid": "FindInstancesInterfacesVolumes",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVolumes",
                ],
                "Resource": "*",
            },
            {
                "Sid": "PassWorkerAndManagerRoles",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": [worker_role_arn, manager_role_arn],
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            {
                "Sid": "ReadPackages",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/{PACKAGE_PREFIX}*",
            },
            {
                "Sid": "ReadSecrets",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": [parameter_arn(region, account, p) for p in parameters],
            },
        ],
    }


def worker_policy(*, region: str, account: str, secret_parameter: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadClusterSecret",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": parameter_arn(region, account, secret_parameter),
            },
        ],
    }


def parameter_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"
