"""`provision up`: create what a deployment lacks, in dependency order; find the rest.

Each step first looks for its resource (by the deployment's tag or derived name) and creates
it only when missing, so running `up` again creates nothing twice and repairs what is gone:
a terminated manager is launched again from its launch template onto its own network
interface (the same private address, therefore the same Raft identity) and its own data
volume (its Raft log and store). A template whose contents changed (another package, image
or instance type) gets a new default version, used by managers launched from then on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import tempfile
import time
from pathlib import Path

from botocore.exceptions import ClientError

from node.scaling.backends.ec2 import ROLE_TAG
from node.scaling.backends.managers import MANAGER_TAG, launch_manager
from node.scaling.backends.userdata import manager_script
from provision import aws, policies
from provision.aws import Clients, error_code, say
from provision.ca import Pem, issue, needs_new, new_ca
from provision.deployment import (
    AMI_PARAMETER,
    HTTP_PORT,
    INTERNAL_PORT,
    RAFT_PORT,
    Deployment,
    manager_id,
)
from provision.package import ROOT, Package, build_sdist

SETTLE_SECONDS = 120


def up(c: Clients, d: Deployment, source: Path = ROOT) -> dict[str, dict]:
    """Bring the deployment to its full shape, with the package packed from `source`; returns
    the managers' interfaces by id. Running managers are left as they are."""
    subnet = find_subnet(c, d)
    group = ensure_security_group(c, d, subnet["VpcId"])
    ensure_parameters(c, d)
    ensure_settings(c, d)
    with tempfile.TemporaryDirectory(prefix="wq-package-") as tmp:
        package = ensure_package(c, d, build_sdist(Path(tmp), source))
    ami, images = choose_image(c, d)
    ensure_roles(c, d, subnet=subnet["SubnetId"], group=group, images=images)
    ifaces = ensure_interfaces(c, d, subnet["SubnetId"], group)
    addresses = ensure_addresses(c, d, ifaces)
    fingerprints = ensure_certificates(c, d, ifaces, addresses)
    volumes = ensure_volumes(c, d, subnet["AvailabilityZone"])
    ensure_templates(
        c,
        d,
        {
            m: template_data(
                c,
                d,
                m,
                ifaces,
                volumes[m]["VolumeId"],
                fingerprints[m],
                subnet=subnet["SubnetId"],
                group=group,
                ami=ami,
                package=package,
            )
            for m in ifaces
        },
    )
    ensure_managers(c, d, ifaces)
    return ifaces


def choose_image(c: Clients, d: Deployment) -> tuple[str, list[str]]:
    """The AMI for new instances, and every AMI the deployment's managers run.

    A deployment keeps the image its managers were first launched from (unless --ami names
    another), so a later `up` does not move it to a newer Amazon Linux under running managers
    that launch their workers from the old one."""
    running = sorted({i["ImageId"] for i in aws.instances(c, d, role="manager")})
    ami = d.ami or (
        running[0] if running else c.ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    )
    return ami, sorted(set(running) | {ami})


def find_subnet(c: Clients, d: Deployment) -> dict:
    if d.subnet:
        return c.ec2.describe_subnets(SubnetIds=[d.subnet])["Subnets"][0]
    vpcs = c.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise SystemExit(
            f"no default VPC in {d.region}: pass --subnet with a subnet whose "
            "instances get public addresses"
        )
    subnets = c.ec2.describe_subnets(
        Filters=[
            {"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]
    )["Subnets"]
    if not subnets:
        raise SystemExit(f"the default VPC in {d.region} has no default subnet: pass --subnet")
    return min(subnets, key=lambda s: s["AvailabilityZone"])


def ensure_security_group(c: Clients, d: Deployment, vpc: str) -> str:
    """Public API port from the client CIDR only; internal routes and Raft only between members
    of the group (managers and workers)."""
    found = aws.security_group(c, d)
    if found is None:
        group = c.ec2.create_security_group(
            GroupName=d.security_group,
            VpcId=vpc,
            Description=f"work queue {d.name}: managers and workers",
            TagSpecifications=[
                {"ResourceType": "security-group", "Tags": d.tags(Name=d.security_group)}
            ],
        )["GroupId"]
        say("created", f"security group {group}")
        current = []
    else:
        group = found["GroupId"]
        current = found["IpPermissions"]
        say("found", f"security group {group}")
    wanted = [
        {
            "IpProtocol": "tcp",
            "FromPort": HTTP_PORT,
            "ToPort": HTTP_PORT,
            **(
                {"Ipv6Ranges": [{"CidrIpv6": d.client_cidr, "Description": "clients"}]}
                if ":" in d.client_cidr
                else {"IpRanges": [{"CidrIp": d.client_cidr, "Description": "clients"}]}
            ),
        },
        {
            "IpProtocol": "tcp",
            "FromPort": INTERNAL_PORT,
            "ToPort": INTERNAL_PORT,
            "UserIdGroupPairs": [{"GroupId": group, "Description": "managers and workers"}],
        },
        {
            "IpProtocol": "tcp",
            "FromPort": RAFT_PORT,
            "ToPort": RAFT_PORT,
            "UserIdGroupPairs": [{"GroupId": group, "Description": "Raft between managers"}],
        },
    ]
    have, want = _by_source(current), _by_source(wanted)
    if have.keys() - want.keys():  # e.g. the client CIDR changed since the last `up`
        c.ec2.revoke_security_group_ingress(
            GroupId=group, IpPermissions=[have[k] for k in have.keys() - want.keys()]
        )
        say("revoked", f"{len(have.keys() - want.keys())} ingress rule(s) of {group}")
    if want.keys() - have.keys():
        c.ec2.authorize_security_group_ingress(
            GroupId=group, IpPermissions=[want[k] for k in want.keys() - have.keys()]
        )
        say("created", f"{len(want.keys() - have.keys())} ingress rule(s) of {group}")
    return group


_SOURCES = (
    ("IpRanges", "CidrIp"),
    ("Ipv6Ranges", "CidrIpv6"),
    ("UserIdGroupPairs", "GroupId"),
    ("PrefixListIds", "PrefixListId"),
)


def _by_source(permissions: list[dict]) -> dict[tuple, dict]:
    """Ingress permissions split into one per source, keyed by (protocol, ports, source)."""
    out = {}
    for p in permissions:
        ports = {k: p[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in p}
        for inner, name in _SOURCES:
            for entry in p.get(inner, []):
                key = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), entry[name])
                source = {k: v for k, v in entry.items() if k in (name, "Description")}
                out[key] = {**ports, inner: [source]}
    return out


def ensure_parameters(c: Clients, d: Deployment) -> None:
    """The cluster secret and the public API key, generated here, kept only in SSM."""
    for name in (d.secret_parameter, d.api_key_parameter):
        try:
            c.ssm.put_parameter(
                Name=name,
                Type="SecureString",
                Value=secrets.token_urlsafe(32),
                Overwrite=False,
                Tags=d.tags(),
                Description=f"work queue {d.name}",
            )
            say("created", f"parameter {name}")
        except ClientError as e:
            if error_code(e) != "ParameterAlreadyExists":
                raise
            say("found", f"parameter {name}")


def ensure_settings(c: Clients, d: Deployment) -> None:
    """The settings of this `up`, kept as a parameter: `upgrade` applies the same again."""
    value = json.dumps(d.settings(), sort_keys=True)
    found = aws.parameter(c, d.settings_parameter)
    if found == value:
        say("found", f"parameter {d.settings_parameter}")
        return
    aws.put_parameter(
        c,
        d,
        d.settings_parameter,
        value,
        secure=False,
        description=f"work queue {d.name}: the settings of the last provision up",
    )
    say("created" if found is None else "updated", f"parameter {d.settings_parameter}")


def load_settings(c: Clients, d: Deployment) -> Deployment:
    """The deployment as the last `up` set it up."""
    found = aws.parameter(c, d.settings_parameter)
    if found is None:
        raise SystemExit(
            f"deployment {d.name} in {d.region} has no settings parameter "
            f"{d.settings_parameter}: run `provision up` first"
        )
    return Deployment(name=d.name, region=d.region, **json.loads(found)).validate(for_up=True)


def ensure_package(c: Clients, d: Deployment, package: Package) -> Package:
    bucket = d.bucket(c.account)
    if aws.bucket_exists(c, bucket):
        say("found", f"bucket {bucket}")
    else:
        args = (
            {}
            if d.region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": d.region}}
        )
        c.s3.create_bucket(Bucket=bucket, **args)
        c.s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        c.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": d.tags()})
        say("created", f"bucket {bucket}")
    try:
        c.s3.head_object(Bucket=bucket, Key=package.key)
        say("found", f"package s3://{bucket}/{package.key}")
    except ClientError as e:
        if error_code(e) not in ("404", "NoSuchKey", "NotFound"):
            raise
        c.s3.upload_file(str(package.path), bucket, package.key)
        say("uploaded", f"package s3://{bucket}/{package.key}")
    return package


def ensure_roles(c: Clients, d: Deployment, *, subnet: str, group: str, images: list[str]) -> None:
    worker_arn = _ensure_role(
        c,
        d,
        d.worker_role,
        "worker",
        policies.worker_policy(
            region=d.region, account=c.account, secret_parameter=d.secret_parameter
        ),
    )
    _ensure_role(
        c,
        d,
        d.manager_role,
        "manager",
        policies.manager_policy(
            name=d.name,
            region=d.region,
            account=c.account,
            subnet=subnet,
            security_group=group,
            images=images,
            worker_role_arn=worker_arn,
            manager_role_arn=f"arn:aws:iam::{c.account}:role/{d.manager_role}",
            bucket=d.bucket(c.account),
            parameters=[
                d.secret_parameter,
                d.api_key_parameter,
                *[p for i in range(d.managers) for p in d.tls_parameters(manager_id(i))],
            ],
        ),
    )


def _ensure_role(c: Clients, d: Deployment, name: str, role: str, policy: dict) -> str:
    found = aws.role(c, name)
    if found is not None:
        arn = found["Arn"]
        say("found", f"role {name}")
    else:
        arn = c.iam.create_role(
            RoleName=name,
            Tags=d.tags(**{ROLE_TAG: role}),
            AssumeRolePolicyDocument=json.dumps(policies.EC2_TRUST),
            Description=f"work queue {d.name}: {role} instances",
        )["Role"]["Arn"]
        say("created", f"role {name}")
    # Written every time: the policy names the current subnet, group and images.
    c.iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    if aws.profile(c, name) is None:
        c.iam.create_instance_profile(InstanceProfileName=name, Tags=d.tags(**{ROLE_TAG: role}))
        c.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        say("created", f"instance profile {name}")
    return arn


def ensure_interfaces(c: Clients, d: Deployment, subnet: str, group: str) -> dict[str, dict]:
    """One network interface per manager: its private address is the manager's identity."""
    found = aws.interfaces(c, d)
    existing = sorted(k for k in found if k.startswith("m"))
    if existing and len(existing) != d.managers:
        raise SystemExit(
            f"deployment {d.name} has {len(existing)} managers; changing the count "
            "is not supported (the Raft group is fixed): use --managers "
            f"{len(existing)}"
        )
    for i in range(d.managers):
        m = manager_id(i)
        if m in found:
            say(
                "found",
                f"network interface {found[m]['NetworkInterfaceId']} ({m}, "
                f"{found[m]['PrivateIpAddress']})",
            )
            continue
        iface = c.ec2.create_network_interface(
            SubnetId=subnet,
            Groups=[group],
            Description=f"work queue {d.name} manager {m}",
            TagSpecifications=[
                {
                    "ResourceType": "network-interface",
                    "Tags": d.tags(**{MANAGER_TAG: m, "Name": f"wq-{d.name}-{m}"}),
                }
            ],
        )["NetworkInterface"]
        found[m] = iface
        say(
            "created",
            f"network interface {iface['NetworkInterfaceId']} ({m}, {iface['PrivateIpAddress']})",
        )
    return {manager_id(i): found[manager_id(i)] for i in range(d.managers)}


def ensure_addresses(c: Clients, d: Deployment, ifaces: dict[str, dict]) -> dict[str, str]:
    """An Elastic IP per manager, so its public URL stays the same across replacements; the
    public addresses by manager."""
    public = {}
    found = aws.addresses(c, d)
    for m, iface in ifaces.items():
        address = found.get(m)
        if address is None:
            address = c.ec2.allocate_address(
                Domain="vpc",
                TagSpecifications=[
                    {
                        "ResourceType": "elastic-ip",
                        "Tags": d.tags(**{MANAGER_TAG: m, "Name": f"wq-{d.name}-{m}"}),
                    }
                ],
            )
            say("created", f"elastic IP {address['PublicIp']} ({m})")
        else:
            say("found", f"elastic IP {address['PublicIp']} ({m})")
        public[m] = address["PublicIp"]
        if address.get("NetworkInterfaceId") != iface["NetworkInterfaceId"]:
            c.ec2.associate_address(
                AllocationId=address["AllocationId"], NetworkInterfaceId=iface["NetworkInterfaceId"]
            )
            say("attached", f"elastic IP {address['PublicIp']} to {m}")
    return public


def ensure_certificates(
    c: Clients, d: Deployment, ifaces: dict[str, dict], public: dict[str, str]
) -> dict[str, str]:
    """The deployment's CA (its key only in a SecureString) and a certificate per manager for
    its public and private addresses, issued again when it would expire within 30 days or its
    addresses changed. Returns each certificate's SHA-256, by manager."""
    cert, key = aws.parameter(c, d.ca_cert_parameter), aws.parameter(c, d.ca_key_parameter)
    if cert is not None and key is not None:
        ca = Pem(cert, key)
        say("found", f"certificate authority {d.ca_cert_parameter}")
    else:
        ca = new_ca(d.name)
        aws.put_parameter(c, d, d.ca_key_parameter, ca.key, secure=True)
        aws.put_parameter(c, d, d.ca_cert_parameter, ca.cert, secure=False)
        say("created", f"certificate authority {d.ca_cert_parameter}")
    fingerprints = {}
    for m, iface in ifaces.items():
        names = [public[m], iface["PrivateIpAddress"]]
        cert_parameter, key_parameter = d.tls_parameters(m)
        cert = aws.parameter(c, cert_parameter)
        why = "none yet" if cert is None else needs_new(cert, ca.cert, names)
        if cert is not None and why is None:
            say("found", f"certificate of {m} ({', '.join(names)})")
        else:
            issued = issue(ca, f"work queue {d.name} manager {m}", names)
            aws.put_parameter(c, d, key_parameter, issued.key, secure=True)
            aws.put_parameter(c, d, cert_parameter, issued.cert, secure=False)
            cert = issued.cert
            say("issued", f"certificate of {m} ({', '.join(names)}): {why}")
        fingerprints[m] = "sha256:" + hashlib.sha256(cert.encode()).hexdigest()
    return fingerprints


def ensure_volumes(c: Clients, d: Deployment, zone: str) -> dict[str, dict]:
    """One data volume per manager, in the subnet's zone: the node's data directory, kept
    across replacements of its instance, so a relaunched manager keeps its Raft log."""
    found = aws.volumes(c, d)
    for i in range(d.managers):
        m = manager_id(i)
        if m in found:
            v = found[m]
            say("found", f"data volume {v['VolumeId']} ({m}, {v['Size']} GiB)")
            continue
        found[m] = c.ec2.create_volume(
            AvailabilityZone=zone,
            Size=d.data_volume_gb,
            VolumeType="gp3",
            Encrypted=True,
            TagSpecifications=[
                {
                    "ResourceType": "volume",
                    "Tags": d.tags(**{MANAGER_TAG: m, "Name": f"wq-{d.name}-{m}-data"}),
                }
            ],
        )
        say("created", f"data volume {found[m]['VolumeId']} ({m}, {d.data_volume_gb} GiB)")
    return {manager_id(i): found[manager_id(i)] for i in range(d.managers)}


def node_env(
    d: Deployment,
    m: str,
    ifaces: dict[str, dict],
    *,
    subnet: str,
    group: str,
    ami: str,
    package: Package,
    account: str,
) -> dict[str, str]:
    ip = ifaces[m]["PrivateIpAddress"]
    peers = ",".join(
        f"{i['PrivateIpAddress']}:{RAFT_PORT}=http://{i['PrivateIpAddress']}:{INTERNAL_PORT}"
        for other, i in ifaces.items()
        if other != m
    )
    return {
        "WQ_NODE_ID": m,
        "WQ_RAFT": f"{ip}:{RAFT_PORT}",
        "WQ_HTTP": f"0.0.0.0:{HTTP_PORT}",
        "WQ_INTERNAL_HTTP": f"{ip}:{INTERNAL_PORT}",
        "WQ_TLS_CERT": "$WQ_ROOT/tls.pem",
        "WQ_TLS_KEY": "$WQ_ROOT/tls.key",
        "WQ_URL": f"http://{ip}:{INTERNAL_PORT}",
        "WQ_PEERS": peers,
        "WQ_DATA_DIR": "$WQ_ROOT/data",
        # On the data volume: the log outlives the instance.
        "WQ_LOG_FILE": "$WQ_ROOT/data/logs/node.log",
        "WQ_SECRET_FILE": "$WQ_ROOT/secret",
        "WQ_API_KEY_FILE": "$WQ_ROOT/api-key",
        "WQ_BACKEND": "ec2",
        "WQ_CLUSTER_NAME": d.name,
        "WQ_EC2_RELAUNCH_MANAGERS": "on",
        "WQ_MIN_WORKERS": str(d.min_workers),
        "WQ_MAX_WORKERS": str(d.max_workers),
        "WQ_EC2_REGION": d.region,
        "WQ_EC2_AMI": ami,
        "WQ_EC2_INSTANCE_TYPE": d.worker_type,
        "WQ_EC2_INSTANCE_PROFILE": d.worker_role,
        "WQ_EC2_SUBNET": subnet,
        "WQ_EC2_SECURITY_GROUPS": group,
        "WQ_EC2_PACKAGE": package_url(d, account, package),
        "WQ_EC2_SECRET_PARAMETER": d.secret_parameter,
    }


def package_url(d: Deployment, account: str, package: Package) -> str:
    return f"s3://{d.bucket(account)}/{package.key}"


def template_data(
    c: Clients,
    d: Deployment,
    m: str,
    ifaces: dict[str, dict],
    volume: str,
    fingerprint: str,
    *,
    subnet: str,
    group: str,
    ami: str,
    package: Package,
) -> dict:
    """What every instance of manager `m` is launched with; its interface and tags are given
    at launch (`launch_manager`)."""
    script = manager_script(
        package=package_url(d, c.account, package),
        region=d.region,
        secret_parameter=d.secret_parameter,
        api_key_parameter=d.api_key_parameter,
        tls_parameters=d.tls_parameters(m),
        tls_fingerprint=fingerprint,
        volume=volume,
        node_env=node_env(
            d, m, ifaces, subnet=subnet, group=group, ami=ami, package=package, account=c.account
        ),
    )
    return {
        "ImageId": ami,
        "InstanceType": d.manager_type,
        "IamInstanceProfile": {"Name": d.manager_role},
        "MetadataOptions": {"HttpTokens": "required"},
        "UserData": base64.b64encode(script.encode()).decode(),
    }


def ensure_templates(c: Clients, d: Deployment, wanted: dict[str, dict]) -> dict[str, bool]:
    """Each manager's launch template holding `wanted[m]`; a template that differs gets a new
    default version. Returns, by manager, whether its template changed."""
    found = aws.templates(c, d)
    changed = {}
    for m, data in wanted.items():
        name = d.template(m)
        if m not in found:
            c.ec2.create_launch_template(
                LaunchTemplateName=name,
                LaunchTemplateData=data,
                TagSpecifications=[
                    {"ResourceType": "launch-template", "Tags": d.tags(**{MANAGER_TAG: m})}
                ],
            )
            say("created", f"launch template {name}")
            changed[m] = True
            continue
        (current,) = c.ec2.describe_launch_template_versions(
            LaunchTemplateName=name, Versions=["$Default"]
        )["LaunchTemplateVersions"]
        if _same_template(current["LaunchTemplateData"], data):
            say("found", f"launch template {name} (version {current['VersionNumber']})")
            changed[m] = False
            continue
        version = c.ec2.create_launch_template_version(
            LaunchTemplateName=name, LaunchTemplateData=data
        )["LaunchTemplateVersion"]["VersionNumber"]
        c.ec2.modify_launch_template(LaunchTemplateName=name, DefaultVersion=str(version))
        say("updated", f"launch template {name} (version {version})")
        changed[m] = True
    return changed


def _same_template(current: object, wanted: object) -> bool:
    """Whether `current` holds every value of `wanted` (EC2 may add defaults of its own)."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(
            _same_template(current.get(k), v) for k, v in wanted.items()
        )
    return current == wanted


def ensure_managers(c: Clients, d: Deployment, ifaces: dict[str, dict]) -> None:
    present = aws.managers(c, d)
    for m in ifaces:
        instance = present.get(m)
        if instance is not None:
            say(
                "found",
                f"manager {m} instance {instance['InstanceId']} ({instance['State']['Name']})",
            )
        else:
            instance = start_manager(c, d, m, ifaces[m])
        ensure_recovery_alarms(c, d, m, instance["InstanceId"])


def start_manager(c: Clients, d: Deployment, m: str, iface: dict) -> dict:
    # The interface of a manager being terminated stays attached until it is gone.
    aws.free_interface(c, iface["NetworkInterfaceId"])
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            instance = launch_manager(c.ec2, d.name, m, iface["NetworkInterfaceId"])
            break
        except ClientError as e:
            # A new instance profile takes a few seconds to become usable by EC2, and the
            # interface of a just-terminated manager a few seconds to be released. The leader
            # may have relaunched the manager meanwhile: then it is found.
            relaunched = aws.managers(c, d).get(m)
            if relaunched is not None:
                say("found", f"manager {m} instance {relaunched['InstanceId']} (relaunched)")
                return relaunched
            settling = error_code(e) == "InvalidNetworkInterface.InUse" or (
                error_code(e) == "InvalidParameterValue" and "profile" in str(e).lower()
            )
            if not settling or time.monotonic() > deadline:
                raise
            time.sleep(5)
    say("launched", f"manager {m} instance {instance['InstanceId']} at {iface['PrivateIpAddress']}")
    return instance


def ensure_recovery_alarms(c: Clients, d: Deployment, m: str, instance_id: str) -> None:
    """Hardware failure: EC2 recovers the instance (same id, addresses, disk). A hung OS: reboot."""
    for action, metric in (
        ("recover", "StatusCheckFailed_System"),
        ("reboot", "StatusCheckFailed_Instance"),
    ):
        c.cloudwatch.put_metric_alarm(
            AlarmName=d.alarm(m, action),
            Namespace="AWS/EC2",
            MetricName=metric,
            Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
            Statistic="Maximum",
            Period=60,
            EvaluationPeriods=2,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            AlarmActions=[f"arn:aws:automate:{d.region}:ec2:{action}"],
            AlarmDescription=f"work queue {d.name}: {action} manager {m}",
            Tags=d.tags(),
        )
